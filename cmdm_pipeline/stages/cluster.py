"""Cluster: group scored record pairs into customers by weight, without chaining.

Connected components on a threshold chain unrelated people together as data grows: one false link
joins two whole clusters. Here records are merged greedily, best merge first, and two groups merge
only when the *average* weight of their record pairs favours it: a group joined by one strong link
but contradicted by the rest of its pairs stays apart. Weights are log2 odds relative to the link
threshold (> 0: these two are more likely one customer than the threshold demands). A pair with
nothing to compare (a record with only an e-mail against one with only a name) is no evidence either
way and does not count. Steward decisions are infinite weights: ``same`` always merges, ``different``
never ends in one cluster.

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
    """Piece label per node position 0..n-1; ``edges``: l, r, w (only w > 0 joins records)."""
    positive = edges.filter(pl.col("w") > 0)
    labels = components(np.arange(n), positive)
    bar = 0.0
    while True:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        big = counts[inverse] > max_size
        if not big.any():
            return np.unique(labels, return_inverse=True)[1]
        bar += SPLIT_STEP
        inside = positive.filter(pl.Series(big[positive["l"].to_numpy()]) & (pl.col("w") > bar))
        relabelled = components(np.arange(n), inside)
        labels = np.where(big, relabelled + n * (1 + int(bar)), labels)


@dataclass(frozen=True)
class Agglomeration:
    labels: np.ndarray  # cluster label per node position (the smallest position in the cluster)
    merges: pl.DataFrame  # l, r (the strongest pair between the two groups), gain, size_l, size_r


def agglomerate(n: int, pairs: pl.DataFrame, max_rounds: int = 10_000) -> Agglomeration:
    """Merge records into clusters, mutual best merges first, while the mean comparable weight is > 0.

    ``pairs``: l, r (positions), w (log2 odds relative to the threshold, +-inf for decisions), comparable
    (bool: the pair had anything to compare). Deterministic: ties go to the smaller cluster label.
    """
    labels = np.arange(n)
    sizes = np.ones(n, dtype=np.int64)
    merges: list[pl.DataFrame] = []
    live = pairs.filter(pl.col("comparable") | pl.col("w").is_infinite()).select("l", "r", "w")
    for _ in range(max_rounds):
        gains = _gains(live, labels)
        best = _best_partners(gains.filter(pl.col("gain") > 0))
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
        sizes[gone] = 0
        # Pairs now inside one cluster never count again.
        live = live.filter(pl.Series(labels[live["l"].to_numpy()] != labels[live["r"].to_numpy()]))
    empty = pl.DataFrame(schema={"l": pl.Int64, "r": pl.Int64, "gain": pl.Float64, "size_l": pl.Int64, "size_r": pl.Int64})
    return Agglomeration(refine(labels, pairs), pl.concat(merges) if merges else empty)


def refine(labels: np.ndarray, pairs: pl.DataFrame, max_rounds: int = 20) -> np.ndarray:
    """Move single records to the cluster whose pairs favour them most (or out on their own).

    Greedy merging takes the strongest pair first and cannot undo it: two groups joined by one strong
    pair across them end with the pair's records in a cluster of their own. Each round moves, per
    cluster, the record that gains the most by moving (sum of its pairs' weights to the other cluster
    minus to its own; 0 on its own), until no record gains. Labels are then each cluster's smallest
    record position.
    """
    live = pairs.filter(pl.col("comparable") | pl.col("w").is_infinite()).select("l", "r", "w")
    both = pl.concat([live, live.rename({"l": "r", "r": "l"}).select("l", "r", "w")]).rename({"l": "node", "r": "other"})
    labels = labels.copy()
    for _ in range(max_rounds):
        affinity = both.with_columns(pl.Series("cluster", labels[both["other"].to_numpy()])).group_by(
            "node", "cluster").agg(pl.col("w").sum().alias("affinity"))
        own = pl.Series("own_cluster", labels[affinity["node"].to_numpy()])
        affinity = affinity.with_columns(own)
        stay = affinity.filter(pl.col("cluster") == pl.col("own_cluster")).select("node", pl.col("affinity").alias("stay"))
        away = affinity.filter(pl.col("cluster") != pl.col("own_cluster")).sort(
            ["node", "affinity", "cluster"], descending=[False, True, False]).unique("node", keep="first", maintain_order=True)
        moves = away.join(stay, on="node", how="full", coalesce=True).with_columns(
            pl.col("stay").fill_null(0.0), pl.col("own_cluster").fill_null(pl.lit(-1)))
        # Alone (affinity 0) is an option too, for a record in a cluster whose pairs are against it.
        moves = moves.with_columns(pl.Series("current", labels[moves["node"].to_numpy()]))
        alone = pl.col("stay") < 0
        target = pl.when(pl.col("affinity").is_not_null() & (pl.col("affinity") > pl.max_horizontal(pl.col("stay"), 0.0)))
        moves = moves.with_columns(
            target.then(pl.col("cluster")).when(alone).then(pl.lit(-1)).otherwise(None).alias("to"),
            target.then(pl.col("affinity") - pl.col("stay")).when(alone).then(-pl.col("stay")).otherwise(None).alias("gain"),
        ).filter(pl.col("to").is_not_null() & (pl.col("gain") > 1e-9))
        if moves.height == 0:
            break
        # One record per cluster per round, so two records never swap back and forth.
        chosen = moves.sort(["current", "gain", "node"], descending=[False, True, False]).unique(
            "current", keep="first", maintain_order=True)
        nodes = chosen["node"].to_numpy()
        targets = chosen["to"].to_numpy()
        labels[nodes] = np.where(targets < 0, len(labels) + nodes, targets)
    # Each cluster's label: its smallest record position.
    return pl.DataFrame({"label": labels}).with_row_index("node").with_columns(
        pl.col("node").min().over("label").alias("first"))["first"].to_numpy().astype(np.int64)


def _gains(pairs: pl.DataFrame, labels: np.ndarray) -> pl.DataFrame:
    """Per pair of clusters with a comparable record pair between them: the mean weight (a cannot-link
    anywhere makes it -inf), and their strongest record pair."""
    if pairs.height == 0:
        return pl.DataFrame(schema={"c": pl.Int64, "o": pl.Int64, "gain": pl.Float64, "l": pl.Int64, "r": pl.Int64})
    a = labels[pairs["l"].to_numpy()]
    b = labels[pairs["r"].to_numpy()]
    crossing = pairs.with_columns(pl.Series("a", np.minimum(a, b)), pl.Series("b", np.maximum(a, b))).filter(
        pl.col("a") != pl.col("b"))
    mean = pl.when((pl.col("w") == CANNOT_LINK).any()).then(pl.lit(CANNOT_LINK)).otherwise(pl.col("w").mean())
    return crossing.sort("w", "l", "r", descending=[True, False, False]).group_by("a", "b").agg(
        mean.alias("gain"), pl.col("l").first(), pl.col("r").first()
    ).rename({"a": "c", "b": "o"})


def _best_partners(gains: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's best merge (c, o, gain, l, r), in both directions; ties to the smaller partner."""
    both = pl.concat([gains, gains.rename({"c": "o", "o": "c"}).select(gains.columns)])
    return both.sort(["c", "gain", "o"], descending=[False, True, False]).unique("c", keep="first", maintain_order=True)


def nearest_other(labels: np.ndarray, pairs: pl.DataFrame) -> pl.DataFrame:
    """Each cluster's best partner it did not merge with (c, o, gain <= 0, l, r): the merges left undone."""
    gains = _gains(pairs.filter(pl.col("comparable") | pl.col("w").is_infinite()).select("l", "r", "w"), labels)
    return _best_partners(gains.filter(pl.col("gain").is_finite()))
