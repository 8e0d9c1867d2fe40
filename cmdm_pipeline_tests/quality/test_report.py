"""quality_report rows from tiny frames: every metric's counts, rates and all-sources rows."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.quality import report
from cmdm_pipeline.quality.measure import presence_only_columns
from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline.stages.validate import compile_rules
from cmdm_pipeline_tests.conftest import csv_source

MAPPED = {"crm": ["email", "phone"], "shop": ["email"]}


def by(rows: pl.DataFrame, *keys: str) -> dict[object, dict[str, object]]:
    """Rows by their key: one column's value, or a tuple of several."""
    return {(r[keys[0]] if len(keys) == 1 else tuple(r[k] for k in keys)): r for r in rows.iter_rows(named=True)}


def test_rule_rows_add_an_all_sources_row_and_keep_whole_table_batches() -> None:
    counts = pl.DataFrame({
        "stage": ["validated", "validated", "golden"], "source_system": ["crm", "shop", None],
        "rule": ["email.pattern"] * 3, "attribute": ["email"] * 3, "severity": ["reject"] * 3,
        "rows_evaluated": [10, 30, 20], "rows_failed": [1, 3, 0],
    })
    rows = by(report.rule_rows(counts), "stage", "source_system")
    assert rows[("validated", None)]["rows_evaluated"] == 40 and rows[("validated", None)]["rows_failed"] == 4
    assert rows[("validated", None)]["pass_rate"] == rows[("validated", None)]["value"] == pytest.approx(0.9)
    assert rows[("golden", None)]["pass_rate"] == 1.0 and len(rows) == 4
    assert {r["metric"] for r in rows.values()} == {"rule"} and rows[("validated", "crm")]["attribute"] == "email"


def test_completeness_counts_only_what_each_source_maps() -> None:
    frame = pl.DataFrame({"source_system": ["crm", "crm", "shop", "shop"], "email": ["a", None, "b", "c"],
                          "phone": ["1", "2", None, None]})
    rows = by(report.completeness_rows(report.filled_counts(frame, MAPPED, True), "validated", MAPPED, per_source=True), "source_system", "attribute")
    assert ("shop", "phone") not in rows  # the shop has no phone column: its emptiness is not a gap
    assert rows[("crm", "email")]["value"] == 0.5 and rows[("crm", "email")]["rows_failed"] == 1
    assert rows[(None, "email")]["value"] == 0.75 and rows[(None, "phone")]["rows_evaluated"] == 2
    golden = by(report.completeness_rows(report.filled_counts(frame, MAPPED, False), "golden", MAPPED, per_source=False),
                "source_system", "attribute")
    # Counted a source at a time, the rows are those of the whole frame.
    parted = pl.concat([report.filled_counts(part, MAPPED, True) for part in frame.partition_by("source_system")])
    assert report.completeness_rows(parted, "validated", MAPPED, per_source=True).equals(
        report.completeness_rows(report.filled_counts(frame, MAPPED, True), "validated", MAPPED, per_source=True))
    assert golden[(None, "phone")]["value"] == 0.5 and golden[(None, "phone")]["rows_evaluated"] == 4


def test_quarantine_rates_and_rules_per_source_and_overall() -> None:
    read = pl.DataFrame({"source_system": ["crm", "shop"], "rows": [8, 2]})
    held = pl.DataFrame({"source_system": ["crm", "crm", "shop"],
                         "rules_broken": [["email.invalid", "has_a_name"], ["has_a_name"], ["input.duplicate_id"]]})
    rows = report.quarantine_rows(read, held, ["email"])
    rate = by(rows.filter(pl.col("metric") == "quarantine_rate"), "source_system")
    assert rate["crm"]["value"] == 0.25 and rate["crm"]["pass_rate"] == 0.75
    assert rate[None]["rows_evaluated"] == 10 and rate[None]["rows_failed"] == 3
    rules = by(rows.filter(pl.col("metric") == "rule"), "rule", "source_system")
    assert rules[("has_a_name", "crm")]["rows_failed"] == 2 and rules[("has_a_name", None)]["rows_evaluated"] == 10
    assert rules[("email.invalid", "crm")]["attribute"] == "email" and rules[("input.duplicate_id", None)]["attribute"] is None
    assert set(rows["stage"]) == {"quarantine"}


