"""Golden-record history: versions open and close as values change; the past can be queried."""

from __future__ import annotations

import datetime as dt

import polars as pl

from cmdm_pipeline.stages.history import update_history

T1, T2, T3 = (dt.datetime(2026, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3))


def golden(**emails: str | None) -> pl.DataFrame:
    return pl.DataFrame({"master_id": list(emails), "email": list(emails.values())}, schema={"master_id": pl.String, "email": pl.String})


def as_of(history: pl.DataFrame, at: dt.datetime) -> dict[str, str | None]:
    live = history.filter((pl.col("valid_from") <= at) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > at)))
    return dict(live.select("master_id", "email").iter_rows())


def test_versions_follow_changes_and_disappearances() -> None:
    h1 = update_history(None, golden(M1="a@x.org", M2="b@x.org"), "r1", T1)
    h2 = update_history(h1, golden(M1="a@x.org", M2="new@x.org"), "r2", T2)
    h3 = update_history(h2, golden(M2="new@x.org", M3=None), "r3", T3)
    assert as_of(h3, T1) == {"M1": "a@x.org", "M2": "b@x.org"}
    assert as_of(h3, T2) == {"M1": "a@x.org", "M2": "new@x.org"}
    assert as_of(h3, T3) == {"M2": "new@x.org", "M3": None}
    assert h3.height == 4  # M1 v1, M2 v1, M2 v2, M3 v1
    assert h3.filter(pl.col("master_id") == "M1")["valid_to"].to_list() == [T3]


def test_rerun_with_same_values_adds_nothing() -> None:
    h1 = update_history(None, golden(M1="a@x.org"), "r1", T1)
    assert update_history(h1, golden(M1="a@x.org"), "r2", T2).equals(h1)
