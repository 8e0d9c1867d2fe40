"""Cluster: group scored record pairs into customers by weight, without chaining.

Connected components on a threshold chain unrelated people together as data grows: one false link
joins two whole clusters. Here records are merged greedily, best merge first, and two groups merge
only when the *average* weight of their record pairs favours it: a group joined by one strong link
but contradicted by the rest of its pairs stays apart. Weights are log2 odds relative to the link
threshold (> 0: these two are more likely one customer than the threshold demands). A pair with
nothing to compare (a record with only an e-mail against one with only a name) is no evidence either
way and does not count, and an attribute a customer holds several values of (e-mail addresses) counts
the two groups' best agreement on it. Steward decisions are infinite weights: ``same`` always merges,
``different`` never ends in one cluster.

The work is done per *piece*: a connected component of the pairs above the threshold, split along
its strongest links while it is larger than :data:`MAX_PIECE` (only chains grow that large), so that
every record pair inside a piece can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Records per piece at most; larger components are split along their strongest links.
MAX_PIECE = 500
#: How much the bar rises (bits) per round of splitting an oversized component.
SPLIT_STEP = 1.0
MUST_LINK = float("inf")
CANNOT_LINK = float("-inf")


def components(nodes: np.ndarray, edges: pl.DataFrame) -> np.ndarray:
    """Component label per node position (``edges``: l, r positions)."""
    n = len(nodes)
    if edges.height == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(edges.height, dtype=np.int8), (edges["l"].to_numpy(), edges["r"].to_numpy())), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def pieces(n: int, edges: pl.DataFrame, max_size: int = MAX_PIECE) -> np.ndarray:
    """Piece label per node position 0..n-1; ``edges``: l, r, w (only w > 0 joins records).

    An oversized component is split by raising the bar on its own edges; records joined by steward
    ``same`` decisions or deterministic rules (infinite weights) stay together whatever their number.
    """
    positive = edges.filter(pl.col("w") > 0)
    labels = components(np.arange(n), positive)
    finite = positive.filter(pl.col("w").is_finite())
    highest = float(finite["w"].max()) if finite.height else 0.0  # type: ignore[arg-type]
    bar = 0.0
    while True:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        big = counts[inverse] > max_size
        if not big.any() or bar > highest:
            return np.unique(labels, return_inverse=True)[1]
        bar += SPLIT_STEP
        inside = positive.filter(pl.Series(big[positive["l"].to_numpy()]) & (pl.col("w") > bar))
        relabelled = components(np.arange(n), inside)
        labels = np.where(big, relabelled + n * (1 + int(bar)), labels)


@dataclass(frozen=True)
class Agglomeration:
    labels: np.ndarray  # cluster label per node position (the smallest position in the cluster)
    merges: pl.DataFrame  # l, r (the strongest pair between the two groups), gain, size_l, size_r: the merges made


def agglomerate(n: int, pairs: pl.DataFrame, max_rounds: int = 10_000) -> Agglomeration:
    """Merge records into clusters, mutual best merges first, while the mean comparable weight is > 0,
    then move single records where their pairs favour it (:func:`refine`).

    ``pairs``: l, r (positions), w (log2 odds relative to the threshold, +-inf for decisions), comparable
    (bool: the pair had anything to compare), piece (the piece both records are in). Deterministic: ties
    go to the smaller cluster label.
    """
    labels = np.arange(n)
    sizes = np.ones(n, dtype=np.int64)
    merges: list[pl.DataFrame] = []
    live = _evidence(pairs).sort("l", "r")
    for _ in range(max_rounds):
        best = _best_partners(_gains(live, labels).filter(pl.col("gain") > 0))
        mutual = best.join(best.select(pl.col("c").alias("o"), pl.col("o").alias("c")), on=["c", "o"]).filter(
            pl.col("c") < pl.col("o"))
        if mutual.height == 0:
            break
        keep, gone = mutual["c"].to_numpy(), mutual["o"].to_numpy()
        merges.append(mutual.select("l", "r", "gain").with_columns(
            pl.Series("size_l", sizes[keep]), pl.Series("size_r", sizes[gone])))
        remap = np.arange(n)
        remap[gone] = keep
        labels = remap[labels]
        sizes[keep] += sizes[gone]
        # Pairs now inside one cluster never count again, and a piece where nothing merged is done.
        merged_pieces = live.filter(pl.Series(np.isin(labels[live["l"].to_numpy()], keep)))["piece"].unique()
        live = live.filter(pl.Series(labels[live["l"].to_numpy()] != labels[live["r"].to_numpy()])
                           & pl.col("piece").is_in(merged_pieces.implode()))
    empty = pl.DataFrame(schema={"l": pl.Int64, "r": pl.Int64, "gain": pl.Float64, "size_l": pl.Int64, "size_r": pl.Int64})
    return Agglomeration(refine(labels, pairs), pl.concat(merges) if merges else empty)


def _evidence(pairs: pl.DataFrame) -> pl.DataFrame:
    """The pairs that carry evidence: comparable ones, and decisions. ``e``: the part of ``w`` from
    comparisons of attributes a customer holds several values of (null where neither side has one)."""
    e = pl.col("e") if "e" in pairs.columns else pl.lit(None, pl.Float64)
    return pairs.filter(pl.col("comparable") | pl.col("w").is_infinite()).select(
        "l", "r", "w", e.cast(pl.Float64).alias("e"), "piece")


def _summed(weights: pl.Expr) -> pl.Expr:
    """A group's total weight with several-valued attributes judged by the group's best agreement on them:
    a customer's second e-mail address is not evidence against the first. -inf wins over +inf."""
    best = pl.col("e").max()
    adjusted = weights.sum() + (pl.col("e").is_not_null().sum() * best.fill_null(0.0) - pl.col("e").sum())
    return (pl.when((pl.col("w") == CANNOT_LINK).any()).then(pl.lit(CANNOT_LINK))
            .when((pl.col("w") == MUST_LINK).any()).then(pl.lit(MUST_LINK))
            .otherwise(adjusted))


