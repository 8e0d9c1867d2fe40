"""`cmdm consent`: one customer's consent and history, found by id, e-mail or phone; the totals."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from cmdm_pipeline.cli import main
from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline_tests.conftest import GOOD_CSV, SCHEMA, csv_source

pytestmark = pytest.mark.integration

CONSENT = {"source": {"kind": "csv", "path": "consent.csv", "columns": {
    "Email": "email", "Phone": "phone", "Purpose": "purpose", "Channel": "channel", "Action": "action", "At": "occurred_at"}}}
EVENTS = ("Email,Phone,Purpose,Channel,Action,At\n"
          "ada@example.org,,marketing,any,granted,2026-01-01T10:00:00Z\n"
          "ada@example.org,,marketing,sms,withdrawn,2026-02-01T10:00:00Z\n"
          ",+44 161 496 0000,sharing,email,granted,2026-01-01T10:00:00Z\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("consent_cli")
    (root / "crm.csv").write_text(GOOD_CSV, encoding="utf-8")
    (root / "consent.csv").write_text(EVENTS, encoding="utf-8")
    document = {"warehouse": {"path": "warehouse/cmdm.duckdb"}, "schema": SCHEMA, "sources": [csv_source()],
                "consent": CONSENT}
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    config = load_config(root / "cmdm.yaml")
    build_definitions(config).resolve_job_def(JOB_NAME).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    return config


def consent(config, *args: str) -> int:  # type: ignore[no-untyped-def]
    return main(["consent", *args, "--config", str(config.base_dir / "cmdm.yaml")])


def test_a_customer_found_by_email_shows_each_purpose_and_channel_and_the_history(project, capsys) -> None:  # type: ignore[no-untyped-def]
    assert consent(project, "--email", "ADA@example.org", "--history") == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["marketing", "sms", "false"] == next(line[:3] for line in lines if line[:2] == ["marketing", "sms"])
    assert ["marketing", "email", "true"] == next(line[:3] for line in lines if line[:2] == ["marketing", "email"])
    assert "history: 2 event(s)" in out and "withdrawn" in out
    assert "ada@example.org" not in out.lower()  # the subject's e-mail is never printed


def test_by_master_id_and_phone_agree(project, capsys) -> None:  # type: ignore[no-untyped-def]
    xref = open_warehouse(project).read("customer_xref")
    alan = xref.filter(xref["source_record_id"] == "2")["master_id"][0]
    assert consent(project, "--phone", "0161 496 0000", "--country", "GB") == 0
    by_phone = capsys.readouterr().out
    assert consent(project, "--master-id", alan) == 0
    assert capsys.readouterr().out == by_phone and "sharing" in by_phone


def test_summary_and_wrong_input(project, capsys) -> None:  # type: ignore[no-untyped-def]
    assert consent(project, "--summary") == 0
    summary = capsys.readouterr().out
    assert "(2 customers)" in summary and "marketing" in summary
    assert consent(project, "--master-id", "M-NOPE") == 1
    assert "no customer found" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        consent(project)
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as both:
        consent(project, "--summary", "--master-id", "x")
    assert both.value.code == 2
