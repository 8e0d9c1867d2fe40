"""Match: scored pairs, steward decisions that win over the model, and the review queue."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cmdm_pipeline.stages.cluster import MUST_LINK_WEIGHT

KEY = ["source_system", "source_record_id"]

DECISION_COLUMNS: dict[str, pl.DataType] = {
    "source_system_l": pl.String(),
    "source_record_id_l": pl.String(),
    "source_system_r": pl.String(),
    "source_record_id_r": pl.String(),
    "decision": pl.String(),  # same | different
    "decided_by": pl.String(),
    "decided_at": pl.String(),
    "reason": pl.String(),
}


def _record_key(system: str, record_id: str) -> pl.Expr:
    # A unit separator sorts below every printable character, so keys order by system first.
    return pl.concat_str(system, pl.lit("\x1f"), record_id)


class DecisionsError(ValueError):
    """The steward decisions file cannot be used; the message names file, row and column."""


def read_decisions(path: Path | None) -> pl.DataFrame:
    """Steward decisions from CSV; no file means no decisions yet."""
    if path is None or not path.exists():
        return pl.DataFrame(schema=DECISION_COLUMNS)
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise DecisionsError(f"{path}: cannot read decisions CSV: {exc}") from None
    missing = [c for c in DECISION_COLUMNS if c not in frame.columns and c != "reason"]
    if missing:
        raise DecisionsError(f"{path}: missing column(s) {missing}; expected {list(DECISION_COLUMNS)}")
    if "reason" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    frame = frame.select(list(DECISION_COLUMNS)).with_columns(pl.col("decision").str.strip_chars().str.to_lowercase())
    bad = frame.with_row_index("row", offset=2).filter(~pl.col("decision").is_in(["same", "different"]))
    if bad.height:
        raise DecisionsError(f"{path}: row {bad['row'][0]}, column decision: expected `same` or `different`")
    # The latest decision on a pair wins (pairs are unordered).
    ordered = frame.with_columns(
        (_record_key("source_system_l", "source_record_id_l") <= _record_key("source_system_r", "source_record_id_r"))
        .alias("__in_order")
    )
    left = pl.when("__in_order")
    normalised = ordered.select(
        left.then(pl.col("source_system_l")).otherwise(pl.col("source_system_r")).alias("source_system_l"),
        left.then(pl.col("source_record_id_l")).otherwise(pl.col("source_record_id_r")).alias("source_record_id_l"),
        left.then(pl.col("source_system_r")).otherwise(pl.col("source_system_l")).alias("source_system_r"),
        left.then(pl.col("source_record_id_r")).otherwise(pl.col("source_record_id_l")).alias("source_record_id_r"),
        "decision", "decided_by", "decided_at", "reason",
    )
    pair = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
    return normalised.sort("decided_at").unique(pair, keep="last", maintain_order=True)


def decided_edges(decisions: pl.DataFrame, ids: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(must-links as pairs with infinite weight, cannot-links) in node ids; ``ids``: unique_id + key."""

    def nodes(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(
            ids.rename({"unique_id": "node_l", "source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
            on=["source_system_l", "source_record_id_l"],
        ).join(
            ids.rename({"unique_id": "node_r", "source_system": "source_system_r", "source_record_id": "source_record_id_r"}),
            on=["source_system_r", "source_record_id_r"],
        )

    same = nodes(decisions.filter(pl.col("decision") == "same")).select(
        "node_l", "node_r", pl.lit(MUST_LINK_WEIGHT).alias("weight")
    )
    different = nodes(decisions.filter(pl.col("decision") == "different")).select("node_l", "node_r")
    return same, different


def review_queue(
    pairs: pl.DataFrame, decisions: pl.DataFrame, link_evidence: float, review_evidence: float
) -> pl.DataFrame:
    """Pairs in the review band that no steward has decided yet, most doubtful first."""
    pair = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
    doubtful = (pl.col("evidence") >= review_evidence) & (pl.col("evidence") < link_evidence)
    strong = pl.col("evidence") >= link_evidence
    held = strong & ~pl.col("corroborated")
    band = pairs.filter((doubtful | held) & ~pl.col("names_disagree"))
    return (
        band.join(decisions.select(pair), on=pair, how="anti")
        .with_columns(
            pl.when(strong)
            .then(pl.lit("names match but no e-mail, phone, birth date, address or id confirms it"))
            .otherwise(pl.lit("uncertain match"))
            .alias("review_reason")
        )
        .sort((pl.col("evidence") - (link_evidence + review_evidence) / 2).abs())
    )


def keyed_pairs(pairs: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """Scored pairs with both records' keys, the smaller key on the left (as decisions are)."""
    joined = pairs.join(
        ids.rename({"unique_id": "unique_id_l", "source_system": "a_system", "source_record_id": "a_id"}), on="unique_id_l"
    ).join(ids.rename({"unique_id": "unique_id_r", "source_system": "b_system", "source_record_id": "b_id"}), on="unique_id_r")
    in_order = _record_key("a_system", "a_id") <= _record_key("b_system", "b_id")
    rest = [c for c in pairs.columns if c not in ("unique_id_l", "unique_id_r")]
    return joined.select(
        pl.when(in_order).then("a_system").otherwise("b_system").alias("source_system_l"),
        pl.when(in_order).then("a_id").otherwise("b_id").alias("source_record_id_l"),
        pl.when(in_order).then("b_system").otherwise("a_system").alias("source_system_r"),
        pl.when(in_order).then("b_id").otherwise("a_id").alias("source_record_id_r"),
        pl.when(in_order).then("unique_id_l").otherwise("unique_id_r").alias("node_l"),
        pl.when(in_order).then("unique_id_r").otherwise("unique_id_l").alias("node_r"),
        *rest,
    )


def names_disagree(
    pairs: pl.DataFrame, given: list[str], family: list[str], swapped: dict[str, int], one_person: pl.Expr,
    organisations: list[str],
) -> pl.Expr:
    """True where a given or a family name (or two organisations' names) is present on both sides
    and totally different (not a typo, nickname or swap), and ``one_person`` (what only one party
    has: :func:`~cmdm_pipeline.stages.match_model.one_person`) does not say it is one anyway.

    Members of a household share surname, address and landline; colleagues share the
    office address, phone and often a first name; businesses in one building share a postcode
    and mailbox names (info@, accounts@). They score high on everything but the name. Such a pair
    is never linked by the model, and it is not queued either: a name that differs with nothing
    personal in common is a different party, not a doubt.
    ``swapped``: ``gamma_<given>`` -> its level for first and family name swapped.
    """
    differ = [pl.col(f"gamma_{n}") == 0 for n in given if f"gamma_{n}" in pairs.columns]
    swaps = [pl.col(g) != level for g, level in swapped.items() if g in pairs.columns]
    not_swapped = pl.all_horizontal(swaps) if swaps else pl.lit(True)
    differ += [(pl.col(f"gamma_{n}") == 0) & not_swapped for n in family if f"gamma_{n}" in pairs.columns]
    differ += [pl.col(f"gamma_{n}") == 0 for n in organisations if f"gamma_{n}" in pairs.columns]
    if not differ:
        return pl.lit(False)
    return pl.any_horizontal(differ) & ~one_person


def corroborated(pairs: pl.DataFrame, levels: dict[str, int]) -> pl.Expr:
    """True where at least one comparison besides the names confirms the identity."""
    present = [pl.col(g) >= level for g, level in levels.items() if g in pairs.columns]
    return pl.any_horizontal(present) if present else pl.lit(True)


def open_questions(pairs: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """One question per customer in doubt: "does this (smaller) cluster belong to that one?".

    Only pairs whose records ended in different clusters are questions (a decision on a pair
    already joined through other links would change nothing). Of the pairs between a cluster
    and larger ones, the strongest is asked and explains itself; the others are counted in
    the reason. A `different` answer brings the next candidate up on the next run.
    """
    cluster = members.select(*KEY, "cluster")
    sizes = cluster.group_by("cluster").agg(pl.len().alias("size"))
    joined = (
        pairs.join(cluster.rename({"source_system": "source_system_l", "source_record_id": "source_record_id_l",
                                   "cluster": "cluster_l"}), on=["source_system_l", "source_record_id_l"], maintain_order="left")
        .join(cluster.rename({"source_system": "source_system_r", "source_record_id": "source_record_id_r",
                              "cluster": "cluster_r"}), on=["source_system_r", "source_record_id_r"], maintain_order="left")
        .filter(pl.col("cluster_l") != pl.col("cluster_r"))
        .join(sizes.rename({"cluster": "cluster_l", "size": "size_l"}), on="cluster_l", maintain_order="left")
        .join(sizes.rename({"cluster": "cluster_r", "size": "size_r"}), on="cluster_r", maintain_order="left")
    )
    left_asks = (pl.col("size_l") < pl.col("size_r")) | (
        (pl.col("size_l") == pl.col("size_r")) & (pl.col("cluster_l") < pl.col("cluster_r"))
    )
    asking = pl.when(left_asks).then("cluster_l").otherwise("cluster_r")
    answering = pl.when(left_asks).then("cluster_r").otherwise("cluster_l")
    others = pl.col("__answering").n_unique().over("__asking") - 1
    return (
        joined.with_row_index("__order")
        .with_columns(asking.alias("__asking"), answering.alias("__answering"))
        .with_columns(others.alias("__others"))
        .sort("evidence", descending=True)
        .unique("__asking", keep="first")
        .sort("__order")
        .with_columns(
            pl.when(pl.col("__others") > 0)
            .then(pl.format("{} ({} other candidate customer{})", "review_reason", "__others",
                            pl.when(pl.col("__others") > 1).then(pl.lit("s")).otherwise(pl.lit(""))))
            .otherwise("review_reason").alias("review_reason")
        )
        .drop("cluster_l", "cluster_r", "size_l", "size_r", "__order", "__asking", "__answering", "__others")
    )