def _gains(pairs: pl.DataFrame, labels: np.ndarray) -> pl.DataFrame:
    """Per pair of clusters with a comparable record pair between them: the mean weight (a cannot-link
    anywhere makes it -inf), and their strongest record pair."""
    if pairs.height == 0:
        return pl.DataFrame(schema={"c": pl.Int64, "o": pl.Int64, "gain": pl.Float64, "l": pl.Int64, "r": pl.Int64})
    a = labels[pairs["l"].to_numpy()]
    b = labels[pairs["r"].to_numpy()]
    crossing = pairs.with_columns(pl.Series("a", np.minimum(a, b)), pl.Series("b", np.maximum(a, b))).filter(
        pl.col("a") != pl.col("b"))
    mean = _summed(pl.col("w")) / pl.len()
    return crossing.sort("w", "l", "r", descending=[True, False, False]).group_by("a", "b").agg(
        mean.alias("gain"), pl.col("l").first(), pl.col("r").first()
    ).rename({"a": "c", "b": "o"})


def _best_partners(gains: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's best merge (c, o, gain, l, r), in both directions; ties to the smaller partner."""
    both = pl.concat([gains, gains.rename({"c": "o", "o": "c"}).select(gains.columns)])
    return both.sort(["c", "gain", "o"], descending=[False, True, False]).unique("c", keep="first", maintain_order=True)


def refine(labels: np.ndarray, pairs: pl.DataFrame, max_rounds: int = 50) -> np.ndarray:
    """Move single records to the cluster whose pairs favour them most (or out on their own).

    Greedy merging takes the strongest pair first and cannot undo it: two groups joined by one strong
    pair across them end with the pair's records in a cluster of their own. A record's pull to a
    cluster is the sum of its pairs' weights there (0 on its own); a steward's ``different`` makes it
    -inf, a ``same`` +inf (``different`` wins). Each round makes the best moves that touch no cluster
    twice (no record moves into or out of a cluster another move of the round changes), so every move
    raises the sum of weights inside clusters and the rounds end. Labels are then each cluster's
    smallest record position.
    """
    both = _evidence(pairs)
    both = pl.concat([both, both.rename({"l": "r", "r": "l"}).select(both.columns)]).rename({"l": "node", "r": "other"})
    labels = labels.copy()
    active = both["piece"].unique()
    for _ in range(max_rounds):
        live = both.filter(pl.col("piece").is_in(active.implode()))
        pull = live.with_columns(pl.Series("cluster", labels[live["other"].to_numpy()])).group_by(
            "node", "cluster").agg(_summed(pl.col("w")).alias("pull"), pl.col("piece").first())
        pull = pull.with_columns(pl.Series("current", labels[pull["node"].to_numpy()]))
        stay = pull.filter(pl.col("cluster") == pl.col("current")).select("node", pl.col("pull").alias("stay"))
        away = pull.filter((pl.col("cluster") != pl.col("current")) & pl.col("pull").is_finite())
        # Every record may also stand alone (pull 0), unless a decision ties it to its cluster.
        alone = pull.select("node", "piece", "current").unique("node").with_columns(
            pl.lit(-1, pl.Int64).alias("cluster"), pl.lit(0.0).alias("pull"))
        options = pl.concat([away.select(alone.columns), alone]).join(stay, on="node", how="left").with_columns(
            pl.col("stay").fill_null(0.0))
        moves = options.filter(pl.col("stay").is_finite() & (pl.col("pull") - pl.col("stay") > 1e-9)).with_columns(
            (pl.col("pull") - pl.col("stay")).alias("gain"))
        # Standing alone is a move only for a record that is not alone already.
        sizes = np.bincount(labels, minlength=len(labels))
        moves = moves.filter((pl.col("cluster") != -1) | pl.Series(sizes[moves["current"].to_numpy()] > 1))
        chosen = _independent(moves)
        if chosen.height == 0:
            break
        nodes, targets = chosen["node"].to_numpy(), chosen["cluster"].to_numpy()
        labels[nodes] = np.where(targets < 0, len(labels) + nodes, targets)
        active = chosen["piece"].unique()
    return pl.DataFrame({"label": labels}).with_row_index("node").with_columns(
        pl.col("node").min().over("label").alias("first"))["first"].to_numpy().astype(np.int64)


def _independent(moves: pl.DataFrame) -> pl.DataFrame:
    """The best move per record, then per source and per target cluster, keeping no move whose source
    or target another kept move changes: such moves do not interact, so each one's gain is real."""
    ranked = moves.sort(["gain", "node", "cluster"], descending=[True, False, False])
    ranked = ranked.unique("node", keep="first", maintain_order=True).unique("current", keep="first", maintain_order=True)
    joining = ranked.filter(pl.col("cluster") >= 0).unique("cluster", keep="first", maintain_order=True)
    ranked = pl.concat([joining, ranked.filter(pl.col("cluster") < 0)]).sort(
        ["gain", "node"], descending=[True, False])
    sources, targets = set(ranked["current"].to_list()), set(ranked.filter(pl.col("cluster") >= 0)["cluster"].to_list())
    return ranked.filter(~pl.col("cluster").is_in(list(sources)) & ~pl.col("current").is_in(list(targets)))


def nearest_other(labels: np.ndarray, pairs: pl.DataFrame) -> pl.DataFrame:
    """Each pair of clusters that is some cluster's best partner it is not merged with (c < o, gain, l, r):
    the merges left undone."""
    gains = _gains(_evidence(pairs), labels).filter(pl.col("gain").is_finite())
    best = _best_partners(gains)
    return best.select(pl.min_horizontal("c", "o").alias("c"), pl.max_horizontal("c", "o").alias("o"), "gain", "l", "r"
                       ).unique(["c", "o"], keep="first", maintain_order=True).sort("c", "o")
