"""Match: score record pairs, take the prior and the threshold from the data, cluster by weight, queue doubts.

One run of :func:`match_records`:

1. **Pairs.** Every blocked pair that could link is scored with the saved model; on later nights only
   pairs with a new or changed record are, and last night's others are kept.
2. **Calibration.** The share of pairs that match (the prior) is estimated from this run's pairs, and
   the link threshold is the probability maximising the expected pair F1 (:mod:`match_calibration`).
3. **Pieces.** Pairs above the threshold, steward ``same`` decisions and the user's deterministic rules
   join records into pieces (:func:`cluster.pieces`); every record pair inside a piece is scored, so
   clusters are judged by all their pairs, not by the links that chained them.
4. **Clusters.** Records merge best first while the mean weight of their pairs favours it; steward
   ``different`` decisions never end in one cluster (:func:`cluster.agglomerate`).
5. **Review.** The doubtful merges made or left undone, ranked by doubt x records affected, up to the
   review budget (:mod:`review`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from cmdm_pipeline.config import MatchingConfig
from cmdm_pipeline.progress import step
from cmdm_pipeline.stages.cluster import CANNOT_LINK, MUST_LINK, agglomerate, nearest_other, pieces
from cmdm_pipeline.stages.decisions import decided_edges, record_key
from cmdm_pipeline.stages.match_calibration import Threshold, candidate_pairs, link_threshold, match_rate, probabilities
from cmdm_pipeline.stages.match_model import MODEL_VERSION_KEY, bounded_scoring, score_groups, score_new_pairs, score_pairs
from cmdm_pipeline.stages.review import Queue, review_queue, review_reason

KEY = ["source_system", "source_record_id"]
PAIR_KEY = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
#: A value of a deterministic rule shared by more records than this (a shop's placeholder e-mail, a
#: test account) is not one customer's and links nothing.
MAX_RULE_GROUP = 25


#: Scored pairs are keyed and stored this many at a time: with their four key strings a stored pair takes
#: several times the memory of a scored one.
STORED_PART_PAIRS = 1_000_000


@dataclass(frozen=True)
class MatchResult:
    pair_parts: Callable[[], Iterator[pl.DataFrame]]  # match_pairs in parts: keys, match_weight, evidence,
    # match_probability, blocked, comparison_levels
    pair_count: int
    clusters: pl.DataFrame  # unique_id, cluster (a record position), link_confidence
    queue: Queue  # the review queue, keys and records filled in
    threshold: Threshold
    prior: float  # the share of candidate pairs that match
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> pl.DataFrame:
        """match_pairs whole (small runs and tests; the asset writes :attr:`pair_parts` one at a time)."""
        return pl.concat(self.pair_parts())


def record_hashes(frame: pl.DataFrame) -> pl.DataFrame:
    """Key and a hash of every matching feature: a record whose hash changed is scored again."""
    return frame.select(*KEY, pl.struct(pl.exclude("unique_id", *KEY)).hash(seed=0).alias("record_hash"))


def _levels(gammas: list[str]) -> pl.Expr:
    """The comparison levels of a pair as one struct: BI tools filter on a level directly."""
    return (pl.struct(pl.col(g).cast(pl.Int8).alias(g.removeprefix("gamma_")) for g in gammas)
            if gammas else pl.lit(None, pl.Struct({})))


def _keyed(pairs: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """``pairs`` (node_l, node_r, ...) with both records' keys, the smaller key on the left (as decisions
    are), and ``key_l``, ``key_r`` to sort by. ``ids``: row i is record i (``unique_id`` = row position)."""
    # Taken by position, not joined: a join hashes every record for each part of the pairs.
    keys = ids.select(KEY)
    joined = pl.concat([
        pairs,
        keys.gather(pairs["node_l"]).rename({"source_system": "a_system", "source_record_id": "a_id"}),
        keys.gather(pairs["node_r"]).rename({"source_system": "b_system", "source_record_id": "b_id"}),
    ], how="horizontal")
    a, b = record_key("a_system", "a_id"), record_key("b_system", "b_id")
    a_first = a <= b
    return joined.with_columns(
        pl.when(a_first).then(a).otherwise(b).alias("key_l"),
        pl.when(a_first).then(b).otherwise(a).alias("key_r"),
        pl.when(a_first).then("a_system").otherwise("b_system").alias("source_system_l"),
        pl.when(a_first).then("a_id").otherwise("b_id").alias("source_record_id_l"),
        pl.when(a_first).then("b_system").otherwise("a_system").alias("source_system_r"),
        pl.when(a_first).then("b_id").otherwise("a_id").alias("source_record_id_r"),
    ).drop("a_system", "a_id", "b_system", "b_id")


def stored_pairs(pairs: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """Scored pairs (node_l, node_r, evidence, blocked, gamma_*) as stored: keys, evidence, blocked, levels."""
    gammas = [c for c in pairs.columns if c.startswith("gamma_")]
    return _keyed(pairs, ids).select(*PAIR_KEY, "evidence", "blocked", _levels(gammas).alias("comparison_levels"))


def node_pairs(stored: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """Stored pairs back to node_l < node_r, evidence, blocked and gamma_* columns (records no longer read drop out)."""
    fields = [f.name for f in stored.schema["comparison_levels"].fields]  # type: ignore[attr-defined]
    joined = stored.join(
        ids.rename({"unique_id": "a", "source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
        on=["source_system_l", "source_record_id_l"],
    ).join(ids.rename({"unique_id": "b", "source_system": "source_system_r", "source_record_id": "source_record_id_r"}),
           on=["source_system_r", "source_record_id_r"])
    return joined.select(
        pl.min_horizontal("a", "b").alias("node_l"), pl.max_horizontal("a", "b").alias("node_r"), "evidence", "blocked",
        *[pl.col("comparison_levels").struct.field(f).cast(pl.Int8).alias(f"gamma_{f}") for f in fields],
    )


def reusable(pairs: pl.DataFrame, clusters: pl.DataFrame, model: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Last run's stored pairs and record hashes, for an incremental night: only when they were scored by
    this ``model`` (same version, same comparisons); a night that compared nothing, or an older layout,
    means every pair is scored again."""
    levels = pairs.schema.get("comparison_levels")
    if "record_hash" not in clusters.columns or "blocked" not in pairs.columns or not isinstance(levels, pl.Struct):
        return None
    compared = {c["output_column_name"] for c in model.get("comparisons", [])}
    if not pairs.height or {f.name for f in levels.fields} != compared:
        return None
    if pairs["model_version"].unique().to_list() != [model.get(MODEL_VERSION_KEY)]:
        return None
    return pairs.select(*PAIR_KEY, "evidence", "blocked", "comparison_levels"), clusters.select(*KEY, "record_hash")


