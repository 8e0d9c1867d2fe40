"""The audit log: events derived from history and lineage, steward decisions once, append-only and atomic."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.protect.audit import (
    AUDIT,
    AuditError,
    append_audit,
    consent_events,
    master_events,
    steward_events,
)
from cmdm_pipeline.warehouse import Warehouse
from cmdm_pipeline_tests.protect.cases import T0, lineage, xref

UTC = pl.Datetime("us", "UTC")
T1 = T0 + dt.timedelta(days=1)


def golden_history() -> pl.DataFrame:
    """Three masters: M1 changes e-mail in run r2; M2 is retired into M1 in r2; M3 is split off M1 in r2."""
    rows = [
        ("M1", "Ada", "ada@x.org", 1, T0, T1, "r1"),
        ("M1", "Ada", "ada@new.org", 2, T1, None, "r2"),
        ("M2", "Ada", "ada@x.org", 1, T0, T1, "r1"),
        ("M3", "Bob", None, 1, T1, None, "r2"),
    ]
    return pl.DataFrame(rows, orient="row", schema={
        "master_id": pl.String, "first_name": pl.String, "email": pl.String, "record_count": pl.Int64,
        "valid_from": UTC, "valid_to": UTC, "run_id": pl.String})


def test_master_events_come_from_history_and_lineage_with_names_not_values() -> None:
    moves = lineage(("M2", "M1"), splits=(("M3", "M1"),)).with_columns(pl.lit("r2").alias("run_id"),
                                                                         pl.lit(T1, dtype=UTC).alias("recorded_at"))
    events = master_events(golden_history(), moves).sort("action", "master_id")
    assert events.select("action", "master_id", "run_id", "actor", "event_time").rows() == [
        ("master_created", "M1", "r1", "pipeline:r1", T0), ("master_created", "M2", "r1", "pipeline:r1", T0),
        ("master_merged", "M2", "r2", "pipeline:r2", T1), ("master_split", "M3", "r2", "pipeline:r2", T1),
        ("master_updated", "M1", "r2", "pipeline:r2", T1),
    ]
    details = [json.loads(d) for d in events["detail"]]
    assert details[0] == {"record_count": 1}
    assert details[2] == {"related_master_id": "M1", "records": 1}
    assert details[4] == {"attributes": ["email", "record_count"]}
    assert "ada" not in " ".join(events["detail"]).lower()


def test_a_night_reads_only_the_masters_with_versions_not_audited_yet(tmp_path: Path) -> None:
    from cmdm_pipeline.assets.audit import AUDITED_RUNS, _versions

    store = Warehouse(tmp_path / "w.duckdb")
    history = golden_history()
    store.replace({"golden_customers_history": history.filter(pl.col("run_id") == "r1")})
    first, runs = _versions(store)
    assert sorted(first["master_id"]) == ["M1", "M2"] and runs["run_id"].to_list() == ["r1"]  # nothing audited yet
    append_audit(store, master_events(first, lineage()), append={AUDITED_RUNS: (runs, "run_id")})
    quiet, runs = _versions(store)
    assert quiet.is_empty() and runs.is_empty()  # run r1 is audited: nothing to read
    store.replace({"golden_customers_history": history})
    later, runs = _versions(store)
    # M1 gained a version in r2 (both versions, to tell what changed), M3 began in r2; M2 is done.
    assert later.sort("master_id", "valid_from").select("master_id", "run_id").rows() == [
        ("M1", "r1"), ("M1", "r2"), ("M3", "r2")]
    assert runs["run_id"].to_list() == ["r2"]
    # A run whose versions bring no event (a split-off master's first version) is still done once audited.
    append_audit(store, master_events(later, lineage()), append={AUDITED_RUNS: (runs, "run_id")})
    assert _versions(store)[0].is_empty()


def decisions(*rows: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame([("crm", "1", "crm", "2", decision, "steward@corp.example", at, "looked at the DOB")
                         for decision, at in rows], orient="row", schema=[
        "source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r",
        "decision", "decided_by", "decided_at", "reason"])


def test_append_audit_logs_each_row_once_and_steward_decisions_once(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    masters = xref(**{"1": "M1", "2": "M2"})
    first = steward_events(decisions(("different", "2026-11-22T10:00:00")), masters, "r1", T0)
    assert append_audit(store, first) == 1
    # The same decision seen by the next run, and a new one: only the new one is logged.
    later = steward_events(decisions(("different", "2026-11-22T10:00:00"), ("same", "2026-11-23T09:00:00")), masters, "r2", T1)
    assert append_audit(store, later) == 1
    log = store.read(AUDIT).sort("event_time")
    assert log.select("action", "actor", "master_id", "run_id").rows() == [
        ("steward_decision", "steward@corp.example", "M1", "r1"), ("steward_decision", "steward@corp.example", "M1", "r2")]
    assert json.loads(log["detail"][0]) == {"decision": "different", "related_master_id": "M2", "source_systems": ["crm", "crm"]}
    assert "DOB" not in " ".join(log["detail"])  # the steward's free text may quote the customer
    assert log["event_time"][0] == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)


def test_a_decision_naming_a_record_without_a_master_is_not_in_force_and_not_logged(tmp_path: Path) -> None:
    """An erased (tombstoned) record never has a master again: its decisions stay unlogged, run after run."""
    store = Warehouse(tmp_path / "w.duckdb")
    only_one = xref(**{"1": "M1"})  # crm 2 is gone: erased, or not read yet
    assert steward_events(decisions(("different", "2026-11-22T10:00:00")), only_one, "r1", T0).is_empty()
    assert append_audit(store, steward_events(decisions(("same", "2026-11-22T10:00:00")), only_one, "r1", T0)) == 0
    both = steward_events(decisions(("same", "2026-11-22T10:00:00")), xref(**{"1": "M1", "2": "M2"}), "r2", T1)
    assert both.height == 1  # once both records are mastered, the decision is in force and logged


def test_append_audit_is_atomic_with_the_tables_it_describes(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    changes = pl.DataFrame({"master_id": ["M1"], "purpose": ["marketing"], "channel": ["sms"],
                            "before": ["none"], "after": ["granted"]})
    rows = consent_events(changes, "r1", T0)
    assert append_audit(store, rows, replace={"consent_current": pl.DataFrame({"x": [1]})}) == 1
    assert append_audit(store, rows, replace={"consent_current": pl.DataFrame({"x": [1]})}) == 0  # a retried step

    class Broken(pl.DataFrame):
        def to_arrow(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            raise RuntimeError("disk full")

    erased = pl.DataFrame({"event_time": [T1], "run_id": ["r2"], "actor": ["dpo@corp.example"], "action": ["erased"],
                           "master_id": ["M1"], "detail": [{"records": 2}]})
    with pytest.raises(RuntimeError, match="disk full"):
        append_audit(store, erased, replace={"consent_current": Broken({"x": [2]})})
    assert store.read(AUDIT).height == 1 and store.read("consent_current")["x"].to_list() == [1]
    assert append_audit(store, erased) == 1
    assert json.loads(store.read(AUDIT).filter(pl.col("action") == "erased")["detail"][0]) == {"records": 2}


def test_append_audit_refuses_unknown_actions_and_missing_actors(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    row = {"event_time": [T0], "run_id": ["r1"], "actor": ["pipeline:r1"], "action": ["master_deleted"],
           "master_id": ["M1"], "detail": ["{}"]}
    with pytest.raises(AuditError, match="unknown audit action"):
        append_audit(store, pl.DataFrame(row))
    with pytest.raises(AuditError, match="actor"):
        append_audit(store, pl.DataFrame({**row, "action": ["key_rotated"], "actor": [None]}, schema_overrides={"actor": pl.String}))
    with pytest.raises(AuditError, match="lack column"):
        append_audit(store, pl.DataFrame(row).drop("actor"))
    assert AUDIT not in store.tables()
