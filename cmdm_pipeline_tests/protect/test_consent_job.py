"""Consent and the audit log in the real Dagster job, across two runs in which two masters merge."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline_tests.conftest import GOOD_CSV, csv_source

pytestmark = pytest.mark.integration

SHOP_SOURCE = csv_source(name="shop", kind="jsonl", path="shop.jsonl", id_column="customer_id", trust_rank=2,
                         columns={"email": "email", "first": "first_name", "last": "last_name"})
CONSENT = {"source": {"kind": "csv", "path": "consent.csv", "columns": {
    "EventId": "event_id", "Email": "email", "Phone": "phone", "System": "source_system", "RecordId": "source_record_id",
    "Purpose": "purpose", "Channel": "channel", "Action": "action", "At": "occurred_at"}}}
EVENTS = (
    "EventId,Email,Phone,System,RecordId,Purpose,Channel,Action,At\n"
    "c1,Ada@Example.org ,,,,marketing,any,granted,2026-01-01T10:00:00Z\n"
    "c2,,+44 161 496 0000,,,marketing,sms,granted,2026-01-02T10:00:00Z\n"
    "c3,,,shop,10,sharing,email,granted,2026-01-03T10:00:00Z\n"
    "c4,,,crm,3,profiling,any,withdrawn,2026-01-01T00:00:00Z\n"
    "c5,grace@example.com,,,,profiling,email,granted,2026-01-01T00:00:00Z\n"
    "c6,ada-at-example.org,,,,marketing,email,granted,2026-01-01T00:00:00Z\n"
    "c7,nobody@example.net,,,,marketing,email,granted,2026-01-01T00:00:00Z\n"
)
DECISIONS = ("source_system_l,source_record_id_l,source_system_r,source_record_id_r,decision,decided_by,decided_at,reason\n"
             "crm,2,crm,3,different,steward@corp.example,2026-06-01T09:00:00,checked the birth dates\n")
PERSONAL = ("ada@example.org", "Ada@Example", "ada-at-example", "nobody@example.net", "grace@example.com",
            "+441614960000", "161 496", "Lovelace", "Hopper")


def shop(email: str) -> str:
    return json.dumps({"customer_id": 10, "email": email, "first": "Ada", "last": "Lovelace"}) + "\n"


def run(root: Path) -> tuple[dg.ExecuteInProcessResult, str]:
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(load_config(root / "cmdm.yaml")).resolve_job_def(JOB_NAME)
    result = job.execute_in_process(instance=instance, raise_on_error=True)
    metadata = {e.asset_key.to_user_string(): {k: str(v.value) for k, v in e.step_materialization_data.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    logs = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return result, json.dumps(metadata) + logs


def test_consent_and_audit_across_a_merge(make_project) -> None:  # type: ignore[no-untyped-def]
    files = {"crm.csv": GOOD_CSV, "shop.jsonl": shop("ada.l@example.org"), "consent.csv": EVENTS, "decisions.csv": DECISIONS}
    # Five records teach a model nothing: a deterministic rule makes the merge this test follows consent across.
    config = make_project(files=files, sources=[csv_source(), SHOP_SOURCE], consent=CONSENT,
                          matching={"decisions": "decisions.csv", "deterministic_rules": [["email"]]},
                          quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1})  # five records: a merge is drift
    store = open_warehouse(config)
    first, said = run(config.base_dir)
    for value in PERSONAL:
        assert value not in said, value

    def masters() -> dict[tuple[str, str], str]:
        xref = store.read("customer_xref")
        return {(s, r): m for s, r, m in xref.select("source_system", "source_record_id", "master_id").iter_rows()}

    ada, alan, grace, ada_shop = (masters()[k] for k in (("crm", "1"), ("crm", "2"), ("crm", "3"), ("shop", "10")))
    assert ada != ada_shop  # different e-mails: two masters for now

    def consent() -> set[tuple[str, str, str, bool]]:
        return set(store.read("consent_current").select("master_id", "purpose", "channel", "granted").iter_rows())

    channels = ("email", "sms", "phone", "post")
    assert consent() == {
        *[(ada, "marketing", c, True) for c in channels], (alan, "marketing", "sms", True),
        (ada_shop, "sharing", "email", True), *[(grace, "profiling", c, False) for c in channels]}  # tie: withdrawal wins
    history = store.read("consent_history").sort("event_id")
    assert history.select("event_id", "resolution").rows() == [
        ("c1", "email"), ("c2", "phone"), ("c3", "source_record"), ("c4", "source_record"), ("c5", "email"),
        ("c7", "unresolved")]
    assert store.read("consent_quarantine").select("source_row_number", "rules_broken").rows() == [(6, ["email.invalid"])]
    audit = store.read("audit_log")
    assert dict(audit.group_by("action").len().iter_rows()) == {"master_created": 4, "consent_changed": 10, "steward_decision": 1}
    assert set(audit.filter(pl.col("action") == "master_created")["actor"]) == {f"pipeline:{first.run_id}"}

    # Run 2: the web-shop record now has Ada's CRM e-mail (the masters merge), and Ada withdraws marketing e-mails.
    (config.base_dir / "shop.jsonl").write_text(shop("ada@example.org"), encoding="utf-8")
    (config.base_dir / "consent.csv").write_text(
        EVENTS + "c8,,,shop,10,marketing,email,withdrawn,2026-02-01T08:00:00Z\n", encoding="utf-8")
    second, said = run(config.base_dir)
    for value in PERSONAL:
        assert value not in said, value
    assert masters()[("shop", "10")] == ada  # the older master survives
    assert consent() == {
        (ada, "marketing", "email", False), *[(ada, "marketing", c, True) for c in channels[1:]],
        (alan, "marketing", "sms", True), (ada, "sharing", "email", True), *[(grace, "profiling", c, False) for c in channels]}
    assert store.read("consent_history").height == 7  # one new event, nothing ingested twice
    now = store.read("audit_log").filter(pl.col("run_id") == second.run_id)
    assert sorted(now.select("action", "master_id").rows()) == [
        ("consent_changed", ada), ("consent_changed", ada), ("consent_changed", ada_shop),
        ("master_merged", ada_shop), ("master_updated", ada)]
    changes = {(r["master_id"], json.loads(r["detail"])["purpose"], json.loads(r["detail"])["to"])
               for r in now.filter(pl.col("action") == "consent_changed").iter_rows(named=True)}
    assert changes == {(ada, "marketing", "withdrawn"), (ada, "sharing", "granted"), (ada_shop, "sharing", "none")}
    updated = json.loads(now.filter(pl.col("action") == "master_updated")["detail"][0])["attributes"]
    assert {"record_count", "source_count"} <= set(updated)


def test_without_a_consent_section_there_are_no_consent_assets(make_project) -> None:  # type: ignore[no-untyped-def]
    graph = build_definitions(make_project()).resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert "audit_log" in names and not {n for n in names if n.startswith("consent")}
