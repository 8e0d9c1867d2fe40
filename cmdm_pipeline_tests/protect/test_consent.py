"""Consent resolution (precedence, ambiguity, merges, splits), the replay rules, and what counts as a change."""

from __future__ import annotations

import datetime as dt

import polars as pl

from cmdm_pipeline.protect.consent.update import (
    at_ingest,
    consent_changes,
    follow_merges,
    replay,
    resolve,
    subject_index,
)
from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline_tests.conftest import SCHEMA
from cmdm_pipeline_tests.protect.cases import T0, history, lineage, xref

CHANNELS = ["email", "sms", "post"]
SCHEMA_OBJECT = CustomerSchema.model_validate(SCHEMA)


def index(records: dict[str, tuple[str | None, str | None]], masters: dict[str, str]) -> pl.DataFrame:
    """Subject index of crm records: id -> (email, phone), id -> master."""
    frame = pl.DataFrame({"source_system": ["crm"] * len(records), "source_record_id": list(records),
                          "email": [v[0] for v in records.values()], "phone": [v[1] for v in records.values()]},
                         schema={"source_system": pl.String, "source_record_id": pl.String, "email": pl.String, "phone": pl.String})
    return subject_index(frame, xref(**masters), SCHEMA_OBJECT)


def applied(events: pl.DataFrame, idx: pl.DataFrame, lin: pl.DataFrame | None = None) -> set[tuple[str, str, str]]:
    live = idx.filter(pl.col("kind") == "source_record")["master_id"].unique()
    out = resolve(events, idx, lin if lin is not None else lineage(), live)
    return set(out.select("event_id", "master_id", "resolution").iter_rows())


def test_subject_index_names_every_way_to_a_master() -> None:
    idx = index({"1": ("ada@x.org", "+441"), "2": ("ada@x.org", None)}, {"1": "M1", "2": "M2"})
    assert set(idx.iter_rows()) == {
        ("source_record", "crm\x1f1", "M1"), ("source_record", "crm\x1f2", "M2"),
        ("email", "ada@x.org", "M1"), ("email", "ada@x.org", "M2"), ("phone", "+441", "M1")}


def test_the_record_comes_first_then_the_email_then_the_phone() -> None:
    idx = index({"1": ("ada@x.org", "+441"), "2": ("bob@x.org", "+442"), "3": (None, "+443")}, {"1": "M1", "2": "M2", "3": "M3"})
    events = history(
        {"subject_source_system": "crm", "subject_source_record_id": "1", "subject_email": "bob@x.org"},
        {"subject_source_system": "crm", "subject_source_record_id": "404", "subject_email": "bob@x.org"},
        {"subject_email": "nobody@x.org", "subject_phone": "+443"},
        {"subject_email": "nobody@x.org"},
    )
    assert applied(events, idx) == {("E001", "M1", "source_record"), ("E002", "M2", "email"), ("E003", "M3", "phone")}


def test_an_ambiguous_withdrawal_reaches_every_candidate_a_grant_none() -> None:
    idx = index({"1": ("fam@x.org", None), "2": ("fam@x.org", None)}, {"1": "M1", "2": "M2"})
    events = history({"subject_email": "fam@x.org", "action": "withdrawn"}, {"subject_email": "fam@x.org"},
                     {"subject_email": "fam@x.org", "master_id": "M2"})  # resolved to M2 at ingest, before M1 shared it
    assert applied(events, idx) == {("E001", "M1", "all_candidates"), ("E001", "M2", "all_candidates"),
                                    ("E003", "M2", "ingest_master")}
    rows = at_ingest(events.drop("master_id", "resolution", "candidate_masters", "run_id", "ingested_at"), idx, "r9", T0)
    assert rows.select("master_id", "resolution", "candidate_masters", "run_id").rows() == [(None, "ambiguous", 2, "r9")] * 3


def test_follow_merges_follows_chains() -> None:
    ids = pl.DataFrame({"master_id": ["A", "B", "C", "D"]})
    assert follow_merges(ids, lineage(("A", "B"), ("B", "C")))["master_id"].to_list() == ["C", "C", "C", "D"]


def test_consent_follows_a_merge_when_the_subject_no_longer_resolves() -> None:
    # The customer changed e-mail: the old address finds nobody, the master it resolved to was merged into M1.
    idx = index({"1": ("new@x.org", None)}, {"1": "M1"})
    events = history({"subject_email": "old@x.org", "master_id": "M2"}, {"subject_email": "old@x.org", "master_id": "M9"})
    assert applied(events, idx, lineage(("M2", "M1"))) == {("E001", "M1", "ingest_master")}


def test_on_a_split_each_record_keeps_its_own_events() -> None:
    # Records 1 and 2 were master M1; a steward split them: record 2 is now M5.
    idx = index({"1": ("a@x.org", None), "2": ("b@x.org", None)}, {"1": "M1", "2": "M5"})
    events = history({"subject_source_system": "crm", "subject_source_record_id": "2", "master_id": "M1"},
                     {"subject_email": "a@x.org", "master_id": "M1"})
    assert applied(events, idx, lineage(splits=(("M5", "M1"),))) == {("E001", "M5", "source_record"), ("E002", "M1", "email")}


def event(master: str, at: int, action: str = "granted", channel: str = "email", **other: str) -> dict[str, object]:
    return {"master_id": master, "occurred_at": T0 + dt.timedelta(hours=at), "action": action, "channel": channel,
            "resolution": "email", **other}


def current(*events: dict[str, object]) -> set[tuple[object, ...]]:
    frame = history(*events)
    return set(replay(frame, CHANNELS, "any").select("master_id", "purpose", "channel", "granted", "event_id").iter_rows())


def test_the_latest_event_wins_and_a_withdrawal_wins_a_tie() -> None:
    assert current(event("M1", 1), event("M1", 2, "withdrawn")) == {("M1", "marketing", "email", False, "E002")}
    assert current(event("M1", 2, "withdrawn"), event("M1", 1)) == {("M1", "marketing", "email", False, "E001")}
    assert current(event("M1", 1), event("M1", 1, "withdrawn"), event("M1", 1)) == {("M1", "marketing", "email", False, "E002")}


def test_all_channels_counts_on_each_channel_until_a_later_event_there() -> None:
    got = current(event("M1", 1, channel="any"), event("M1", 2, "withdrawn", channel="sms"), event("M2", 1, purpose="sharing"))
    assert got == {("M1", "marketing", "email", True, "E001"), ("M1", "marketing", "sms", False, "E002"),
                   ("M1", "marketing", "post", True, "E001"), ("M2", "sharing", "email", True, "E003")}


def test_no_event_no_row() -> None:
    assert replay(history(), CHANNELS, "any").height == 0


def test_a_change_is_a_new_deciding_event() -> None:
    before = replay(history(event("M1", 1), event("M2", 1), event("M3", 1)), CHANNELS, None)
    after = replay(history(event("M1", 1), event("M2", 1), event("M2", 2, "withdrawn"), event("M4", 3)), CHANNELS, None)
    changes = consent_changes(before, after).select("master_id", "before", "after").rows()
    assert changes == [("M2", "granted", "withdrawn"), ("M3", "granted", "none"), ("M4", "none", "granted")]
    assert consent_changes(None, before).height == 3
