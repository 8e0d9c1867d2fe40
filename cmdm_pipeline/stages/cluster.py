"""Cluster: group scored pairs into customers without chaining.

Connected components on one threshold chain unrelated people together as data grows (one
false link joins two whole clusters). Here a component is only accepted when it looks like
one entity: dense enough (a real customer's records mostly match each other, a chain does
not), within the size limit, and free of steward "different" decisions. Components that fail
are re-clustered on their own stronger links, raising the bar step by step; what is still
doubtful at the strictest bar stays split and is sent to review.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MUST_LINK_WEIGHT = float("inf")


@dataclass(frozen=True)
class ClusterSettings:
    link_weight: float  # evidence weight at or above which two records may link
    max_cluster_size: int  # larger components are split or sent to review
    min_density: float  # share of a component's record pairs that must be links
    step: float = 2.0  # how much the bar rises per refinement round
    max_rounds: int = 6


@dataclass(frozen=True)
class Clusters:
    nodes: pl.DataFrame  # node, cluster, link_confidence (max weight of the node's links inside its cluster)
    doubtful: pl.DataFrame  # nodes (list), reason: components left unmerged and sent to review


def components(nodes: np.ndarray, edges: pl.DataFrame) -> np.ndarray:
    """Component label per node (labels are node positions' component numbers)."""
    n = len(nodes)
    if edges.height == 0:
        return np.arange(n)
    left = edges["l"].to_numpy()
    right = edges["r"].to_numpy()
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cluster_pairs(
    nodes: pl.Series,
    pairs: pl.DataFrame,
    settings: ClusterSettings,
    cannot_link: pl.DataFrame | None = None,
) -> Clusters:
    """``nodes``: every record's integer id. ``pairs``: node_l, node_r, weight (must-links as +inf).
    ``cannot_link``: node_l, node_r pairs a steward said are different."""
    ids = nodes.unique().sort()
    position = pl.DataFrame({"node": ids, "pos": pl.int_range(0, len(ids), dtype=pl.Int64, eager=True)})
    edges = (
        pairs.filter(pl.col("weight") >= settings.link_weight)
        .join(position.rename({"node": "node_l", "pos": "l"}), on="node_l")
        .join(position.rename({"node": "node_r", "pos": "r"}), on="node_r")
        .select("l", "r", "weight")
    )
    forbidden = pl.DataFrame(schema={"l": pl.Int64, "r": pl.Int64})
    if cannot_link is not None and cannot_link.height:
        forbidden = (
            cannot_link.join(position.rename({"node": "node_l", "pos": "l"}), on="node_l")
            .join(position.rename({"node": "node_r", "pos": "r"}), on="node_r")
            .select("l", "r")
        )
        edges = edges.join(forbidden, on=["l", "r"], how="anti").join(
            forbidden.rename({"l": "r", "r": "l"}), on=["l", "r"], how="anti"
        )

    labels = components(ids.to_numpy(), edges)
    final = np.full(len(ids), -1, dtype=np.int64)
    scope = edges  # the links still under judgement; accepted components leave it
    bar = settings.link_weight
    pending = np.ones(len(ids), dtype=bool)
    doubtful = pl.DataFrame(schema={"label": pl.Int64, "reason": pl.String})
    for round_ in range(settings.max_rounds + 1):
        judged = _judge(labels, pending, scope, forbidden, settings)
        accepted = np.isin(labels, judged.filter(pl.col("ok"))["label"].to_numpy()) & pending
        final[accepted] = labels[accepted]
        pending &= ~accepted
        if not pending.any():
            break
        if round_ == settings.max_rounds:
            # Still doubtful at the strictest bar: not merged (only steward must-links hold),
            # and sent to review.
            doubtful = judged.filter(~pl.col("ok")).select(pl.col("label").cast(pl.Int64), "reason")
            must = scope.filter(pl.col("weight") == MUST_LINK_WEIGHT)
            final[pending] = components(np.arange(len(ids)), must)[pending] + len(ids) * (round_ + 2)
            break
        bar += settings.step
        pending_pos = np.flatnonzero(pending)
        scope = scope.filter(pl.col("l").is_in(pending_pos) & (pl.col("weight") >= bar))
        relabel = components(np.arange(len(ids)), scope)
        labels = np.where(pending, relabel + len(ids) * (round_ + 1), labels)

    assigned = position.with_columns(
        pl.Series("label", final), pl.Series("was", labels)
    ).with_columns(pl.col("node").min().over("label").alias("cluster"))
    confidence = (
        edges.join(assigned.select(pl.col("pos").alias("l"), pl.col("label").alias("label_l")), on="l")
        .join(assigned.select(pl.col("pos").alias("r"), pl.col("label").alias("label_r")), on="r")
        .filter(pl.col("label_l") == pl.col("label_r"))
        .select(pl.concat_list("l", "r").alias("pos"), "weight")
        .explode("pos")
        .group_by("pos")
        .agg(pl.col("weight").max().alias("link_confidence"))
    )
    nodes_out = assigned.join(confidence, on="pos", how="left")
    doubtful_out = (
        nodes_out.join(doubtful, left_on="was", right_on="label")
        .group_by("was")
        .agg(pl.col("node").sort().alias("nodes"), pl.col("reason").first())
        .select("nodes", "reason")
        .sort(pl.col("nodes").list.first())
    )
    return Clusters(nodes_out.select("node", "cluster", "link_confidence").sort("node"), doubtful_out)


def _count_within(pairs: pl.DataFrame, members: pl.DataFrame, name: str) -> pl.DataFrame:
    """Per component label: how many of ``pairs`` (l, r positions) fall inside it."""
    return (
        pairs.join(members.rename({"pos": "l"}), on="l")
        .join(members.rename({"pos": "r", "label": "label_r"}), on="r")
        .filter(pl.col("label") == pl.col("label_r"))
        .group_by("label")
        .agg(pl.len().alias(name))
    )


def _judge(
    labels: np.ndarray, pending: np.ndarray, edges: pl.DataFrame, forbidden: pl.DataFrame, settings: ClusterSettings
) -> pl.DataFrame:
    """Per pending component: size, density, cannot-link violations, and whether it is accepted."""
    members = pl.DataFrame({"pos": np.flatnonzero(pending), "label": labels[pending]})
    sizes = members.group_by("label").agg(pl.len().alias("size"))
    inside = _count_within(edges, members, "links")
    clashes = _count_within(forbidden, members, "clashes")
    judged = (
        sizes.join(inside, on="label", how="left")
        .join(clashes, on="label", how="left")
        .with_columns(pl.col("links", "clashes").fill_null(0))
        .with_columns((pl.col("links") / (pl.col("size") * (pl.col("size") - 1) / 2)).fill_nan(1.0).alias("density"))
    )
    too_big = pl.col("size") > settings.max_cluster_size
    sparse = (pl.col("size") > 2) & (pl.col("density") < settings.min_density)
    clash = pl.col("clashes") > 0
    return judged.with_columns(
        (~(too_big | sparse | clash)).alias("ok"),
        pl.when(clash).then(pl.lit("holds records a steward said are different"))
        .when(too_big).then(pl.format("{} records, above the size limit", "size"))
        .when(sparse).then(pl.format("only {}% of its record pairs link", (pl.col("density") * 100).round(0)))
        .alias("reason"),
    )
