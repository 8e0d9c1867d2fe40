"""Erasure of values a subject's record left in *another* master's history (a wrong merge, later split)."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from cmdm_pipeline.protect.erasure.apply import process_erasure
from cmdm_pipeline.protect.erasure.history import HISTORY_SOURCES, copied_versions, wholly_copied
from cmdm_pipeline.protect.erasure.requests import record_request
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline_tests.protect.cases import LINEAGE_SCHEMA

UTC = pl.Datetime("us", "UTC")
T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
T1, T2, T3 = (T0 + dt.timedelta(days=n) for n in (1, 2, 3))
BEFORE_T2 = T2 - dt.timedelta(minutes=1)  # master ids are assigned before the golden step stamps versions
ZED_PHONE = "+442079460999"
SOURCES = {"master_id": pl.String(), "valid_from": UTC, "source_system": pl.String(), "source_record_id": pl.String()}
VERSIONS = {"master_id": pl.String(), "valid_from": UTC, "valid_to": UTC}
ZED = pl.DataFrame({"source_system": ["crm"], "source_record_id": ["7"]})


def _lineage(*rows: tuple[str, str, str, dt.datetime]) -> pl.DataFrame:
    return pl.DataFrame([("r", event, m, related, 1, at) for event, m, related, at in rows], schema=LINEAGE_SCHEMA,
                        orient="row")


def test_listed_versions_of_other_masters_are_found_and_their_other_versions_are_not() -> None:
    """Mia's master M held Zed's record crm 7 in its version of T1 only; Zed's own masters are erased whole."""
    sources = pl.DataFrame([("M", T0, "crm", "5"), ("M", T1, "crm", "5"), ("M", T1, "crm", "7"), ("M", T2, "crm", "5"),
                            ("Z0", T0, "crm", "7"), ("Z", T2, "crm", "7"), ("B", T1, "crm", "8")], schema=SOURCES, orient="row")
    versions = sources.select("master_id", "valid_from").unique().with_columns(pl.lit(None, dtype=UTC).alias("valid_to"))
    found = copied_versions(ZED, ["Z"], sources, versions, _lineage(), pl.DataFrame(schema={"master_id": pl.String}))
    assert found.rows() == [("M", T1), ("Z0", T0)]  # Z0: Zed's first master, merged into M: his values only
    assert wholly_copied(found, versions) == ["Z0"]  # nothing of Z0 is left: it is erased as one of his masters


def test_versions_nobody_listed_are_found_through_the_split_within_its_window() -> None:
    """Legacy history (no rows in golden_history_sources): Z split off L; L's versions between the first time
    Zed's record was seen and the split may hold his values; L's versions outside it, and K's, stay."""
    versions = pl.DataFrame([("L", T0, T1), ("L", T1, T2), ("L", T2, None), ("K", T1, None)], schema=VERSIONS, orient="row")
    lineage = _lineage(("split", "Z", "L", BEFORE_T2), ("split", "K", "L", T1))
    xref = pl.DataFrame({"source_system": ["crm"], "source_record_id": ["7"], "master_id": ["Z"], "first_seen": [T1]},
                        schema_overrides={"first_seen": UTC})
    none_listed = pl.DataFrame(schema=SOURCES)
    assert copied_versions(ZED, ["Z"], none_listed, versions, lineage, xref).rows() == [("L", T1)]
    listed = pl.DataFrame([("L", T1, "crm", "5")], schema=SOURCES, orient="row")  # listed without Zed: clean
    assert copied_versions(ZED, ["Z"], listed, versions, lineage, xref).is_empty()


