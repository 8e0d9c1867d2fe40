"""Consent events in: typing, bad rows quarantined naming row and column, duplicates, append-only ingest."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from cmdm_pipeline.config import ConfigError
from cmdm_pipeline.protect.consent.events import ingest, parse_consent_events, read_consent_events
from cmdm_pipeline.protect.consent.update import HISTORY_COLUMNS
from cmdm_pipeline.stages.extract import SourceError

HEADER = "EventId,Email,Phone,System,RecordId,Purpose,Channel,Action,At,Basis,Policy,Evidence\n"
COLUMNS = {"EventId": "event_id", "Email": "email", "Phone": "phone", "System": "source_system",
           "RecordId": "source_record_id", "Purpose": "purpose", "Channel": "channel", "Action": "action",
           "At": "occurred_at", "Basis": "lawful_basis", "Policy": "policy_version", "Evidence": "evidence_ref"}
GOOD = HEADER + (
    "e1, Ada@Example.org ,,,,Marketing,EMAIL,Granted,2026-01-01T10:00:00Z,consent,p1,ev1\n"
    "e2,,020 7946 0018,,,marketing,sms,opt-out,2026-01-01 12:00:00+01:00,Legitimate interests,p1,ev2\n"
    ",,,crm,7,profiling,any,withdrawn,2026-01-02T09:30:00.250,,,\n"
)


def consent(path: str = "consent.csv", **source: Any) -> dict[str, Any]:
    return {"source": {"kind": "csv", "path": path, "columns": dict(COLUMNS), "default_country": "GB", **source}}


def parsed(make_project, text: str, **source: Any):  # type: ignore[no-untyped-def]
    config = make_project(files={"crm.csv": "Id,First\n", "consent.csv": text}, consent=consent(**source))
    assert config.consent is not None
    return parse_consent_events(read_consent_events(config), config.consent, ["crm"])


def test_events_are_typed_and_standardised(make_project) -> None:  # type: ignore[no-untyped-def]
    events = parsed(make_project, GOOD)
    assert events.issues.height == 0
    rows = events.valid.sort("source_row_number").to_dicts()
    assert [r["subject_email"] for r in rows] == ["ada@example.org", None, None]
    assert rows[1]["subject_phone"] == "+442079460018"
    assert [(r["purpose"], r["channel"], r["action"]) for r in rows] == [
        ("marketing", "email", "granted"), ("marketing", "sms", "withdrawn"), ("profiling", "any", "withdrawn")]
    utc = dt.UTC
    assert [r["occurred_at"] for r in rows] == [
        dt.datetime(2026, 1, 1, 10, tzinfo=utc), dt.datetime(2026, 1, 1, 11, tzinfo=utc),
        dt.datetime(2026, 1, 2, 9, 30, 0, 250000, tzinfo=utc)]
    assert rows[1]["lawful_basis"] == "legitimate_interests"
    assert (rows[2]["subject_source_system"], rows[2]["subject_source_record_id"]) == ("crm", "7")
    assert rows[2]["event_id"].startswith("sha256:") and len(rows[2]["event_hash"]) == 64


BAD = HEADER + (
    "b1,ada@example.org,,,,newsletter,email,granted,2026-01-01T10:00:00Z,,,\n"
    "b2,ada@example.org,,,,marketing,fax,granted,2026-01-01T10:00:00Z,,,\n"
    "b3,ada@example.org,,,,marketing,email,maybe,2026-01-01T10:00:00Z,,,\n"
    "b4,ada@example.org,,,,marketing,email,granted,yesterday at noon,,,\n"
    "b5,,,,,marketing,email,granted,2026-01-01T10:00:00Z,,,\n"
    "b6,ada(at)example.org,,,,marketing,email,granted,2026-01-01T10:00:00Z,,,\n"
    "b7,,,legacy,9,marketing,email,granted,2026-01-01T10:00:00Z,,,\n"
    "b8,,,,9,marketing,email,granted,2026-01-01T10:00:00Z,,,\n"
    "b9,ada@example.org,,,,marketing,email,granted,2026-01-01T10:00:00Z,gut feeling,,\n"
    "b10,ada@example.org,,,,,email,,2026-01-01T10:00:00Z,,,\n"
    "b11,ada@example.org,,,,marketing\n"
)


def test_bad_rows_are_quarantined_naming_row_and_column_never_the_value(make_project) -> None:  # type: ignore[no-untyped-def]
    events = parsed(make_project, BAD)
    assert events.valid.height == 0
    rules = dict(events.issues.group_by("source_row_number").agg(pl.col("rule").sort()).sort("source_row_number").iter_rows())
    assert rules == {
        1: ["purpose.unknown"], 2: ["channel.unknown"], 3: ["action.unknown"], 4: ["occurred_at.invalid"],
        5: ["subject.missing"], 6: ["email.invalid"], 7: ["source_system.unknown"], 8: ["subject.incomplete"],
        9: ["lawful_basis.unknown"], 10: ["action.missing", "purpose.missing"], 11: ["input.unparsable_row"],
    }
    reasons = dict(events.issues.select("source_row_number", "reason").iter_rows())
    assert reasons[4] == ("row 4, column 'At': not a timestamp in the formats "
                          "['%Y-%m-%dT%H:%M:%S%.f%z', '%Y-%m-%d %H:%M:%S%.f%z', '%Y-%m-%dT%H:%M:%S%.f', '%Y-%m-%d %H:%M:%S%.f']")
    assert reasons[1].startswith("row 1, column 'Purpose': not a declared purpose (marketing, profiling, sharing)")
    assert reasons[6] == "row 6, column 'Email': not a valid e-mail address"
    assert reasons[11] == "row 11, could not be parsed: line 12: row has 6 fields, the header has 12"
    text = " ".join(events.issues["reason"])
    for value in ("newsletter", "fax", "maybe", "yesterday", "ada", "legacy", "gut feeling"):
        assert value not in text


def test_a_missing_column_fails_naming_the_file_and_the_columns(make_project) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SourceError, match=r"consent source \(.*consent\.csv\): mapped column\(s\) \['Purpose'\] not found"):
        parsed(make_project, GOOD.replace("Purpose", "Why", 1))
    with pytest.raises(SourceError, match=r"consent\.csv\): file not found"):
        parsed(make_project, GOOD, path="elsewhere/consent.csv")


def test_other_source_kinds_use_the_same_readers(make_project) -> None:  # type: ignore[no-untyped-def]
    line = '{"id": "j1", "who": {"email": "Ada@example.org"}, "p": "sharing", "c": "post", "a": "grant", "t": "2026-02-01T00:00:00Z"}\n'
    config = make_project(files={"crm.csv": "Id\n", "c.jsonl": line + "not json\n"}, consent={"source": {
        "kind": "jsonl", "path": "c.jsonl",
        "columns": {"id": "event_id", "who.email": "email", "p": "purpose", "c": "channel", "a": "action", "t": "occurred_at"}}})
    events = parse_consent_events(read_consent_events(config), config.consent, ["crm"])  # type: ignore[arg-type]
    assert events.valid.select("event_id", "subject_email", "action").rows() == [("j1", "ada@example.org", "granted")]
    assert events.issues.select("source_row_number", "rule").rows() == [(2, "input.unparsable_row")]


def test_copies_and_id_conflicts_in_one_file(make_project) -> None:  # type: ignore[no-untyped-def]
    row = "x1,ada@example.org,,,,marketing,email,granted,2026-01-01T10:00:00Z,,,\n"
    # Row 2: the same event (the e-mail only written differently); rows 3 and 4 share an id, not content.
    text = HEADER + row + row.replace("ada@", " ADA@") + row.replace("x1", "x2") + row.replace("x1", "x2").replace("email,granted", "sms,granted")
    events = parsed(make_project, text)
    assert events.valid["source_row_number"].to_list() == [1]
    issues = events.issues.sort("source_row_number", "rule").select("source_row_number", "rule", "reason").rows()
    assert issues[0] == (2, "event.duplicate", "row 2, same event as row 1")
    conflict = "column 'EventId': the same id as rows 3, 4 with different content"
    assert issues[1:] == [(3, "event.duplicate", "row 3, same event as row 1"), (3, "event_id.conflict", f"row 3, {conflict}"),
                          (4, "event_id.conflict", f"row 4, {conflict}")]


def test_ingest_is_append_only_and_idempotent(make_project) -> None:  # type: ignore[no-untyped-def]
    events = parsed(make_project, GOOD)
    first = ingest(events, pl.DataFrame(schema=HISTORY_COLUMNS), "r1")
    assert (first.new.height, first.already, first.quarantined.height) == (3, 0, 0)
    history = first.new.with_columns(pl.lit(None, dtype=pl.String).alias("master_id"))
    again = ingest(parsed(make_project, GOOD), history, "r2")
    assert (again.new.height, again.already, again.quarantined.height) == (0, 3, 0)
    # The same content under a new id is the same event; an old id with new content is refused.
    changed = GOOD.replace("e1,", "e9,").replace("e2,,020 7946 0018,,,marketing,sms", "e2,,020 7946 0018,,,marketing,post")
    later = ingest(parsed(make_project, changed), history, "r3")
    assert (later.new.height, later.already) == (0, 2)
    assert later.quarantined.select("source_row_number", "rules_broken", "run_id").rows() == [(2, ["event_id.conflict"], "r3")]
    assert later.quarantined["reason"][0] == (
        "row 2, event id already in consent_history with different content (the history is append-only)")


def test_consent_config_is_checked(make_project) -> None:  # type: ignore[no-untyped-def]
    def load(**changes: Any) -> None:
        block = consent()
        block["source"]["columns"] = {k: v for k, v in COLUMNS.items() if v not in changes.get("drop", ())}
        block.update(changes.get("top", {}))
        make_project(files={"crm.csv": "Id\n"}, consent=block)

    with pytest.raises(ConfigError, match="columns must map purpose"):
        load(drop=("purpose",))
    with pytest.raises(ConfigError, match="map both or neither"):
        load(drop=("source_system",))
    with pytest.raises(ConfigError, match="must map a subject"):
        load(drop=("email", "phone", "source_system", "source_record_id"))
    with pytest.raises(ConfigError, match="must not also be one of `channels`"):
        load(top={"channels": ["email", "any"]})
    with pytest.raises(ConfigError, match="consent.source"):
        make_project(files={"crm.csv": "Id\n"}, consent={"source": {"kind": "csv", "columns": dict(COLUMNS)}})
