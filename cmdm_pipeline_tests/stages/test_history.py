"""Golden-record history: versions open and close as values change; the past can be queried."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from cmdm_pipeline.stages.history import VERSION_DIGEST, value_columns, with_version_start
from cmdm_pipeline.warehouse import Versions, Warehouse

T1, T2, T3 = (dt.datetime(2026, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3))


def golden(**emails: str | None) -> pl.DataFrame:
    frame = pl.DataFrame({"master_id": list(emails), "email": list(emails.values())}, schema={"master_id": pl.String, "email": pl.String})
    return digested(frame)


def digested(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with (again) a digest of its values; any will do here, the pipeline's is keyed
    (see protect.blind_index.version_digests)."""
    return frame.drop(VERSION_DIGEST, strict=False).with_columns(pl.struct(value_columns(frame)).hash().alias(VERSION_DIGEST))


def night(store: Warehouse, frame: pl.DataFrame, at: dt.datetime, run_id: str) -> None:
    current = store.query("SELECT master_id, valid_from, version_digest FROM golden") if "golden" in store.tables() else None
    store.replace({"golden": with_version_start(frame, current, at)}, versions=Versions("history", "golden", at, run_id))


def as_of(store: Warehouse, at: dt.datetime) -> dict[str, str | None]:
    history = store.read("history")
    live = history.filter((pl.col("valid_from") <= at) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > at)))
    return dict(live.select("master_id", "email").iter_rows())


def test_a_version_keeps_its_start_while_its_digest_is_unchanged() -> None:
    current = with_version_start(golden(M1="a@x.org", M2="b@x.org"), None, T1)
    assert current["valid_from"].to_list() == [T1, T1]
    later = with_version_start(golden(M1="a@x.org", M2="new@x.org", M3=None), current, T2)
    assert later["valid_from"].to_list() == [T1, T2, T2]  # M1 unchanged; M2 changed; M3 new


def test_versions_follow_changes_and_disappearances(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    night(store, golden(M1="a@x.org", M2="b@x.org"), T1, "r1")
    night(store, golden(M1="a@x.org", M2="new@x.org"), T2, "r2")
    night(store, golden(M2="new@x.org", M3=None), T3, "r3")
    assert as_of(store, T1) == {"M1": "a@x.org", "M2": "b@x.org"}
    assert as_of(store, T2) == {"M1": "a@x.org", "M2": "new@x.org"}
    assert as_of(store, T3) == {"M2": "new@x.org", "M3": None}
    history = store.read("history").sort("master_id", "valid_from")
    assert history.select("master_id", "run_id").rows() == [("M1", "r1"), ("M2", "r1"), ("M2", "r2"), ("M3", "r3")]
    assert history.filter(pl.col("master_id") == "M1")["valid_to"].to_list() == [T3]
    # The golden table is the current versions, start for start.
    assert store.read("golden").sort("master_id")["valid_from"].to_list() == [T2, T3]


def test_rerun_with_same_values_adds_nothing(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    night(store, golden(M1="a@x.org"), T1, "r1")
    before = store.read("history")
    night(store, golden(M1="a@x.org"), T2, "r2")
    assert store.read("history").equals(before)


def test_an_attribute_added_to_the_schema_begins_new_versions(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    night(store, golden(M1="a@x.org"), T1, "r1")
    night(store, digested(golden(M1="a@x.org").with_columns(pl.lit("GB").alias("country"))), T2, "r2")
    history = store.read("history").sort("valid_from")
    assert history.select("email", "country", "valid_to").rows() == [("a@x.org", None, T2), ("a@x.org", "GB", None)]


def test_a_column_whose_type_changed_keeps_both_as_text(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    coded = digested(golden(M1="a@x.org").with_columns(pl.lit(7).alias("score")))
    night(store, coded, T1, "r1")
    night(store, digested(coded.with_columns(pl.lit(dt.date(2026, 1, 2)).alias("score"))), T2, "r2")
    assert store.read("history").sort("valid_from")["score"].to_list() == ["7", "2026-01-02"]
