"""The workbench's decision store, as the web app writes it and the nightly run reads it."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.decision_store import (
    DecisionStore,
    DecisionStoreError,
    RecordKey,
    read_decision_history,
    read_reveals,
    read_store_decisions,
)
from cmdm_pipeline.protect.audit import workbench_events
from cmdm_pipeline.stages.decisions import steward_decisions

A, B, C = RecordKey("crm", "1"), RecordKey("shop", "7"), RecordKey("erp", "3")
NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


def test_no_store_means_no_decisions(tmp_path: Path) -> None:
    assert read_store_decisions(tmp_path / "missing.sqlite").is_empty()
    assert read_reveals(tmp_path / "missing.sqlite").is_empty()


def test_decisions_in_force_leave_out_undone_and_unsure_ones_and_keep_pairs_in_key_order(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    store.decide([(B, A)], "same", "ada", reason="same card")
    undone = store.decide([(A, C)], "different", "ada")
    store.decide([(B, C)], "unsure", "alan")
    assert store.last_batch("ada") == undone
    assert store.undo(undone, "ada") == 1 and store.undo(undone, "ada") == 0
    assert store.last_batch("ada") != undone
    force = read_store_decisions(store.path)
    assert force.select("source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r",
                        "decision", "decided_by").rows() == [("crm", "1", "shop", "7", "same", "web:ada")]
    history = read_decision_history(store.path)
    assert history.height == 3 and history.filter(pl.col("undone_at").is_not_null())["undone_by"].to_list() == ["web:ada"]


def test_bad_decisions_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    with pytest.raises(DecisionStoreError, match="decision"):
        store.decide([(A, B)], "maybe", "ada")  # type: ignore[arg-type]
    with pytest.raises(DecisionStoreError, match="itself"):
        store.decide([(A, B), (C, C)], "same", "ada")
    with pytest.raises(DecisionStoreError, match="at least one pair"):
        store.decide([], "same", "ada")
    assert read_decision_history(store.path).is_empty()


def test_the_latest_decision_on_a_pair_wins_whether_from_the_csv_or_the_workbench(tmp_path: Path) -> None:
    csv = tmp_path / "decisions.csv"
    csv.write_text("source_system_l,source_record_id_l,source_system_r,source_record_id_r,decision,decided_by,decided_at\n"
                   "shop,7,crm,1,same,ops@example.org,2026-01-01\nerp,3,crm,1,same,ops@example.org,2026-01-01\n",
                   encoding="utf-8")
    store = DecisionStore(tmp_path / "d.sqlite")
    store.decide([(A, B)], "different", "ada")  # later than the CSV's
    merged = steward_decisions(csv, store.path).sort("source_system_l", "source_system_r")
    assert merged.select("source_system_r", "decision", "decided_by").rows() == [
        ("erp", "same", "ops@example.org"), ("shop", "different", "web:ada")]


def test_a_store_written_meanwhile_is_read_while_the_web_app_holds_a_write_transaction(tmp_path: Path) -> None:
    """WAL: the nightly run reads the committed decisions and does not wait for the web app."""
    store = DecisionStore(tmp_path / "d.sqlite")
    store.decide([(A, B)], "same", "ada")
    writer = sqlite3.connect(store.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE decisions SET decision = 'different'")
    try:
        assert read_store_decisions(store.path)["decision"].to_list() == ["same"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_every_decision_undo_and_reveal_becomes_one_audit_row_with_the_web_actor(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    store.undo(store.decide([(A, B)], "same", "ada", reason="Ada Lovelace, same card"), "ada")
    store.decide([(A, C)], "different", "ada")
    store.log_reveal("alan", "master", ["email", "last_name"], records=[str(A)], master_id="M1")
    store.log_reveal("alan", "master", [], master_id="M1")  # nothing shown in clear: nothing logged
    xref = pl.DataFrame({"source_system": ["crm", "shop"], "source_record_id": ["1", "7"], "master_id": ["M1", "M2"]})
    rows = workbench_events(read_decision_history(store.path), read_reveals(store.path), xref, "run-1", NOW)
    assert sorted(rows["action"].to_list()) == [
        "personal_data_viewed", "steward_decision", "steward_decision", "steward_decision_undone"]
    assert set(rows["actor"]) == {"web:ada", "web:alan"} and rows["audit_id"].n_unique() == 4
    viewed = rows.filter(pl.col("action") == "personal_data_viewed")
    assert json.loads(viewed["detail"][0])["columns"] == ["email", "last_name"] and viewed["master_id"][0] == "M1"
    assert "Lovelace" not in rows.write_csv()  # the reason may quote the customer: never logged
    again = workbench_events(read_decision_history(store.path), read_reveals(store.path), xref, "run-2", NOW)
    assert again["audit_id"].sort().to_list() == rows["audit_id"].sort().to_list()  # the same ids: logged once


def test_erasure_forgets_decisions_and_reveals_naming_the_subject_and_keeps_the_rest(tmp_path: Path) -> None:
    from cmdm_pipeline.decision_store import forget

    store = DecisionStore(tmp_path / "d.sqlite")
    store.decide([(A, B)], "same", "ada")
    store.decide([(B, C)], "different", "ada")
    store.decide([(B, C)], "same", "ada", action="merge", masters=("M9", "M2"))
    store.log_reveal("ada", "pair", ["email"], records=[str(A), str(B)])
    store.log_reveal("ada", "master", ["email"], master_id="M9")
    store.log_reveal("ada", "master", ["email"], master_id="M2", records=[str(C)])
    assert forget(store.path, [str(A)], ["M9"]) == 4
    assert read_decision_history(store.path).select("decision", "master_l").rows() == [("different", None)]
    assert read_reveals(store.path)["master_id"].to_list() == ["M2"]
    assert forget(store.path, [str(A)], ["M9"]) == 0  # a redo after a crash changes nothing


def test_the_masters_the_steward_saw_stay_with_their_records_when_the_pair_is_put_in_key_order(tmp_path: Path) -> None:
    store = DecisionStore(tmp_path / "d.sqlite")
    store.decide([(B, A)], "same", "ada", masters=("M_shop", "M_crm"))
    store.decide([(C, B), (A, C)], "different", "ada", action="split", masters=[("M_erp", "M_shop"), ("M_crm", "M_erp")])
    rows = read_decision_history(store.path).select("source_system_l", "master_l", "source_system_r", "master_r").rows()
    assert rows == [("crm", "M_crm", "shop", "M_shop"), ("erp", "M_erp", "shop", "M_shop"), ("crm", "M_crm", "erp", "M_erp")]
    with pytest.raises(DecisionStoreError, match="masters"):
        store.decide([(A, B), (A, C)], "same", "ada", masters=[("M1", "M2")])
