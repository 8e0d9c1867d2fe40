"""Clustering that does not chain: dense components are accepted, chains are cut, doubts go to review."""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.stages.cluster import MUST_LINK_WEIGHT, ClusterSettings, cluster_pairs

SETTINGS = ClusterSettings(link_weight=10.0, max_cluster_size=4, min_density=0.6, step=5.0, max_rounds=2)


def pairs(*edges: tuple[int, int, float]) -> pl.DataFrame:
    return pl.DataFrame(edges, schema={"node_l": pl.Int64, "node_r": pl.Int64, "weight": pl.Float64}, orient="row")


def groups(result) -> list[list[int]]:  # type: ignore[no-untyped-def]
    frame = result.nodes.group_by("cluster").agg(pl.col("node").sort())
    return sorted(frame["node"].to_list())


def test_dense_clusters_are_accepted_and_weak_pairs_ignored() -> None:
    nodes = pl.Series(range(1, 7))
    result = cluster_pairs(nodes, pairs((1, 2, 20), (2, 3, 20), (1, 3, 12), (4, 5, 11), (5, 6, 3)), SETTINGS)
    assert groups(result) == [[1, 2, 3], [4, 5], [6]]
    assert result.doubtful.height == 0
    confidence = dict(result.nodes.select("node", "link_confidence").iter_rows())
    assert confidence[1] == 20 and confidence[6] is None


def test_a_weak_bridge_between_two_groups_is_cut() -> None:
    triangle_a = [(1, 2, 25), (2, 3, 25), (1, 3, 25)]
    triangle_b = [(4, 5, 25), (5, 6, 25), (4, 6, 25)]
    result = cluster_pairs(pl.Series(range(1, 7)), pairs(*triangle_a, *triangle_b, (3, 4, 11)), SETTINGS)
    assert groups(result) == [[1, 2, 3], [4, 5, 6]]


def test_a_chain_that_stays_doubtful_is_not_merged_and_goes_to_review() -> None:
    chain = [(i, i + 1, 30.0) for i in range(1, 8)]
    result = cluster_pairs(pl.Series(range(1, 9)), pairs(*chain), SETTINGS)
    assert groups(result) == [[n] for n in range(1, 9)]
    assert result.doubtful["nodes"].to_list() == [list(range(1, 9))]
    assert "above the size limit" in result.doubtful["reason"][0]


def test_cannot_link_splits_and_must_link_holds() -> None:
    edges = pairs((1, 2, 12), (2, 3, 12), (1, 3, 12), (3, 4, MUST_LINK_WEIGHT))
    cannot = pl.DataFrame({"node_l": [1], "node_r": [2]})
    result = cluster_pairs(pl.Series([1, 2, 3, 4]), edges, SETTINGS, cannot_link=cannot)
    # 1 and 2 may not share a cluster; only the steward's 3-4 link survives the raised bar.
    assert groups(result) == [[1], [2], [3, 4]]