def _state(store, run: str, at: dt.datetime, masters: dict[str, str], history: list[tuple], lineage: pl.DataFrame) -> None:  # type: ignore[no-untyped-def]
    """One run's mastering tables: crm record id -> master, and every history version so far."""
    xref = pl.DataFrame({"source_system": ["crm"] * len(masters), "source_record_id": list(masters),
                         "master_id": list(masters.values()), "first_seen": [T0] * len(masters)},
                        schema_overrides={"first_seen": UTC})
    golden_history = pl.DataFrame(history, orient="row", schema={
        "master_id": pl.String, "first_name": pl.String, "phone": pl.String, "record_count": pl.Int64,
        "valid_from": UTC, "valid_to": UTC, "run_id": pl.String})
    winners = xref.select("master_id", pl.lit("first_name").alias("attribute"), "source_system", "source_record_id",
                          pl.lit("trust_rank").alias("rule"))
    store.replace({"customer_xref": xref, "master_id_lineage": lineage, "golden_customers_history": golden_history,
                   "golden_attribute_lineage": winners})


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext-control"])
def test_erasure_removes_the_subjects_values_from_another_masters_history(make_project, encrypt: bool) -> None:  # type: ignore[no-untyped-def]
    """Zed (crm 7) was wrongly merged into Mia's master M in run 2 and split off in run 3; his phone won M's
    version of run 2. Each process_erasure call is the start of the next run (as in the job)."""
    config = make_project(protection={"encrypt": encrypt})
    store = open_warehouse(config)
    mia1 = ("M", "Mia", None, 1, T0, None, "r1")
    zed0 = ("Z0", "Zed", ZED_PHONE, 1, T0, None, "r1")
    _state(store, "r1", T0, {"5": "M", "7": "Z0"}, [mia1, zed0], _lineage())
    process_erasure(store, config, "r2", T1)
    merged = _lineage(("merged", "Z0", "M", T1))
    history = [mia1[:5] + (T1, "r1"), zed0[:5] + (T1, "r1"), ("M", "Mia", ZED_PHONE, 2, T1, None, "r2")]
    _state(store, "r2", T1, {"5": "M", "7": "M"}, history, merged)
    process_erasure(store, config, "r3", T2)
    split = pl.concat([merged, _lineage(("split", "Z", "M", BEFORE_T2))])
    history = [*history[:2], ("M", "Mia", ZED_PHONE, 2, T1, T2, "r2"), ("M", "Mia", None, 1, T2, None, "r3"),
               ("Z", "Zed", ZED_PHONE, 1, T2, None, "r3")]
    _state(store, "r3", T2, {"5": "M", "7": "Z"}, history, split)
    listed = store.read(HISTORY_SOURCES).filter(pl.col("source_record_id") == "7")
    assert sorted(listed.select("master_id", "valid_from").rows()) == [("M", T1), ("Z0", T0)]  # run 3 is not recorded yet

    record_request(config, request_id="T-1", record=("crm", "7"))
    outcome = process_erasure(store, config, "r4", T3)

    log = store.read("erasure_log").row(0, named=True)
    # Z, and Z0: every version of it drew on crm 7 (his first master), so it is erased as his, lineage included.
    assert (log["status"], log["masters_erased"], log["keys_destroyed"]) == ("erased", 2, 2 if encrypt else 0)  # master/Z, master/Z0
    removed = json.loads(log["rows_removed"])
    assert removed["golden_customers_history"] == 3  # Zed's master Z, his first master Z0, and M's version of run 2
    assert outcome.rows_removed["golden_customers_history"] == 3
    assert store.read("master_id_lineage").is_empty()  # "Z0 merged into M", "Z split from M": his moves only
    left = store.read("golden_customers_history").sort("master_id", "valid_from")
    assert left.select("master_id", "valid_from", "phone").rows() == [("M", T0, None), ("M", T2, None)]  # M's others stay
    everything = " ".join(f"{t}: {store.read(t).rows()}" for t in store.tables())  # every table, decrypted
    assert ZED_PHONE not in everything and "Zed" not in everything
    assert store.read(HISTORY_SOURCES).filter(pl.col("source_record_id") == "7").is_empty()
    assert ZED_PHONE.encode() not in store.path.read_bytes()  # deleted rows are gone from the rebuilt file too
