"""Clustering by weight: merges that the mean weight of all record pairs favours, never chains."""

from __future__ import annotations

import numpy as np
import polars as pl

from cmdm_pipeline.stages.cluster import CANNOT_LINK, MUST_LINK, agglomerate, nearest_other, pieces


def pairs(*rows: tuple[int, int, float] | tuple[int, int, float, bool]) -> pl.DataFrame:
    """(l, r, w[, comparable]) rows; pairs are comparable unless said otherwise."""
    full = [(*row, True) if len(row) == 3 else row for row in rows]
    return pl.DataFrame(full, schema={"l": pl.Int64, "r": pl.Int64, "w": pl.Float64, "comparable": pl.Boolean},
                        orient="row")


def groups(labels: np.ndarray) -> list[list[int]]:
    frame = pl.DataFrame({"node": np.arange(len(labels)), "cluster": labels}).group_by("cluster").agg(pl.col("node").sort())
    return sorted(frame["node"].to_list())


def complete(n: int, weight: float, **overrides: float) -> list[tuple[int, int, float]]:
    """Every pair of n records at ``weight``, some overridden ("l_r": w)."""
    return [(i, j, overrides.get(f"{i}_{j}", weight)) for i in range(n) for j in range(i + 1, n)]


def test_two_groups_joined_by_one_strong_pair_stay_apart() -> None:
    # 0-1-2 and 3-4-5 are sure of themselves; 2-3 is strong, but every other pair across says no.
    rows = complete(6, -12.0, **{f"{i}_{j}": 8.0 for i, j in ((0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5))}, **{"2_3": 15.0})
    result = agglomerate(6, pairs(*rows))
    assert groups(result.labels) == [[0, 1, 2], [3, 4, 5]]
    # The best merge left undone is the bridge, and it is not close.
    undone = nearest_other(result.labels, pairs(*rows))
    assert undone.filter(pl.col("c") == 0).select("l", "r").row(0) == (2, 3)
    assert undone["gain"].max() < 0


def test_a_chain_is_not_a_cluster() -> None:
    # Each link is strong; the ends have nothing in common. Connected components would join all six.
    chain = [(i, i + 1, 6.0) for i in range(5)]
    rest = [(i, j, -20.0) for i in range(6) for j in range(i + 2, 6)]
    result = agglomerate(6, pairs(*chain, *rest))
    assert max(len(g) for g in groups(result.labels)) <= 2


def test_a_pair_with_nothing_to_compare_is_no_evidence() -> None:
    # Record 2 holds only an e-mail, shared with record 0; record 1 has no e-mail. 1-2 compare nothing.
    result = agglomerate(3, pairs((0, 1, 10.0), (0, 2, 4.0), (1, 2, -16.0, False)))
    assert groups(result.labels) == [[0, 1, 2]]


def test_steward_decisions_win_over_the_model() -> None:
    rows = pairs((0, 1, 9.0), (1, 2, 9.0), (0, 2, 9.0), (2, 3, -30.0))
    decided = pl.concat([rows.filter(~((pl.col("l") == 0) & (pl.col("r") == 1)) & ~((pl.col("l") == 2) & (pl.col("r") == 3))),
                         pairs((0, 1, CANNOT_LINK), (2, 3, MUST_LINK))])
    labels = agglomerate(4, decided).labels
    assert labels[0] != labels[1]  # `different` never ends in one cluster
    assert labels[2] == labels[3]  # `same` holds against the model


def test_the_same_input_gives_the_same_clusters_and_labels() -> None:
    rows = pairs(*complete(5, 3.0))  # every merge ties: the smaller labels win
    first, second = agglomerate(5, rows), agglomerate(5, rows.reverse())
    assert np.array_equal(first.labels, second.labels) and set(first.labels) == {0}
    assert first.merges.equals(second.merges)


def test_oversized_components_are_split_along_their_strongest_links() -> None:
    # Two tight groups of 4 joined by a weaker link; pieces of at most 5 records cut the weak link first.
    tight = [(i, j, 10.0) for block in ((0, 1, 2, 3), (4, 5, 6, 7)) for i in block for j in block if i < j]
    edges = pairs(*tight, (3, 4, 2.0), (8, 9, -1.0))
    labels = pieces(10, edges, max_size=5)
    assert groups(labels) == [[0, 1, 2, 3], [4, 5, 6, 7], [8], [9]]
    assert groups(pieces(10, edges)) == [[0, 1, 2, 3, 4, 5, 6, 7], [8], [9]]
