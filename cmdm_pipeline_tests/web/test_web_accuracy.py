"""The accuracy page: steward decisions as labels, the master and the model's scores judged against them.

Unit tests on tiny frames whose figures are worked out by hand in the comments; then the page through the
TestClient, below and above the minimum of labels, with no personal value on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import polars as pl
import pytest
from fastapi.testclient import TestClient

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.decision_store import RecordKey
from cmdm_pipeline.stages.decisions import DECISION_COLUMNS
from cmdm_pipeline.web import accuracy
from cmdm_pipeline.web.app import create_app
from cmdm_pipeline.web.snapshot import snapshot_from_frames
from cmdm_pipeline_tests.web.conftest import MODEL, T0, WEB_SETTINGS, Workbench, frames, web_block

PUBLISHED = "2026-06-01T00:00:00+00:00"
BEFORE, AFTER = "2026-05-01T10:00:00+00:00", "2026-06-02T10:00:00+00:00"


def _pairs(rows: list[tuple[str, str, str, str]]) -> dict[str, list[str]]:
    return {c: [r[i] for r in rows] for i, c in enumerate(accuracy.PAIR)}


def _store(rows: list[tuple[str, str, str, str, str, str, str | None]]) -> pl.DataFrame:
    """Store rows as DecisionStore.decisions() returns them: newest first, undone ones too."""
    frame = pl.DataFrame({
        "decision_id": list(range(1, len(rows) + 1)),
        **_pairs([r[:4] for r in rows]),
        "decision": [r[4] for r in rows], "reason": [None] * len(rows), "decided_by": ["web:steward"] * len(rows),
        "decided_at": [r[5] for r in rows], "undone_at": [r[6] for r in rows],
    }, schema_overrides={"reason": pl.String, "undone_at": pl.String})
    return frame.sort("decision_id", descending=True)


def _csv(rows: list[tuple[str, str, str, str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame({**_pairs([r[:4] for r in rows]), "decision": [r[4] for r in rows],
                         "decided_by": ["import"] * len(rows), "decided_at": [r[5] for r in rows],
                         "reason": [None] * len(rows)}, schema=DECISION_COLUMNS)


def _labelled(rows: list[tuple[str, bool, str | None, str | None, str, str, bool]]) -> pl.DataFrame:
    """Labels with masters: (pair id, same, seen_l, seen_r (as decided), master_l, master_r (now), pending)."""
    return pl.DataFrame({
        **_pairs([("s", r[0], "s", r[0] + "'") for r in rows]), "same": [r[1] for r in rows],
        "seen_l": [r[2] for r in rows], "seen_r": [r[3] for r in rows], "master_l": [r[4] for r in rows],
        "master_r": [r[5] for r in rows], "pending": [r[6] for r in rows]},
        schema_overrides={"seen_l": pl.String, "seen_r": pl.String, "master_l": pl.String, "master_r": pl.String})


# --- labels --------------------------------------------------------------------------------------------


def test_labels_are_the_latest_decision_per_pair_in_force_without_unsure() -> None:
    store = _store([
        ("a", "1", "a", "2", "same", "2026-05-01T00:00:00+00:00", None),
        ("a", "1", "a", "2", "different", "2026-05-02T00:00:00+00:00", "2026-05-02T00:01:00+00:00"),  # undone
        ("a", "3", "a", "4", "same", "2026-05-01T00:00:00+00:00", None),
        ("a", "3", "a", "4", "unsure", "2026-05-03T00:00:00+00:00", None),  # the latest word: no label
        ("b", "1", "b", "2", "different", "2026-05-05T00:00:00+00:00", None),
        ("c", "1", "c", "2", "same", "2026-05-01T00:00:00+00:00", None),
        ("c", "1", "c", "2", "different", "2026-05-01T00:00:00+00:00", None),  # same time: the later row wins
    ])
    imported = _csv([
        ("b", "2", "b", "1", "same", "2026-04-01T00:00:00+00:00"),  # reversed pair, older than the store's
        ("d", "9", "d", "1", "same", "2026-04-01T00:00:00+00:00"),  # only in the CSV, reversed
    ])
    got = accuracy.labels(store, imported).sort(accuracy.PAIR)
    assert got.select("source_system_l", "source_record_id_l", "source_record_id_r", "decision").rows() == [
        ("a", "1", "2", "same"), ("b", "1", "2", "different"), ("c", "1", "2", "different"), ("d", "1", "9", "same")]
    assert got["same"].to_list() == [True, False, False, True]
    empty = accuracy.labels(pl.DataFrame(), _csv([]))
    assert empty.is_empty() and empty.schema == pl.Schema(accuracy.LABEL_SCHEMA)


def test_a_label_is_pending_from_the_publication_on_and_one_without_time_was_applied() -> None:
    frame = pl.DataFrame({"decided_at": [BEFORE, PUBLISHED, AFTER, None]}, schema={"decided_at": pl.String})
    assert accuracy.mark_pending(frame, PUBLISHED)["pending"].to_list() == [False, True, True, False]


def test_labels_naming_a_record_the_snapshot_lacks_are_dropped() -> None:
    labels = pl.DataFrame({**_pairs([("a", "1", "a", "2"), ("a", "1", "a", "9")]), "same": [True, False]})
    xref = pl.DataFrame({"source_system": ["a", "a"], "source_record_id": ["1", "2"], "master_id": ["M1", "M2"]})
    got = accuracy.with_masters(labels, xref)
    assert got.select("source_record_id_r", "master_l", "master_r").rows() == [("2", "M1", "M2")]


# --- figures -------------------------------------------------------------------------------------------


def test_wilson_intervals_match_the_textbook_values() -> None:
    frame = pl.DataFrame({"k": [8, 10, 0, 0], "n": [10, 10, 10, 0]})
    low, high = accuracy.wilson(pl.col("k"), pl.col("n"))
    got = frame.select(low.alias("low"), high.alias("high")).rows()
    # 8/10: 0.490-0.943; 10/10: 0.722-1; 0/10: 0-0.278 (Wilson 1927, z = 1.96); 0/0: no interval.
    assert got[0] == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert got[1] == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert got[2] == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert got[3] == (None, None)


def test_the_master_is_judged_as_the_steward_saw_it_not_as_the_decision_made_it() -> None:
    labelled = _labelled([
        ("1", True, "M1", "M1", "M1", "M1", False),   # seen under one master, same: tp
        ("2", True, "M2", "M2", "M2", "M2", False),   # tp
        ("3", True, "M3", "M4", "M3", "M3", False),   # seen apart, same: fn (the run has joined them since)
        ("4", False, "M5", "M5", "M5", "M6", False),  # seen together, different: fp (split since)
        ("5", False, "M6", "M7", "M6", "M7", False),  # tn
        ("6", False, "M8", "M9", "M8", "M9", True),   # tn, pending: still judged as seen
        ("7", True, None, None, "M1", "M2", True),    # CSV, pending: judged against this snapshot: fn
        ("8", True, None, None, "M1", "M1", False),   # CSV, applied by the run: proves nothing, left out
    ])
    [m] = accuracy.master_agreement(labelled).to_dicts()
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (2, 2, 1, 2)
    # precision 2 / (2 + 1), recall 2 / (2 + 2), F1 2*2 / (2*2 + 1 + 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["precision_low"] < 2 / 3 < m["precision_high"]
    # No label at all: zeros, no figure.
    none = accuracy.master_agreement(_labelled([]).cast({"same": pl.Boolean, "pending": pl.Boolean})).to_dicts()
    assert [(r["tp"], r["fp"], r["fn"], r["tn"], r["precision"]) for r in none] == [(0, 0, 0, 0, None)]


def test_scores_take_either_orientation_and_an_uncompared_pair_scores_zero() -> None:
    labels = pl.DataFrame({**_pairs([("a", "1", "a", "2"), ("a", "3", "a", "4"), ("a", "5", "a", "6"),
                                     ("a", "7", "a", "8")]), "same": [True, True, False, False]})
    pairs = pl.DataFrame({**_pairs([("a", "1", "a", "2"), ("a", "4", "a", "3"), ("a", "5", "a", "6")]),
                          "match_probability": [0.9, 0.7, 0.8], "blocked": [True, True, False]})
    got = accuracy.with_scores(labels, pairs).sort("source_record_id_l")["match_probability"].to_list()
    assert got == [0.9, 0.7, 0.0, 0.0]  # reversed pair found; blocked=false and absent pairs score 0


def test_the_truth_table_counts_links_at_or_above_each_threshold() -> None:
    scored = pl.DataFrame({"same": [True, True, True, False, False, False],
                           "match_probability": [0.95, 0.6, 0.0, 0.7, 0.2, 0.0]})
    table = {row["threshold"]: row for row in accuracy.truth_table(scored, [0.9, 0.01, 0.5, 0.6, 0.99]).to_dicts()}
    assert list(table) == [0.01, 0.5, 0.6, 0.9, 0.99]  # sorted
    counts = {t: (r["tp"], r["fp"], r["fn"], r["tn"]) for t, r in table.items()}
    assert counts == {0.01: (2, 2, 1, 1), 0.5: (2, 1, 1, 2), 0.6: (2, 1, 1, 2), 0.9: (1, 0, 2, 3), 0.99: (0, 0, 3, 3)}
    assert table[0.01]["precision"] == pytest.approx(0.5) and table[0.01]["recall"] == pytest.approx(2 / 3)
    assert table[0.9]["precision"] == 1.0 and table[0.9]["recall"] == pytest.approx(1 / 3)
    assert table[0.9]["f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))
    assert table[0.99]["precision"] is None and table[0.99]["precision_low"] is None and table[0.99]["recall"] == 0.0


@pytest.mark.parametrize(("labels", "same", "enough", "more", "more_same", "more_different"), [
    (0, 0, False, 20, 5, 5),
    (19, 10, False, 1, 0, 0),
    (30, 28, False, 3, 0, 3),   # plenty of labels, but 2 `different`: 3 more
    (8, 1, False, 12, 4, 0),    # 12 to reach 20, among them 4 `same`
    (20, 5, True, 0, 0, 0),
])
def test_figures_need_enough_labels_of_both_kinds(labels: int, same: int, enough: bool, more: int, more_same: int,
                                                  more_different: int) -> None:
    frame = pl.DataFrame({"same": [True] * same + [False] * (labels - same)}, schema={"same": pl.Boolean})
    r = accuracy.readiness(frame)
    assert (r.enough, r.more, r.more_same, r.more_different) == (enough, more, more_same, more_different)


def test_the_report_marks_the_link_threshold_and_draws_the_curve_once_there_are_enough_labels() -> None:
    n = 24
    rows = [("e", f"{2 * i:02d}", "e", f"{2 * i + 1:02d}") for i in range(n)]
    labels = pl.DataFrame({**_pairs(rows), "decision": ["same"] * 12 + ["different"] * 12,
                           "decided_at": [BEFORE] * 20 + [AFTER] * 4,  # the CSV import's: no masters seen
                           "seen_l": [None] * n, "seen_r": [None] * n}, schema_overrides={
                               "seen_l": pl.String, "seen_r": pl.String}).with_columns(
        (pl.col("decision") == "same").alias("same"))
    records = [k for r in rows for k in (r[1], r[3])]
    xref = pl.DataFrame({"source_system": ["e"] * len(records), "source_record_id": records,
                         "master_id": [f"M{int(k) // 2}" for k in records]})  # every labelled pair under one master
    pairs = pl.DataFrame({**_pairs(rows), "match_probability": [0.9] * 12 + [0.3] * 12})
    gone = pl.DataFrame({**_pairs([("e", "00", "gone", "1")]), "decision": ["same"], "decided_at": [BEFORE],
                         "seen_l": [None], "seen_r": [None], "same": [True]}, schema=labels.schema)
    report = accuracy.accuracy_report(labels.vstack(gone), xref, pairs, PUBLISHED, link_threshold=0.4242)
    assert (report.labels, report.not_in_snapshot) == (25, 1)
    assert (report.applied.labels, report.applied.same, report.pending.labels) == (20, 12, 4)
    # Only the 4 pending (different-labelled) ones are judged, against this snapshot: one master each, fp.
    assert report.judged.labels == 4 and not report.judged.enough
    assert (report.master["tp"], report.master["fp"]) == (0, 4) and report.pending_disagree == 4
    linked = [row for row in report.table if row["link"]]
    assert [row["threshold"] for row in linked] == [0.4242]
    assert (linked[0]["tp"], linked[0]["fp"], linked[0]["fn"], linked[0]["tn"]) == (12, 0, 0, 12)
    assert report.scored.enough and report.curve is not None and report.curve.link_x is not None
    # Above 0.9 nothing is linked, so precision has no point there; recall has one at every threshold.
    assert len(report.curve.precision.split()) == sum(row["threshold"] <= 0.9 for row in report.table) == 12
    assert len(report.curve.recall.split()) == len(report.table) == 14
    # Without the run's threshold nothing is marked, and a threshold out of (0, 1) is ignored.
    assert not any(row["link"] for row in accuracy.accuracy_report(labels, xref, pairs, PUBLISHED, None).table)
    assert accuracy.accuracy_report(labels, xref, pairs, PUBLISHED, 1.0).link_threshold is None


# --- the page ------------------------------------------------------------------------------------------

PERSONAL = ("Ada", "Lovelace", "Alan", "Turing", "example.org", "+44", "SW1A", "10001", "M1 1AE", "1985", "1912")


def _no_personal_values(html: str) -> None:
    for value in PERSONAL:
        assert value not in html, value


def test_the_page_shows_counts_and_what_is_missing_below_the_minimum(workbench) -> None:  # type: ignore[no-untyped-def]
    bench: Workbench = workbench()
    assert bench.client.get("/accuracy", follow_redirects=False).headers["location"] == "/login"
    bench.login()
    store = bench.client.app.state.store  # type: ignore[attr-defined]
    store.decide([(RecordKey("crm", "1"), RecordKey("crm", "2"))], "different", "steward")
    store.decide([(RecordKey("shop", "7"), RecordKey("shop", "8"))], "unsure", "steward")
    page = bench.client.get("/accuracy")
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert "review queue, which holds the doubtful decisions" in text and "not a random sample of the master" in text
    assert '<a href="/accuracy">Accuracy</a>' in page.text
    assert 'id="needed-master"' in page.text and 'id="needed-model"' in page.text
    assert 'id="thresholds"' not in page.text and "<svg" not in page.text
    # The one label is pending (decided after the snapshot): 0 before, 1 pending, a true negative for this master.
    needed = re.search(r'id="needed-model">(.*?)</p>', page.text, re.S)
    assert needed and "<b>19</b> more decisions needed" in needed.group(1) and "5 more <i>same</i>" in needed.group(1)
    assert re.search(r"pending \(applied by the next run\)</th><td>1 ", page.text)
    assert "style=" not in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    _no_personal_values(page.text)
    assert "crm:" not in page.text and not re.search(r"\bM[123]\b", page.text)  # no record key, no master id


def _big_frames() -> dict[str, pl.DataFrame]:
    """The tiny snapshot plus 48 `ext` records in 24 labelled pairs: pairs 0-9 share a master, 10-11 do not
    (same-labelled), 12 shares one, 13-23 do not (different-labelled); and the run's match_summary."""
    tables = frames()
    masters = {i: f"X{i:02d}" if i in range(10) or i == 12 else None for i in range(24)}
    ids = [f"{k:02d}" for k in range(48)]
    xref = pl.DataFrame({"source_system": ["ext"] * 48, "source_record_id": ids,
                         "master_id": [masters[k // 2] or f"Y{k:02d}" for k in range(48)]})
    tables["customer_xref"] = pl.concat([tables["customer_xref"], xref])
    scored = list(range(15))  # same 0-7 at 0.9, same 8-11 at 0.3, different 12-14 at 0.6, the rest never compared
    extra = pl.DataFrame({
        **_pairs([("ext", f"{2 * i:02d}", "ext", f"{2 * i + 1:02d}") for i in scored]),
        "match_weight": [1.0] * 15, "evidence": [1.0] * 15,
        "match_probability": [0.9] * 8 + [0.3] * 4 + [0.6] * 3, "blocked": [True] * 15,
        "comparison_levels": [{"first_name": 0, "email": 0}] * 15, "model_version": [1] * 15,
    }, schema_overrides={"comparison_levels": tables["match_pairs"]["comparison_levels"].dtype})
    tables["match_pairs"] = pl.concat([tables["match_pairs"], extra])
    tables["match_summary"] = pl.DataFrame({"run_id": ["in-memory"], "run_at": [T0.replace(tzinfo=None)],
                                            "match_prior": [0.01], "link_threshold": [0.42]})
    return tables


def test_the_page_shows_the_figures_from_enough_labels_and_no_personal_value(
        make_project: Callable[..., ProjectConfig]) -> None:
    config = make_project(**WEB_SETTINGS, web=web_block())
    assert config.matching.decisions is not None
    csv = config.resolve(config.matching.decisions)
    csv.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"ext,{2 * i:02d},ext,{2 * i + 1:02d},{'same' if i < 12 else 'different'},import,2026-05-01T00:00:00Z,"
            for i in range(24)]
    csv.write_text(",".join(DECISION_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    snapshot = snapshot_from_frames(_big_frames(), MODEL)
    snapshot.published_at = T0.isoformat()
    bench = Workbench(config, TestClient(create_app(config, snapshot=snapshot, session_secret="s"),
                                         raise_server_exceptions=False), snapshot)
    store = bench.client.app.state.store  # type: ignore[attr-defined]
    # The workbench's decisions on the same pairs (later: they win) keep the masters the steward saw: 12 same
    # (10 seen together, 2 apart), 12 different (1 seen together, 11 apart) -> tp 10, fn 2, fp 1, tn 11.
    for i in range(24):
        seen = ("X", "X") if i < 10 or i == 12 else ("X", "Y")
        store.decide([(RecordKey("ext", f"{2 * i:02d}"), RecordKey("ext", f"{2 * i + 1:02d}"))],
                     "same" if i < 12 else "different", "steward", masters=seen)
    bench.login(user="viewer")  # any role may look
    page = bench.client.get("/accuracy")
    assert page.status_code == 200, page.text
    assert 'id="needed-master"' not in page.text and 'id="needed-model"' not in page.text
    # Master, the 24 workbench labels as seen: tp 10, fp 1, fn 2, tn 11 -> precision 10/11, recall 10/12, F1 20/23
    # (the 24 CSV labels were applied by the run that built this snapshot: left out).
    master = re.search(r'id="master">(.*?)</table>', page.text, re.S)
    assert master
    assert re.search(r"24 judged</th><td>10</td><td>1</td><td>2</td><td>11</td>", master.group(1))
    assert "90.9%" in master.group(1) and "83.3%" in master.group(1) and "87.0%" in master.group(1)
    # Model at the run's link threshold 0.42, 24 labels: links same 0-7 and different 12-14 -> tp 8, fp 3, fn 4,
    # tn 9 -> precision 8/11, recall 8/12.
    link = re.search(r'id="link-threshold">(.*?)</tr>', page.text, re.S)
    assert link and "0.42" in link.group(1)
    assert re.search(r"<td>8</td><td>3</td><td>4</td><td>9</td>", link.group(1))
    assert "72.7%" in link.group(1) and "66.7%" in link.group(1)
    assert "<svg" in page.text and "<polyline" in page.text and "style=" not in page.text
    _no_personal_values(page.text)
    assert "ext:" not in page.text and "X00" not in page.text
