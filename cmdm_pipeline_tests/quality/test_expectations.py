"""The schema's rules compile to one GX suite that counts exactly what the Pandera gate counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.config import load_config
from cmdm_pipeline.quality.expectations import SUITE_NAME, build_suite, rule_column, rule_expectations
from cmdm_pipeline.quality.validation import Batch, run_suite
from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline.stages.validate import compile_rules, rule_failures
from cmdm_pipeline_tests.conftest import REPO_ROOT
from cmdm_pipeline_tests.quality.conftest import ROWS, SCHEMA, TODAY, standardised_frame


def gate_counts(frame: pl.DataFrame, schema: CustomerSchema) -> dict[str, int]:
    failures = rule_failures(frame, schema, TODAY)
    counted = dict(failures.group_by("rule").len().iter_rows())
    return {rule.rule_id: counted.get(rule.rule_id, 0) for rule in compile_rules(schema, TODAY)}


def suite_counts(frame: pl.DataFrame, schema: CustomerSchema) -> dict[str, int]:
    run = run_suite([Batch("standardised", "standardised_customers", "crm", frame)], rule_expectations(schema, TODAY), "test")
    return dict(run.counts.select("rule", "rows_failed").iter_rows())


def test_every_rule_becomes_one_expectation_with_its_id_and_severity() -> None:
    specs = rule_expectations(SCHEMA, TODAY)
    assert [s.rule_id for s in specs] == [r.rule_id for r in compile_rules(SCHEMA, TODAY)]
    by_id = {s.rule_id: s for s in specs}
    assert by_id["email.pattern"].expectation == "ExpectColumnValuesToMatchRegex"
    assert by_id["gender.allowed"].expectation == "ExpectColumnValuesToBeInSet"
    assert by_id["last_name.length"].expectation == "ExpectColumnValueLengthsToBeBetween"
    assert by_id["date_of_birth.range"].kwargs == {"min_value": dt.date(1900, 1, 1), "max_value": TODAY}
    assert by_id["first_name.required"].expectation == "ExpectColumnValuesToNotBeNull"
    assert by_id["nps_score.whole"].column == "nps_score (as text)"
    reachable = by_id["reachable"]
    assert (reachable.column, reachable.kwargs, reachable.severity.value) == (rule_column("reachable"), {"value_set": [True]}, "warn")

    suite = build_suite(specs)
    assert suite.name == SUITE_NAME and len(suite.expectations) == len(specs)
    meta = {e.meta["rule"]: (e.meta["severity"], e.severity.value) for e in suite.expectations}
    assert meta["gender.allowed"] == ("warn", "warning") and meta["has_a_name"] == ("reject", "critical")
    assert next(e for e in suite.expectations if e.meta["rule"] == "has_a_name").meta["expression"].startswith("first_name")


def test_the_suite_fails_exactly_the_rows_the_gate_fails() -> None:
    frame = standardised_frame(SCHEMA, ROWS)
    expected = gate_counts(frame, SCHEMA)
    assert sum(expected.values()) > len(expected)  # most rules fail some rows: the comparison means something
    assert suite_counts(frame, SCHEMA) == expected
    evaluated = run_suite([Batch("golden", "golden_customers", None, frame.drop("source_system"))],
                          rule_expectations(SCHEMA, TODAY), "test").counts
    # Every row is judged by every rule; nulls pass attribute rules, as in the gate.
    assert evaluated["rows_evaluated"].to_list() == [frame.height] * len(expected)


def test_a_cross_field_rule_naming_a_missing_column_is_not_evaluated() -> None:
    schema = SCHEMA.model_copy(update={"rules": [*SCHEMA.rules, *CustomerSchema.model_validate({
        "attributes": {"email": {"kind": "email"}},
        "rules": [{"name": "crm_has_email", "expression": "source_system <> 'crm' OR email IS NOT NULL"}],
    }).rules]})
    frame = standardised_frame(schema, ROWS).drop("source_system")  # as golden records: no source_system
    counts = run_suite([Batch("golden", "golden_customers", None, frame)], rule_expectations(schema, TODAY), "test").counts
    row = counts.filter(pl.col("rule") == "crm_has_email").row(0, named=True)
    assert (row["rows_evaluated"], row["rows_failed"]) == (0, 0)


def test_changing_a_rule_in_cmdm_yaml_changes_both_the_gate_and_the_suite(tmp_path: Path) -> None:
    original = (REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8")
    edited = original.replace("pattern: '^[A-Z]{2}$'", "pattern: '^[A-Z]{3}$'")
    assert edited != original
    (tmp_path / "before.yaml").write_text(original, encoding="utf-8")
    (tmp_path / "after.yaml").write_text(edited, encoding="utf-8")
    before = load_config(tmp_path / "before.yaml").customer_schema
    after = load_config(tmp_path / "after.yaml").customer_schema
    frame = standardised_frame(before, {"source_system": ["crm"] * 3, "first_name": ["A", "B", "C"],
                                        "email": ["a@x.org", "b@x.org", "c@x.org"], "country": ["DE", "FR", "DEU"]})

    def regex(schema: CustomerSchema) -> str:
        return next(s for s in rule_expectations(schema, TODAY) if s.rule_id == "country.pattern").kwargs["regex"]

    assert (regex(before), regex(after)) == (r"^(?:^[A-Z]{2}$)\Z", r"^(?:^[A-Z]{3}$)\Z")
    for schema, failing in ((before, 1), (after, 2)):
        assert gate_counts(frame, schema)["country.pattern"] == failing
        assert suite_counts(frame, schema)["country.pattern"] == failing


@pytest.mark.parametrize("value", ["gb", "G B", "GBR"])
def test_a_failing_pattern_is_failed_by_both(value: str) -> None:
    frame = standardised_frame(SCHEMA, {"source_system": ["crm"], "first_name": ["A"], "country": [value]})
    assert gate_counts(frame, SCHEMA)["country.pattern"] == suite_counts(frame, SCHEMA)["country.pattern"] == 1
