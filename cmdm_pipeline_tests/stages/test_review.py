"""The review queue: doubtful decisions ranked by doubt x records, within the budget, deterministic."""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.stages.review import DOUBTFUL, review_queue


def decisions(*rows: tuple[str, str, float, int, int, bool]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, orient="row", schema={"key_l": pl.String, "key_r": pl.String, "gain": pl.Float64,
                                                     "size_l": pl.Int64, "size_r": pl.Int64, "merged": pl.Boolean})
    return frame.with_columns((pl.col("size_l") + pl.col("size_r")).alias("shown"))


def test_the_queue_holds_the_most_valuable_doubts_up_to_the_budget() -> None:
    rows = decisions(
        ("a", "b", 0.1, 1, 1, True),    # a coin toss about one record
        ("c", "d", -0.5, 4, 6, False),  # less doubt, but four records would move
        ("e", "f", 12.0, 1, 1, True),   # sure: never queued
        ("g", "h", float("inf"), 1, 1, True),  # a steward's decision: never queued again
        ("i", "j", 2.0, 1, 1, True),
    )
    queue = review_queue(rows, budget=12)  # records shown: 10 for the first item, 2 for the next
    assert queue.items["key_l"].to_list() == ["c", "a"]
    assert queue.doubtful == 3 and queue.decided_automatically == 1
    assert (queue.items["doubt"] >= DOUBTFUL).all() and queue.items["records_affected"].to_list() == [4, 1]


def test_equal_priorities_are_ordered_by_record_keys() -> None:
    rows = decisions(("x", "y", 1.0, 1, 1, True), ("b", "c", -1.0, 1, 1, False), ("b", "a", 1.0, 1, 1, True))
    first = review_queue(rows, budget=100).items
    second = review_queue(rows.reverse(), budget=100).items
    assert first.equals(second) and first["key_l"].to_list() == ["b", "b", "x"]


def test_the_budget_counts_every_record_the_queue_shows() -> None:
    rows = decisions(("a", "b", 0.0, 30, 30, False), ("c", "d", 0.0, 1, 1, True))
    queue = review_queue(rows, budget=10)  # the 60-record item does not fit: only the pair is queued
    assert queue.items["key_l"].to_list() == ["c"] and queue.decided_automatically == 1


def test_a_budget_of_nothing_leaves_every_decision_to_the_model() -> None:
    queue = review_queue(decisions(("a", "b", 0.0, 1, 1, True)), budget=0)
    assert queue.items.height == 0 and queue.decided_automatically == 1
