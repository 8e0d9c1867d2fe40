"""Erasure without Dagster: request parsing, resolution, own identifiers, tombstones, the file rebuild, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.cli import main
from cmdm_pipeline.protect.erasure import (
    Known, contact_frame, erased_rows, index_requests, resolve_request, tombstones_of,
)
from cmdm_pipeline.protect.erasure_apply import open_keys
from cmdm_pipeline.protect.erasure_requests import (
    REQUEST_COLUMNS, parse_source_requests, read_requests, read_source_requests, record_request, requests_file,
)
from cmdm_pipeline.protect.rebuild import rebuild_duckdb_file, wal_path
from cmdm_pipeline.stages.extract import SourceError, extract
from cmdm_pipeline_tests.conftest import csv_source

NOW = dt.datetime(2026, 6, 30, tzinfo=dt.UTC)
ERASURE = {"source": {"kind": "csv", "path": "erasure.csv", "columns": {
    "Ticket": "request_id", "Email": "email", "Phone": "phone", "Master": "master_id", "System": "source_system",
    "Record": "source_record_id", "When": "requested_at"}}}
HEADER = "Ticket,Email,Phone,Master,System,Record,When\n"


@pytest.fixture
def project(make_project):  # type: ignore[no-untyped-def]
    def make(requests: str = HEADER, **settings):  # type: ignore[no-untyped-def]
        return make_project(files={"crm.csv": "Id,First,Last,Email,Phone,Zip,Country,DOB\n", "erasure.csv": requests},
                            erasure=ERASURE, **settings)
    return make


def test_bad_request_rows_are_held_back_with_reasons_naming_row_and_column(project) -> None:  # type: ignore[no-untyped-def]
    config = project(HEADER
                     + "R1, Ada@Example.org ,,,,,2026-06-01T10:00:00Z\n"  # fine: standardised
                     + ",ada@example.org,,,,,\n"  # no id
                     + "R3,,,,,,\n"  # no subject
                     + "R4,,,,crm,,\n"  # a system without a record
                     + "R5,,,,erp,9,\n"  # not a configured source
                     + "R6,not-an-email,,,,,\n"
                     + "R7,,,,,,yesterday\n"
                     + "R1,grace@example.com,,,,,\n")  # the same id again
    requests = read_requests(config, ["crm"])
    assert requests.valid.select("request_id", "email").rows() == [("R1", "ada@example.org")]
    held = requests.quarantine("run-1")
    assert held.select("source_row_number", "request_id", "rules_broken").rows() == [
        (2, None, ["request_id.missing"]), (3, "R3", ["subject.missing"]), (4, "R4", ["subject.incomplete"]),
        (5, "R5", ["source_system.unknown"]), (6, "R6", ["email.invalid"]),
        (7, "R7", ["requested_at.invalid", "subject.missing"]), (8, "R1", ["request_id.duplicate"])]
    assert all(reason.startswith("row ") for reason in held["reason"])
    assert "ada@" not in " ".join(held["reason"]) and "not-an-email" not in " ".join(held["reason"])


def test_a_requests_source_without_a_mapped_column_fails_naming_it(project) -> None:  # type: ignore[no-untyped-def]
    config = project("Ticket,Email\nR1,ada@example.org\n")
    with pytest.raises(SourceError, match=r"mapped column\(s\) \['Phone', 'Master', 'System', 'Record', 'When'\]"):
        read_source_requests(config)


def test_the_config_insists_on_an_id_and_a_subject(make_project) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="request_id"):
        make_project(erasure={"source": {"kind": "csv", "path": "e.csv", "columns": {"Email": "email"}}})
    with pytest.raises(ConfigError, match="a subject"):
        make_project(erasure={"source": {"kind": "csv", "path": "e.csv", "columns": {"Id": "request_id"}}})


def _known(config, keys) -> Known:  # type: ignore[no-untyped-def]
    """Four records: Ada (crm 1 + shop 10, master A), her household (crm 2, master B) sharing a landline,
    a quarantined copy of Ada without a master (crm 9) and a row without an id holding Ada's e-mail."""
    standardised = pl.DataFrame({
        "source_system": ["crm", "shop", "crm", "crm", "shop"],
        "source_record_id": ["1", "10", "2", "9", None],
        "source_row_number": [1, 1, 2, 3, 2],
        "email": ["ada@example.org", "ada@example.org", "bob@example.org", "ada.l@example.org", "ada@example.org"],
        "phone": ["+441614960000", None, "+441614960000", None, None],
    })
    xref = pl.DataFrame({"source_system": ["crm", "shop", "crm"], "source_record_id": ["1", "10", "2"],
                         "master_id": ["A", "A", "B"]})
    lineage = pl.DataFrame({"event": ["merged"], "master_id": ["OLD"], "related_master_id": ["A"]})
    consent = pl.DataFrame({"event_id": ["e1", "e2", "e3"], "subject_email": ["ada@example.org", None, "bob@example.org"],
                            "subject_phone": [None, "+441614960000", None], "subject_source_system": [None, None, None],
                            "subject_source_record_id": [None, None, None], "master_id": [None, "B", "B"]},
                           schema_overrides={"subject_source_system": pl.String, "subject_source_record_id": pl.String})
    from cmdm_pipeline.protect.blind_index import blind_index

    consent = consent.with_columns(blind_index(consent["subject_email"], "email", keys).alias("email_index"),
                                   blind_index(consent["subject_phone"], "phone", keys).alias("phone_index"))
    quarantine = pl.DataFrame({"run_id": ["r0", "r0"], "source_row_number": [4, 5],
                               "source_values": ['{"Email":"ADA@example.org"}', '{"Email":"x@example.org"}']})
    return Known(contact_frame(standardised, config, keys), standardised.select("source_system", "source_record_id", "source_row_number"),
                 xref, lineage, consent, quarantine)


