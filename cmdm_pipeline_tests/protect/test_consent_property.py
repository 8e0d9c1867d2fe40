"""Property: ``consent_current`` always equals a plain replay of ``consent_history``.

The reference below is a loop over events, written to be obviously right rather than fast:
resolve each event as docs/concepts/consent.md says, follow merges, expand the all-channels value, and
keep per master × purpose × channel the event with the largest (time, is withdrawal, event id).
Hypothesis draws histories with timestamp ties, shared e-mails, records moved between masters
(splits) and chains of merges.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from cmdm_pipeline.protect.consent.update import replay, resolve, subject_index
from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline_tests.conftest import SCHEMA
from cmdm_pipeline_tests.protect.cases import T0, history, lineage

CHANNELS = ["email", "sms"]
ALL = "any"
MASTERS = [f"M{i}" for i in range(6)]
RECORDS = [str(i) for i in range(5)]
EMAILS = ["a@x.org", "b@x.org", "c@x.org"]
SCHEMA_OBJECT = CustomerSchema.model_validate(SCHEMA)
# Hypothesis caches what it learns under ./.hypothesis by default; tests never write into the working directory.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cmdm-hypothesis")


def reference(events: list[dict[str, Any]], record_master: dict[str, str], record_email: dict[str, str | None],
              merges: list[tuple[str, str]]) -> set[tuple[Any, ...]]:
    live = set(record_master.values())
    survivor = dict(merges)

    def follow(master: str) -> str:
        seen: set[str] = set()
        while master in survivor and master not in seen:
            seen.add(master)
            master = survivor[master]
        return master

    best: dict[tuple[str, str, str], tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for event in events:
        record = event["subject_source_record_id"]
        by_record = {record_master[record]} if record in record_master else set()
        by_email = {record_master[r] for r, e in record_email.items() if e is not None and e == event["subject_email"]}
        candidates = by_record or by_email
        earlier = follow(event["master_id"]) if event["master_id"] else None
        earlier = earlier if earlier in live else None
        if len(candidates) == 1:
            targets = candidates
        elif candidates:
            targets = candidates if event["action"] == "withdrawn" else candidates & {earlier}
        else:
            targets = {earlier} if earlier else set()
        channels = CHANNELS if event["channel"] == ALL else [event["channel"]]
        for master in targets:
            for channel in channels:
                key = (master, event["purpose"], channel)
                rank = (event["occurred_at"], event["action"] == "withdrawn", event["event_id"])
                if key not in best or rank > best[key][0]:
                    best[key] = (rank, event)
    return {(*key, e["action"] == "granted", e["occurred_at"], e["event_id"], e["channel"])
            for key, (_, e) in best.items()}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str | None], list[tuple[str, str]]]:
    record_master = draw(st.dictionaries(st.sampled_from(RECORDS), st.sampled_from(MASTERS), max_size=len(RECORDS)))
    record_email = {r: draw(st.sampled_from([None, *EMAILS])) for r in record_master}
    # Merges retire a master into a later one, so chains end (as they do: a retired id never returns).
    merges = draw(st.lists(st.tuples(st.integers(0, 4), st.integers(1, 5)).filter(lambda p: p[0] < p[1]), max_size=4,
                           unique_by=lambda p: p[0]))
    events = draw(st.lists(st.fixed_dictionaries({
        "subject_source_record_id": st.sampled_from([None, *RECORDS, "99"]),
        "subject_email": st.sampled_from([None, *EMAILS, "z@x.org"]),
        "master_id": st.sampled_from([None, *MASTERS]),
        "purpose": st.sampled_from(["marketing", "sharing"]),
        "channel": st.sampled_from([*CHANNELS, ALL]),
        "action": st.sampled_from(["granted", "withdrawn"]),
        "occurred_at": st.integers(0, 3).map(lambda h: T0 + dt.timedelta(hours=h)),  # few values: many ties
    }), max_size=12))
    for i, event in enumerate(events):
        event["event_id"] = f"E{draw(st.integers(0, 99)):02d}-{i}"  # ids in no particular order
        event["subject_source_system"] = "crm" if event["subject_source_record_id"] else None
    return events, record_master, record_email, [(MASTERS[a], MASTERS[b]) for a, b in merges]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_consent_current_equals_a_replay_of_the_history(scenario: tuple[Any, ...]) -> None:
    events, record_master, record_email, merges = scenario
    records = pl.DataFrame({"source_system": ["crm"] * len(record_master), "source_record_id": list(record_master),
                            "email": [record_email[r] for r in record_master], "phone": [None] * len(record_master)},
                           schema={"source_system": pl.String, "source_record_id": pl.String, "email": pl.String, "phone": pl.String})
    xref = records.select("source_system", "source_record_id",
                          pl.Series("master_id", list(record_master.values()), dtype=pl.String))
    index = subject_index(records, xref, SCHEMA_OBJECT)
    frame = history(*events)
    got = replay(resolve(frame, index, lineage(*merges), xref["master_id"].unique()), CHANNELS, ALL)
    rows = set(got.select("master_id", "purpose", "channel", "granted", "decided_at", "event_id", "event_channel").iter_rows())
    assert rows == reference(events, record_master, record_email, merges)
    assert got.select("master_id", "purpose", "channel").is_unique().all()