def test_duplicate_and_match_rates_and_cluster_sizes() -> None:
    xref = pl.DataFrame({"source_system": ["crm", "crm", "shop", "shop"], "master_id": ["m1", "m1", "m1", "m2"]})
    duplicates = by(report.duplicate_rows(xref), "source_system")
    assert duplicates["crm"]["value"] == 2.0 and duplicates["crm"]["rows_failed"] == 1  # records per master
    assert duplicates[None]["value"] == 2.0 and duplicates[None]["pass_rate"] == 0.5
    clusters = pl.DataFrame({"source_system": ["crm", "crm", "shop", "shop"], "cluster": [1, 1, 1, 2]})
    rows = report.match_rows(clusters)
    match = by(rows.filter(pl.col("metric") == "match_rate"), "source_system")
    assert match["shop"]["value"] == 0.5 and match[None]["value"] == 0.75
    sizes = dict(rows.filter(pl.col("metric").str.starts_with("cluster_size")).select("metric", "value").iter_rows())
    assert sizes == {"cluster_size_1": 0.5, "cluster_size_2": 0.0, "cluster_size_3": 0.5, "cluster_size_4": 0.0,
                     "cluster_size_5_9": 0.0, "cluster_size_10_plus": 0.0}
    one_big = report.match_rows(pl.DataFrame({"source_system": ["crm"] * 12, "cluster": [7] * 12}))
    assert one_big.filter(pl.col("metric") == "cluster_size_10_plus")["value"].to_list() == [1.0]


def test_golden_scores_combine_completeness_of_own_sources_and_rules_passed() -> None:
    schema = CustomerSchema.model_validate({
        "attributes": {"email": {"kind": "email"}, "phone": {"kind": "phone"}},
        "rules": [{"name": "reachable", "expression": "email IS NOT NULL OR phone IS NOT NULL", "severity": "warn"},
                  {"name": "crm_only", "expression": "source_system = 'crm'"}],  # not applicable to golden records
    })
    golden = pl.DataFrame({"master_id": ["m1", "m2", "m3"], "email": ["a", None, None], "phone": ["1", None, None],
                           "source_systems": [["crm"], ["shop"], ["crm", "shop"]]})
    scores = by(report.golden_quality_scores(golden, compile_rules(schema, dt.date(2026, 1, 1)), MAPPED, "r1"), "master_id")
    assert scores["m1"]["quality_score"] == 1.0 and scores["m1"]["rules_failed"] == []
    assert scores["m2"]["completeness"] == 0.0 and scores["m2"]["rules_failed"] == ["reachable"]
    assert scores["m2"]["quality_score"] == 0.0 and scores["m3"]["rule_pass_rate"] == 0.0
    assert report.golden_rows(golden, report.golden_quality_scores(
        golden, compile_rules(schema, dt.date(2026, 1, 1)), MAPPED, "r1"))["value"].to_list() == [3.0, pytest.approx(1 / 3)]


def test_assembled_rows_have_the_agreed_columns_and_types() -> None:
    rows = report.assemble("run-1", dt.datetime(2026, 11, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
                           [report.duplicate_rows(pl.DataFrame({"source_system": ["crm"], "master_id": ["m1"]}))])
    assert rows.schema == pl.Schema(report.REPORT_COLUMNS)
    assert rows["run_at"].unique().to_list() == [dt.datetime(2026, 11, 2, 2, 0)]  # UTC, without a zone


@pytest.mark.parametrize(
    ("expression", "values_read"),
    [
        ("email IS NOT NULL OR phone IS NOT NULL", set()),
        ("NOT (phone IS NULL)", set()),
        ("email IS NULL OR length(email) > 3", {"email"}),  # one use reads the value
        ("coalesce(email, phone) IS NOT NULL", {"email", "phone"}),  # a function of the values, not a null test
        ("phone <> 'none'", {"phone"}),
        # sqlglot reads `comment` as the start of a COMMENT command: not trusted, every column named is read.
        ("comment <> 'n/a' OR email IS NOT NULL", {"comment", "email"}),
    ],
)
def test_a_rule_that_only_tests_for_null_leaves_its_columns_encrypted(make_project, expression: str, values_read: set[str]) -> None:  # type: ignore[no-untyped-def]
    schema = {
        "attributes": {
            "email": {"kind": "email", "pii": True},
            "phone": {"kind": "phone", "pii": True},
            "last_name": {"kind": "person_name", "pii": True, "rules": [{"length": {"max": 50}}]},
            "national_id": {"kind": "identifier", "pii": True, "rules": [{"required": True}]},
            "comment": {"kind": "text", "pii": True},
        },
        "rules": [{"name": "r", "expression": expression}],
    }
    config = make_project(schema=schema, sources=[csv_source(columns={"Email": "email", "Phone": "phone", "Last": "last_name"})])
    # A length rule reads last_name; `required` only asks whether national_id is there.
    assert set(presence_only_columns(config)) == {"email", "phone", "national_id", "comment"} - values_read
