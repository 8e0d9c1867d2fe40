"""Reconciliation: counts per source, and a loud failure when they do not add up."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.stages.reconcile import ReconciliationError, assert_balanced, reconcile, source_shrinkage

AT = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)


def sources(*names: str) -> pl.DataFrame:
    return pl.DataFrame({"source_system": list(names)}, schema={"source_system": pl.String})


def test_balanced_counts_per_source() -> None:
    table = reconcile("r1", {"crm": 3, "erp": 1}, sources("crm", "crm", "erp"), sources("crm"), AT)
    assert table.select("source_system", "rows_read", "rows_validated", "rows_quarantined", "balanced").rows() == [
        ("crm", 3, 2, 1, True), ("erp", 1, 1, 0, True),
    ]
    assert_balanced(table)


def test_lost_rows_fail_loudly_naming_the_source() -> None:
    table = reconcile("r1", {"crm": 3, "erp": 0}, sources("crm"), sources("erp"), AT)
    with pytest.raises(ReconciliationError, match="crm: read 3, validated 1, quarantined 0, erased 0; "
                       "erp: read 0, validated 0, quarantined 1, erased 0"):
        assert_balanced(table)


def test_rows_an_erasure_tombstone_dropped_count_as_read_and_erased() -> None:
    # crm: 2 rows stored in raw_crm, 1 more read and dropped at extract because its subject was erased.
    table = reconcile("r1", {"crm": 2, "erp": 1}, sources("crm", "erp"), sources("crm"), AT, erased={"crm": 1})
    assert table.select("source_system", "rows_read", "rows_erased", "balanced").rows() == [
        ("crm", 3, 1, True), ("erp", 1, 0, True)]
    assert_balanced(table)


@pytest.mark.parametrize(("now", "before", "retired", "accepted", "expected"), [
    ({"crm": 100}, {"crm": 100}, [], [], []),
    ({"crm": 70}, {"crm": 100}, [], [], []),  # exactly max_shrink: allowed
    ({"crm": 69}, {"crm": 100}, [], [], ["crm: read 69 rows, 100 at the last good run (-31%, more than quality.max_shrink 30%)"]),
    ({"crm": 0}, {"crm": 1972}, [], [], ["crm: read 0 rows, 1,972 at the last good run"]),
    ({"crm": 0}, None, [], [], ["crm: read 0 rows"]),  # a first run that reads nothing is no start either
    ({"crm": 0}, {"crm": 0}, [], [], []),  # empty before, empty now: nothing lost
    ({"crm": 0}, {"crm": 1972}, [], ["crm"], []),
    ({"crm": 5}, None, [], [], []),
    ({"shop": 500}, {"crm": 10, "shop": 10}, [], [],
     ["crm: read 10 rows at the last good run and is no longer in `sources`; list it under `retired_sources` to retire it"]),
    ({"shop": 500}, {"crm": 10, "shop": 10}, ["crm"], [], []),
    ({"shop": 500}, {"crm": 10, "shop": 10}, [], ["crm"], []),
    ({"crm": 1, "shop": 0}, {"crm": 10, "shop": 10}, [], ["shop"],
     ["crm: read 1 rows, 10 at the last good run (-90%, more than quality.max_shrink 30%)"]),
])
def test_source_shrinkage(now, before, retired, accepted, expected) -> None:  # type: ignore[no-untyped-def]
    assert source_shrinkage(now, before, retired, 0.3, accepted) == expected
