"""Erasure without Dagster: request parsing, resolution, own identifiers, tombstones, the file rebuild, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.cli import main
from cmdm_pipeline.protect.erasure.apply import open_keys
from cmdm_pipeline.protect.erasure.rebuild import rebuild_duckdb_file, wal_path
from cmdm_pipeline.protect.erasure.requests import (
    REQUEST_COLUMNS,
    read_requests,
    read_source_requests,
    record_request,
    requests_file,
)
from cmdm_pipeline.protect.erasure.subjects import (
    Known,
    contact_frame,
    erased_rows,
    index_requests,
    quarantine_subjects,
    resolve_request,
    tombstones_of,
)
from cmdm_pipeline.stages.extract import SourceError, extract

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
    from cmdm_pipeline.protect.keys.blind_index import blind_index

    consent = consent.with_columns(blind_index(consent["subject_email"], "email", keys).alias("email_index"),
                                   blind_index(consent["subject_phone"], "phone", keys).alias("phone_index"))
    quarantine = pl.DataFrame({"run_id": ["r0", "r0"], "source_row_number": [4, 5],
                               "source_values": ['{"Email":"ADA@example.org"}', '{"Email":"x@example.org"}']})
    return Known(contact_frame(standardised, config, keys), standardised.select("source_system", "source_record_id", "source_row_number"),
                 xref, lineage, consent, quarantine_subjects(quarantine, config, keys))


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
    assert b"ada@" not in b"".join(stones["tombstone"].to_list())  # random digests may hold "ada" by chance
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
    # Not "ada" alone: a generated request id is hex and may contain it.
    assert "ada@" not in stored.lower() and "example.org" not in stored.lower()
    assert "T-9" in stored and "crm,42" in stored
    assert oct(requests_file(config).stat().st_mode & 0o777) == "0o600"
    requests = read_requests(config, ["crm"])
    assert requests.valid.select("request_id", "origin").rows()[-2:] == [("T-9", "cli"), (requests.valid["request_id"][-1], "cli")]
    assert requests.valid["email_index"][-2] == index_requests(
        pl.DataFrame([{c: None for c in REQUEST_COLUMNS} | {"email": "ada@example.org"}], schema=REQUEST_COLUMNS),
        open_keys(config))["email_index"][0]
    assert main(["erase", "--config", str(path), "--log"]) == 1  # no run yet: nothing to show
    assert "ada@" not in capsys.readouterr().out.lower()  # "ada" alone may occur in a hex request id


def test_cmdm_erase_help_lists_every_option(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["erase", "--help"])
    out = capsys.readouterr().out
    for option in ("--email", "--phone", "--master-id", "--record SYSTEM:ID", "--country", "--request-id", "--log",
                   "--config", "exit codes"):
        assert option in out, option


def test_record_request_refuses_an_empty_request(project) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.erasure.requests import ErasureRequestError

    with pytest.raises(ErasureRequestError, match="name the subject"):
        record_request(project())


CONSENT = {"source": {"kind": "csv", "path": "consent.csv", "default_country": "GB", "columns": {
    "Email": "email", "Phone": "phone", "System": "source_system", "RecordId": "source_record_id",
    "Purpose": "purpose", "Channel": "channel", "Action": "action", "At": "occurred_at"}}}


def _quarantined(*rows: dict[str, str]) -> pl.DataFrame:
    """consent_quarantine rows of run r0, numbered from 1, each row as read (JSON) as the consent stage stores it."""
    import json

    return pl.DataFrame({"run_id": ["r0"] * len(rows), "source_row_number": list(range(1, len(rows) + 1)),
                         "source_values": [json.dumps(r) for r in rows]})


def test_quarantined_consent_rows_are_found_by_email_phone_or_record(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(files={"crm.csv": "Id,First,Last,Email,Phone,Zip,Country,DOB\n", "consent.csv": "Email\n"},
                          consent=CONSENT)
    keys = open_keys(config)
    standardised = pl.DataFrame({
        "source_system": ["crm", "shop", "crm"], "source_record_id": ["1", "10", "2"], "source_row_number": [1, 1, 2],
        "email": ["ada@example.org", None, "bob@example.org"],
        "phone": ["+442079460018", "+441614960000", "+441614960000"],  # her mobile; the household landline
    })
    xref = pl.DataFrame({"source_system": ["crm", "shop", "crm"], "source_record_id": ["1", "10", "2"],
                         "master_id": ["A", "A", "B"]})
    quarantine = _quarantined(
        {"Email": " ADA@example.org", "Purpose": "profling"},  # 1: her e-mail
        {"Phone": "020 7946 0018", "Purpose": "profling"},  # 2: her own phone, typed nationally
        {"System": "SHOP", "RecordId": " 10 ", "Purpose": "profling"},  # 3: one of her records, as typed
        {"unparsed": "x;+44 (20) 7946-0018;;granted"},  # 4: unparsable, her phone in the text
        {"Phone": "+44 161 496 0000", "Purpose": "profling"},  # 5: the shared landline: nobody's own
        {"Email": "bob@example.org", "System": "crm", "RecordId": "2"},  # 6: somebody else
    )
    known = Known(contact_frame(standardised, config, keys), standardised.select("source_system", "source_record_id",
                  "source_row_number"), xref, pl.DataFrame(schema={"event": pl.String, "master_id": pl.String,
                  "related_master_id": pl.String}), pl.DataFrame(schema={"event_id": pl.String, "email_index": pl.Binary,
                  "phone_index": pl.Binary, "subject_source_system": pl.String, "subject_source_record_id": pl.String,
                  "master_id": pl.String}), quarantine_subjects(quarantine, config, keys))
    ada = resolve_request(_request(keys, source_system="crm", source_record_id="1"), known)
    assert ada.own_phones == ["+442079460018"]
    assert ada.consent_quarantine_rows.rows() == [("r0", 1), ("r0", 2), ("r0", 3), ("r0", 4)]
    assert {"consent-quarantine/r0|2", "consent-quarantine/r0|3", "consent-quarantine/r0|4"} <= set(ada.owners())
    # Each way on its own: without the e-mail, row 1 goes; without the phones, rows 2 and 4; without the record, row 3.
    from cmdm_pipeline.protect.erasure.subjects import quarantine_rows_of

    def found(**changes) -> list[int]:  # type: ignore[no-untyped-def]
        import dataclasses

        return quarantine_rows_of(dataclasses.replace(ada, **changes), known.consent_quarantine)["source_row_number"].to_list()

    assert found(own_email_index=[], own_emails=[]) == [2, 3, 4]
    assert found(own_phone_index=[], own_phones=[]) == [1, 3]
    assert found(records=ada.records.clear()) == [1, 2, 4]


def test_steward_decisions_naming_the_subject_are_listed_and_their_audit_ids_found(project) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.audit import steward_events
    from cmdm_pipeline.protect.erasure.apply import notifications_of, steward_decisions
    from cmdm_pipeline.stages.decisions import read_decisions

    config = project(matching={"decisions": "decisions.csv"})
    (config.base_dir / "decisions.csv").write_text(
        "source_system_l,source_record_id_l,source_system_r,source_record_id_r,decision,decided_by,decided_at,reason\n"
        "shop,10,crm,2,same,steward@corp.example,2026-06-01T09:00:00,looked alike\n"  # names Ada's shop record (right-hand side once ordered)
        "crm,2,shop,10,Different ,steward@corp.example,2026-06-02T09:00:00,checked\n"  # supersedes it
        "crm,2,crm,3,different,steward@corp.example,2026-06-01T09:00:00,\n", encoding="utf-8")  # nobody of hers
    keys = open_keys(config)
    known = dataclasses_replace(_known(config, keys), decisions=steward_decisions(config))
    ada = resolve_request(_request(keys, email="ada@example.org"), known)
    assert ada.decision_records == ["shop:10"]
    # Both decisions on her pair: the one in force and the superseded one (logged while it was in force).
    in_force = read_decisions(config.base_dir / "decisions.csv")
    logged = steward_events(in_force, pl.DataFrame({"source_system": ["crm", "shop", "crm"], "source_record_id": ["2", "10", "3"],
                                                    "master_id": ["B", "A", "C"]}), "r1", NOW)
    hers = logged.filter(pl.col("detail").str.contains('"related_master_id":"A"'))["audit_id"].to_list()
    others = logged.filter(pl.col("detail").str.contains('"related_master_id":"C"'))["audit_id"].to_list()
    assert len(hers) == len(others) == 1
    assert hers[0] in ada.decision_audit_ids and others[0] not in ada.decision_audit_ids
    assert len(ada.decision_audit_ids) == 2
    notes = notifications_of(ada, "run-1", NOW)
    assert notes.select("source_system", "source_record_id").rows() == [("crm", "1"), ("shop", "10"), ("match_decisions", "shop:10")]
    assert notes["notification_id"].n_unique() == notes.height


def dataclasses_replace(known: Known, **changes) -> Known:  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(known, **changes)


@pytest.mark.parametrize("owners", [
    [],
    ["master/M1", "record/crm/7", "record/shop/#row3", "consent/e1", "consent-quarantine/run-1|4"],
    ["record/crm/a/b", "consent-quarantine/r|x|12"],  # separators inside ids stay in the id
])
def test_the_owners_of_an_interrupted_erasure_name_the_same_rows_again(owners: list[str]) -> None:
    from cmdm_pipeline.protect.erasure.subjects import subject_of_owners

    assert sorted(subject_of_owners(owners).owners()) == sorted(owners)
