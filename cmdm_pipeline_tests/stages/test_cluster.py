"""Clustering by weight: merges that the mean weight of all record pairs favours, never chains."""

from __future__ import annotations

import numpy as np
import polars as pl

from cmdm_pipeline.stages.cluster import CANNOT_LINK, MUST_LINK, agglomerate, nearest_other, pieces


def pairs(*rows: tuple[int, int, float] | tuple[int, int, float, bool]) -> pl.DataFrame:
    """(l, r, w[, comparable]) rows; pairs are comparable unless said otherwise."""
    full = [(*row, True) if len(row) == 3 else row for row in rows]
    return pl.DataFrame(full, schema={"l": pl.Int64, "r": pl.Int64, "w": pl.Float64, "comparable": pl.Boolean},
                        orient="row").with_columns(pl.lit(0, pl.Int64).alias("piece"))


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


def test_a_stewards_different_holds_against_a_rules_same() -> None:
    # A rule links 0-2 and 1-2 (the same id); a steward says 0 and 1 are different: 0 and 1 stay apart.
    labels = agglomerate(3, pairs((0, 1, CANNOT_LINK), (0, 2, MUST_LINK), (1, 2, MUST_LINK))).labels
    assert labels[0] != labels[1]
    labels = agglomerate(3, pairs((0, 1, CANNOT_LINK), (0, 2, 30.0), (1, 2, 30.0))).labels
    assert labels[0] != labels[1]


def test_moving_records_ends_and_never_swaps_back_and_forth() -> None:
    from cmdm_pipeline.stages.cluster import refine

    rows = pairs((0, 1, 10.0), (2, 3, 10.0), (0, 2, 8.0), (0, 3, 8.0), (1, 2, 8.0), (1, 3, -100.0))
    settled = [tuple(refine(np.array([0, 0, 2, 2]), rows, max_rounds=rounds)) for rounds in (20, 21, 50)]
    assert len(set(settled)) == 1  # the same wherever the rounds stop: it settled
    labels = settled[0]

    def inside(labels: tuple[int, ...]) -> float:
        return sum(w for left, right, w in rows.select("l", "r", "w").iter_rows() if labels[left] == labels[right])

    assert inside(labels) >= inside((0, 0, 2, 2))  # every move raised the weight inside clusters


def test_records_a_rule_or_steward_joins_stay_together_however_many() -> None:
    chain = pairs(*[(i, i + 1, MUST_LINK) for i in range(7)])
    assert groups(pieces(8, chain, max_size=5)) == [list(range(8))]  # and the splitting ends


def test_every_clusters_best_merge_left_undone_is_reported() -> None:
    rows = pairs((0, 1, -1.0), (1, 2, -3.0), (0, 2, -8.0))
    labels = agglomerate(3, rows).labels
    undone = nearest_other(labels, rows)
    # 0's best is 1 (-1), 1's best is 0 (-1), 2's best is 1 (-3): two distinct undone merges.
    assert undone.select("c", "o", "gain").rows() == [(0, 1, -1.0), (1, 2, -3.0)]


def test_a_customers_second_e_mail_is_no_evidence_against_the_first() -> None:
    # 0 and 1 are one customer with two addresses; 2 holds only the address 0 has (e: the e-mail's part of w).
    rows = pl.DataFrame({"l": [0, 0, 1], "r": [1, 2, 2], "w": [12.0, 3.0, -20.0], "comparable": [True] * 3,
                         "e": [-4.0, 18.0, -4.0], "piece": [0] * 3})
    assert groups(agglomerate(3, rows).labels) == [[0, 1, 2]]
    # Without the several-values reading, 1-2's disagreement outweighs 0-2's agreement.
    assert groups(agglomerate(3, rows.drop("e")).labels) == [[0, 1], [2]]