def _request(keys, **fields) -> dict:  # type: ignore[no-untyped-def]
    row = {c: None for c in REQUEST_COLUMNS} | {"request_id": "R", "origin": "source", "source_row_number": 1} | fields
    return index_requests(pl.DataFrame([row], schema=REQUEST_COLUMNS), keys).row(0, named=True)


def test_resolution_finds_the_person_their_history_and_their_own_identifiers(project) -> None:  # type: ignore[no-untyped-def]
    config = project()
    keys = open_keys(config)
    known = _known(config, keys)
    ada = resolve_request(_request(keys, email="ada@example.org"), known)
    assert (ada.status, ada.resolved_by, ada.masters) == ("erased", "email", ["A", "OLD"])  # the merged-in id too
    assert ada.records.rows() == [("crm", "1"), ("shop", "10")]
    assert ada.unkeyed_rows.rows() == [("shop", 2)]  # the row without an id that has her e-mail
    assert ada.own_emails == ["ada@example.org"] and ada.own_phone_index == []  # the landline is the household's
    assert ada.consent_events == ["e1"] and ada.consent_quarantine_rows.rows() == [("r0", 4)]
    assert {"master/A", "master/OLD", "record/crm/1", "record/shop/10", "record/shop/#row2", "consent/e1",
            "consent-quarantine/r0|4"} == set(ada.owners())

    by_record = resolve_request(_request(keys, source_system="shop", source_record_id="10"), known)
    assert (by_record.resolved_by, by_record.masters, by_record.records.height) == ("source_record", ["A", "OLD"], 2)
    by_master = resolve_request(_request(keys, master_id="OLD"), known)  # a retired id follows its merge
    assert (by_master.resolved_by, by_master.masters) == ("master_id", ["A", "OLD"])
    quarantined_only = resolve_request(_request(keys, source_system="crm", source_record_id="9"), known)
    assert (quarantined_only.masters, quarantined_only.records.rows()) == ([], [("crm", "9")])

    shared = resolve_request(_request(keys, phone="+441614960000"), known)
    assert (shared.status, shared.candidates, shared.owners()) == ("ambiguous", 2, [])  # the household is not erased
    assert resolve_request(_request(keys, email="nobody@example.org"), known).status == "not_found"
    assert resolve_request(_request(keys, master_id="ZZZ"), known).status == "not_found"