def _ordered(pairs: pl.DataFrame) -> pl.DataFrame:
    """Scored pairs as node_l < node_r (Splink may put the larger id left)."""
    return pairs.rename({"unique_id_l": "a", "unique_id_r": "b"}).select(
        pl.min_horizontal("a", "b").alias("node_l"), pl.max_horizontal("a", "b").alias("node_r"), pl.exclude("a", "b"))


def rule_links(frame: pl.DataFrame, rules: list[list[str]]) -> pl.DataFrame:
    """node_l < node_r pairs equal on every attribute of a user's deterministic rule, within one party type."""
    found = [pl.DataFrame(schema={"node_l": pl.Int64, "node_r": pl.Int64})]
    for rule in (r for r in rules if r):
        keyed = frame.select("unique_id", "party_type", *rule).drop_nulls(rule).filter(
            pl.len().over(["party_type", *rule]) <= MAX_RULE_GROUP)
        found.append(keyed.join(keyed, on=["party_type", *rule], suffix="_r").filter(
            pl.col("unique_id") < pl.col("unique_id_r")).select(
            pl.col("unique_id").alias("node_l"), pl.col("unique_id_r").alias("node_r")))
    return pl.concat(found).unique()


def _complete(frame: pl.DataFrame, scored: pl.DataFrame, piece: np.ndarray, model: dict[str, Any],
              matching: MatchingConfig) -> pl.DataFrame:
    """The pairs missing inside pieces of three or more records, scored."""
    sizes = np.bincount(piece)
    counted = scored.filter(pl.Series(piece[scored["node_l"].to_numpy()] == piece[scored["node_r"].to_numpy()]))
    known = np.bincount(piece[counted["node_l"].to_numpy()], minlength=len(sizes))
    wanting = (sizes >= 3) & (known < sizes * (sizes - 1) // 2)
    members = np.flatnonzero(wanting[piece])
    if members.size == 0:
        return scored.head(0)
    groups = pl.DataFrame({"unique_id": members.astype(np.int64), "group": piece[members].astype(np.int64)})
    fresh = _ordered(score_groups(frame, groups, model, matching))
    return fresh.join(scored.select("node_l", "node_r"), on=["node_l", "node_r"], how="anti").sort("node_l", "node_r")


def level_weight(model: dict[str, Any], comparisons: Collection[str]) -> pl.Expr:
    """The summed level weights (log2 m/u) of ``comparisons`` per pair, from its gamma columns; null where
    none of them had values on both sides. Their levels carry no term frequencies (e-mails do not)."""
    parts = []
    for comparison in model.get("comparisons", []):
        name = comparison["output_column_name"]
        if name not in comparisons:
            continue
        levels = [level for level in comparison["comparison_levels"] if not level.get("is_null_level")]
        weights = {len(levels) - 1 - i: math.log2(max(level.get("m_probability") or 1e-12, 1e-12)
                                                  / max(level.get("u_probability") or 1e-12, 1e-12))
                   for i, level in enumerate(levels)}
        parts.append(pl.col(f"gamma_{name}").replace_strict(weights, default=None, return_dtype=pl.Float64))
    return pl.sum_horizontal(parts).fill_null(0.0).pipe(
        lambda total: pl.when(pl.any_horizontal(p.is_not_null() for p in parts)).then(total)) if parts else pl.lit(None, pl.Float64)


def _comparable(pairs: pl.DataFrame) -> pl.Expr:
    gammas = [c for c in pairs.columns if c.startswith("gamma_")]
    return pl.any_horizontal(pl.col(g) != -1 for g in gammas) if gammas else pl.lit(False)


def match_records(
    frame: pl.DataFrame,
    model: dict[str, Any],
    matching: MatchingConfig,
    decisions: pl.DataFrame,
    previous: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    several: Collection[str] = (),
) -> MatchResult:
    """Cluster ``frame`` (matching features, ``unique_id`` = row position) with the saved ``model``.

    ``previous``: last run's stored pairs and record hashes, when scored by this same model.
    ``several``: comparisons of attributes a customer may hold several values of at once (e-mail
    addresses): between two groups of records only their best agreement counts.
    """
    with step(f"matching: scoring and clustering {frame.height:,} records", total=3) as advance:
        return _match_records(frame, model, matching, decisions, previous, several, advance)


def _match_records(frame: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig, decisions: pl.DataFrame,
                   previous: tuple[pl.DataFrame, pl.DataFrame] | None, several: Collection[str],
                   advance: Callable[[int], None]) -> MatchResult:
    ids = frame.select("unique_id", *KEY)
    n = frame.height
    blocking_frame, blocking_model, left_out = bounded_scoring(frame, model, matching)
    if previous is None:
        blocked_pairs = left_out.get("pairs_blocked", 0) - left_out.get("pairs_left_out", 0)
        scored = _ordered(score_pairs(blocking_frame, blocking_model, matching, blocked_pairs)).with_columns(
            pl.lit(True).alias("blocked"))
        mode = "full"
    else:
        old_pairs, old_hashes = previous
        changed = record_hashes(frame).join(old_hashes, on=[*KEY, "record_hash"], how="anti").select(KEY)
        kept = node_pairs(old_pairs, ids.join(changed, on=KEY, how="anti"))
        new_ids = ids.join(changed, on=KEY)["unique_id"]
        fresh = (_ordered(score_new_pairs(blocking_frame, new_ids, blocking_model, matching)) if new_ids.len()
                 else kept.drop("blocked").head(0))
        scored = pl.concat([kept, fresh.with_columns(pl.lit(True).alias("blocked")).select(kept.columns)],
                           how="vertical_relaxed")
        gone = old_hashes.join(ids, on=KEY, how="anti").height
        mode = f"incremental: {changed.height} new or changed, {gone} gone"

    advance(1)  # scored
    # Sums over pairs (the prior, the gains) must not depend on the order DuckDB's threads returned them in.
    scored = scored.sort("node_l", "node_r")
    # The prior and the threshold are judged on the pairs blocking found, as on the night they were first
    # scored: pairs scored to complete a cluster are not a sample of anything.
    blocked = scored.select(pl.col("evidence").filter("blocked"))
    rate = match_rate(blocked["evidence"].to_numpy(), candidate_pairs(frame), model["probability_two_random_records_match"])
    prior = math.log2(rate / (1 - rate))
    threshold = link_threshold(blocked.select(probabilities(pl.col("evidence"), prior).alias("p"))["p"].to_numpy())
    del blocked
    weight = pl.col("evidence") + prior - threshold.log2_odds  # > 0: more likely one customer than required

    must, cannot = decided_edges(decisions, ids)
    forced = pl.concat([
        must.with_columns(pl.lit(MUST_LINK).alias("w")),
        rule_links(frame, matching.deterministic_rules).with_columns(pl.lit(MUST_LINK).alias("w")),
        cannot.with_columns(pl.lit(CANNOT_LINK).alias("w")),
    ]).select(pl.min_horizontal("node_l", "node_r").alias("l"), pl.max_horizontal("node_l", "node_r").alias("r"), "w")
    # A steward's `different` wins over a rule's or another steward's `same` on the same pair.
    forced = forced.sort("w", "l", "r").unique(["l", "r"], keep="first", maintain_order=True)

    piece = pieces(n, pl.concat([scored.select(pl.col("node_l").alias("l"), pl.col("node_r").alias("r"),
                                               weight.alias("w")), forced]))
    completed = _complete(frame, scored, piece, model, matching)
    if completed.height:
        scored = pl.concat([scored, completed.with_columns(pl.lit(False).alias("blocked")).select(scored.columns)],
                           how="vertical_relaxed").sort("node_l", "node_r")

    weighted = scored.select(pl.col("node_l").alias("l"), pl.col("node_r").alias("r"), weight.alias("w"),
                             _comparable(scored).alias("comparable"), level_weight(model, several).alias("e"))
    weighted = pl.concat([weighted.join(forced, on=["l", "r"], how="anti"),
                          forced.with_columns(pl.lit(True).alias("comparable"), pl.lit(None, pl.Float64).alias("e"))
                          ]).sort("l", "r")
    weighted = weighted.with_columns(pl.Series("piece", piece[weighted["l"].to_numpy()].astype(np.int64)))
    inside = pl.Series(piece[weighted["l"].to_numpy()] == piece[weighted["r"].to_numpy()])
    clustering = agglomerate(n, weighted.filter(inside))
    labels = clustering.labels
    advance(1)  # clustered

    probability = probabilities(pl.col("evidence"), prior)
    queue = _queue(clustering.merges, nearest_other(labels, weighted), labels, ids, scored, prior, matching, n)
    del weighted
    together = pl.Series(labels[scored["node_l"].to_numpy()] == labels[scored["node_r"].to_numpy()])
    within = scored.select("node_l", "node_r", probability.alias("p")).filter(together)
    confidence = within.select(pl.concat_list("node_l", "node_r").alias("unique_id"), "p").explode("unique_id").group_by(
        "unique_id").agg(pl.col("p").max().alias("link_confidence"))
    clusters = pl.DataFrame({"unique_id": frame["unique_id"], "cluster": labels.astype(np.int64)}).join(
        confidence, on="unique_id", how="left")
    expected = float(scored.select(probability.sum()).item())
    mean_p = within["p"].mean()  # p is Float64: a float, or None when no pair is within a cluster
    est_precision = mean_p if isinstance(mean_p, float) else 1.0
    est_recall = float(within["p"].sum()) / expected if expected else 1.0
    advance(1)  # review queue and estimates

    def pair_parts() -> Iterator[pl.DataFrame]:
        for start in range(0, max(scored.height, 1), STORED_PART_PAIRS):
            yield stored_pairs(scored.slice(start, STORED_PART_PAIRS), ids).select(
                *PAIR_KEY, (pl.col("evidence") + prior).alias("match_weight"), "evidence",
                probability.alias("match_probability"), "blocked", "comparison_levels")

    summary = {
        "mode": mode, "records": n, "pairs_scored": scored.height,
        "pairs_completed": completed.height, "estimated_precision": est_precision, "estimated_recall": est_recall,
        **left_out,
    }
    return MatchResult(pair_parts, scored.height, clusters, queue, threshold, rate, summary)


def _pairs_of(scored: pl.DataFrame, wanted: pl.DataFrame, n: int) -> pl.DataFrame:
    """The rows of ``scored`` for the (node_l, node_r) pairs in ``wanted`` (nodes below ``n``): a few found among
    millions without hashing the millions, as a join would."""
    pair = pl.col("node_l").cast(pl.Int64) * n + pl.col("node_r")
    return scored.filter(pair.is_in(wanted.select(pair.alias("pair"))["pair"].implode()))


def _queue(merges: pl.DataFrame, undone: pl.DataFrame, labels: np.ndarray, ids: pl.DataFrame, scored: pl.DataFrame,
           prior: float, matching: MatchingConfig, n: int) -> Queue:
    """Every decision the clustering took (merges that stand) or left (each cluster's best other), queued by value."""
    sizes = np.bincount(labels, minlength=n)
    # A merge the last pass undid is no longer a decision the clustering took.
    made = merges.filter(pl.Series(labels[merges["l"].to_numpy()] == labels[merges["r"].to_numpy()]))
    cluster_of = labels[made["l"].to_numpy()]
    decisions = pl.concat([
        made.select("l", "r", "gain", "size_l", "size_r", pl.lit(True).alias("merged"),
                    pl.Series("shown", sizes[cluster_of], dtype=pl.Int64)),
        undone.select("l", "r", "gain", pl.Series("size_l", sizes[undone["c"].to_numpy()], dtype=pl.Int64),
                      pl.Series("size_r", sizes[undone["o"].to_numpy()], dtype=pl.Int64), pl.lit(False).alias("merged"),
                      pl.Series("shown", sizes[undone["c"].to_numpy()] + sizes[undone["o"].to_numpy()], dtype=pl.Int64)),
    ])
    keyed = _keyed(decisions.rename({"l": "node_l", "r": "node_r"}), ids)
    queue = review_queue(keyed, math.floor(matching.review_budget * n))
    record = pl.concat_str(KEY, separator=":")
    records = pl.DataFrame({"unique_id": ids["unique_id"], "cluster": labels.astype(np.int64)}).join(
        ids.select("unique_id", record.alias("record")), on="unique_id").group_by("cluster").agg(pl.col("record").sort())
    gammas = [c for c in scored.columns if c.startswith("gamma_")]
    items = queue.items.with_columns(
        pl.Series("cluster_l", labels[queue.items["node_l"].to_numpy()].astype(np.int64)),
        pl.Series("cluster_r", labels[queue.items["node_r"].to_numpy()].astype(np.int64)),
    ).join(records.rename({"cluster": "cluster_l", "record": "records_l"}), on="cluster_l", how="left",
           maintain_order="left").join(
        records.rename({"cluster": "cluster_r", "record": "records_r"}), on="cluster_r", how="left", maintain_order="left"
    ).join(_pairs_of(scored, queue.items, n).select("node_l", "node_r", "evidence", *gammas), on=["node_l", "node_r"],
           how="left", maintain_order="left")
    items = items.select(
        pl.when(pl.col("shown") == 2).then(pl.lit("pair")).otherwise(pl.lit("cluster")).alias("review_type"),
        *PAIR_KEY,
        # A merge made: the cluster it made; a merge left undone: both clusters.
        pl.when(pl.col("merged")).then(pl.col("records_l"))
        .otherwise(pl.concat_list("records_l", "records_r").list.sort()).alias("records"),
        "evidence", probabilities(pl.col("evidence"), prior).alias("match_probability"),
        _levels(gammas).alias("comparison_levels"), "merged", "doubt", "records_affected", "priority",
        review_reason(pl.col("merged"), pl.col("doubt"), pl.col("records_affected")).alias("review_reason"),
    )
    return Queue(items, queue.doubtful, queue.decided_automatically)