def test_tombstones_hold_digests_only_and_drop_the_rows_they_match(project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = project()
    keys = open_keys(config)
    ada = resolve_request(_request(keys, email="ada@example.org"), _known(config, keys))
    stones = tombstones_of(ada, keys, True, "run-1", NOW)
    assert sorted(stones["kind"].to_list()) == ["email", "record", "record"]
    assert stones["tombstone"].bin.size().to_list() == [16, 16, 16]
    assert b"ada" not in b"".join(stones["tombstone"].to_list())
    # A source that still holds Ada under her old id, and under a new id with her e-mail typed differently.
    (tmp_path / "again.csv").write_text(
        "Id,First,Last,Email,Phone,Zip,Country,DOB\n1,Ada,Lovelace,,,,,\n55,Ada,L, ADA@example.ORG,,,,\n"
        "2,Bob,Lovelace,bob@example.org,0161 496 0000,,GB,\n", encoding="utf-8")
    source = config.sources[0].model_copy(update={"path": tmp_path / "again.csv"})
    raw = extract(source, config, NOW)
    assert erased_rows(raw, source, config, stones, keys).to_list() == [True, True, False]
    records_only = tombstones_of(ada, keys, False, "run-1", NOW)
    assert erased_rows(raw, source, config, records_only, keys).to_list() == [True, False, False]


def test_a_rebuilt_file_keeps_every_table_and_view_and_loses_deleted_bytes(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT CASE WHEN i = 7 THEN 'zebulon-canary' ELSE 'row-' || i END AS v, i "
                    "FROM range(2000) r(i)")
        con.execute("CREATE VIEW v AS SELECT count(*) AS n FROM t")
        con.execute("DELETE FROM t WHERE v = 'zebulon-canary'")
        con.execute("CHECKPOINT")
        con.execute("VACUUM")
    assert b"zebulon-canary" in path.read_bytes()  # DELETE, CHECKPOINT and VACUUM left the bytes
    seconds = rebuild_duckdb_file(path)
    assert seconds >= 0 and not wal_path(path).exists()
    assert b"zebulon-canary" not in path.read_bytes()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.sql("SELECT n FROM v").fetchall() == [(1999,)]
        assert con.sql("SELECT count(*) FROM t WHERE v = 'row-8'").fetchall() == [(1,)]


def test_cmdm_erase_records_blind_indexes_never_the_address(project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = project()
    path = config.base_dir / "cmdm.yaml"
    assert main(["erase", "--config", str(path), "--email", " Ada@Example.org", "--request-id", "T-9"]) == 0
    assert main(["erase", "--config", str(path), "--record", "crm:42"]) == 0
    assert main(["erase", "--config", str(path), "--record", "erp:42"]) == 2  # not a configured source
    assert main(["erase", "--config", str(path), "--email", "x@example.org", "--request-id", "T-9"]) == 2  # id used
    assert main(["erase", "--config", str(path)]) == 2  # no subject
    stored = requests_file(config).read_text(encoding="utf-8")
    assert "ada" not in stored.lower() and "T-9" in stored and "crm,42" in stored
    assert oct(requests_file(config).stat().st_mode & 0o777) == "0o600"
    requests = read_requests(config, ["crm"])
    assert requests.valid.select("request_id", "origin").rows()[-2:] == [("T-9", "cli"), (requests.valid["request_id"][-1], "cli")]
    assert requests.valid["email_index"][-2] == index_requests(
        pl.DataFrame([{c: None for c in REQUEST_COLUMNS} | {"email": "ada@example.org"}], schema=REQUEST_COLUMNS),
        open_keys(config))["email_index"][0]
    assert main(["erase", "--config", str(path), "--log"]) == 1  # no run yet: nothing to show
    assert "ada" not in capsys.readouterr().out.lower()


def test_cmdm_erase_help_lists_every_option(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["erase", "--help"])
    out = capsys.readouterr().out
    for option in ("--email", "--phone", "--master-id", "--record SYSTEM:ID", "--country", "--request-id", "--log",
                   "--config", "exit codes"):
        assert option in out, option


def test_record_request_refuses_an_empty_request(project) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.erasure_requests import ErasureRequestError

    with pytest.raises(ErasureRequestError, match="name the subject"):
        record_request(project())
