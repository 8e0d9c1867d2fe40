"""The Pandera gate compiled from the schema's rules: severities, reasons, every row accounted for."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline.stages.standardise import ISSUE_DTYPE, standardised_columns
from cmdm_pipeline.stages.validate import GateError, build_gate, compile_rules, validate

TODAY = dt.date(2026, 6, 30)


def schema(**attributes: dict) -> CustomerSchema:  # type: ignore[type-arg]
    rules = attributes.pop("rules", [])
    return CustomerSchema.model_validate({"attributes": attributes, "rules": rules})


def frame(s: CustomerSchema, **columns: list) -> pl.DataFrame:  # type: ignore[type-arg]
    """A standardised frame of the schema's shape; unspecified columns are filled plainly."""
    height = len(next(iter(columns.values())))
    data = {}
    for name, dtype in standardised_columns(s).items():
        if name in columns:
            data[name] = pl.Series(name, columns[name], dtype=dtype)
        elif name == "issues":
            data[name] = pl.Series(name, [[]] * height, dtype=ISSUE_DTYPE)
        elif name == "source_row_number":
            data[name] = pl.Series(name, range(1, height + 1), dtype=dtype)
        elif name == "source_system":
            data[name] = pl.Series(name, ["src"] * height, dtype=dtype)
        else:
            data[name] = pl.Series(name, [None] * height, dtype=dtype)
    return pl.DataFrame(data)


@pytest.mark.parametrize(
    ("attribute", "rule", "values", "failing"),
    [
        ({"kind": "email"}, {"required": True}, ["a@b.org", None], [2]),
        ({"kind": "text"}, {"pattern": "[A-Z]{2}"}, ["GB", "gbr", None, "G"], [2, 4]),
        ({"kind": "category"}, {"allowed": ["gold", "silver"]}, ["gold", "platinum", None], [2]),
        ({"kind": "number"}, {"range": {"min": 0, "max": 10}}, [0.0, 10.0, 11.0, -1.0, None], [3, 4]),
        ({"kind": "date"}, {"range": {"max": "today"}}, [TODAY, TODAY + dt.timedelta(days=1)], [2]),
        ({"kind": "text"}, {"length": {"min": 2, "max": 3}}, ["ab", "abcd", "a", None], [2, 3]),
    ],
)
def test_each_rule_type(attribute: dict, rule: dict, values: list, failing: list[int]) -> None:  # type: ignore[type-arg]
    s = schema(x={**attribute, "rules": [rule]})
    validated, quarantined = validate(frame(s, x=values), s, "run", TODAY)
    assert quarantined["source_row_number"].to_list() == failing
    assert validated.height + quarantined.height == len(values)
    assert set(quarantined["rules_broken"].explode().to_list()) <= {f"x.{next(iter(rule))}"}


def test_cross_field_expression_null_counts_as_failure() -> None:
    s = schema(a={"kind": "text"}, b={"kind": "text"},
               rules=[{"name": "a_or_b", "expression": "a IS NOT NULL OR b IS NOT NULL", "description": "needs a or b"}])
    validated, quarantined = validate(frame(s, a=["x", None, None], b=[None, "y", None]), s, "run", TODAY)
    assert quarantined["source_row_number"].to_list() == [3]
    assert quarantined["reason"].to_list() == ["needs a or b"]


def test_warn_rules_pass_flagged_and_reject_rules_quarantine() -> None:
    s = schema(score={"kind": "number", "rules": [
        {"range": {"min": 0, "max": 10}},
        {"range": {"max": 9}, "severity": "warn", "name": "score.not_perfect"},
    ]})
    validated, quarantined = validate(frame(s, score=[5.0, 10.0, 11.0]), s, "run", TODAY)
    assert validated["warnings"].to_list() == [[], ["score.not_perfect"]]
    assert quarantined["rules_broken"].to_list() == [["score.range"]]
    assert quarantined["warnings"].to_list() == [["score.not_perfect"]]
    assert quarantined["reason"].to_list() == ["score: outside the allowed range [0.0, 10.0]"]


def test_description_becomes_the_reason() -> None:
    s = schema(score={"kind": "number", "rules": [{"range": {"max": 10}, "description": "at most ten"}]})
    _, quarantined = validate(frame(s, score=[12.0]), s, "run", TODAY)
    assert quarantined["reason"].to_list() == ["score: at most ten"]


def test_recorded_issues_join_rule_failures() -> None:
    s = schema(score={"kind": "number", "rules": [{"range": {"max": 10}}]})
    issue = {"rule": "input.formula_like", "attribute": "score", "severity": "reject", "reason": "score: looks like a formula"}
    warn = {**issue, "rule": "score.invalid", "severity": "warn", "reason": "score: not a number"}
    f = frame(s, score=[12.0, 1.0, 2.0]).with_columns(pl.Series("issues", [[issue], [warn], []], dtype=ISSUE_DTYPE))
    validated, quarantined = validate(f, s, "run", TODAY)
    assert quarantined["rules_broken"].to_list() == [["input.formula_like", "score.range"]]
    assert validated["warnings"].to_list() == [["score.invalid"], []]


def test_one_rule_change_changes_the_gate() -> None:
    loose = schema(score={"kind": "number", "rules": [{"range": {"max": 10}}]})
    strict = schema(score={"kind": "number", "rules": [{"range": {"max": 5}}]})
    values = [3.0, 7.0]
    assert validate(frame(loose, score=values), loose, "r", TODAY)[1].height == 0
    assert validate(frame(strict, score=values), strict, "r", TODAY)[1].height == 1
    assert [r.rule_id for r in compile_rules(strict, TODAY)] == ["score.range"]


def test_structural_mismatch_is_an_error_not_a_quarantine() -> None:
    s = schema(score={"kind": "number"})
    wrong = frame(s, score=[1.0]).with_columns(pl.col("score").cast(pl.String))
    with pytest.raises(GateError, match="score"):
        validate(wrong, s, "run", TODAY)


def test_gate_is_a_pandera_schema_naming_every_rule() -> None:
    s = schema(a={"kind": "text", "rules": [{"required": True}, {"length": {"max": 3}}]},
               rules=[{"name": "r1", "expression": "a <> 'x'"}])
    gate, lookup = build_gate(s, TODAY)
    assert [c.name for c in gate.columns["a"].checks] == ["a.required", "a.length"]
    assert lookup["rule"].to_list() == ["a.required", "a.length", "r1"]


def test_source_values_can_be_added_for_the_quarantined_rows_only() -> None:
    from cmdm_pipeline.stages.validate import with_source_values

    s = schema(score={"kind": "number", "rules": [{"range": {"max": 10}}]})
    full = frame(s, score=[5.0, 11.0, 12.0], source_values=['{"Score":"5"}', '{"Score":"11"}', '{"Score":"12"}'])
    validated, quarantined = validate(full, s, "run", TODAY)
    narrow_validated, narrow = validate(full.drop("source_values"), s, "run", TODAY)
    assert "source_values" not in narrow.columns and narrow_validated.equals(validated)
    held = full.join(narrow.select("source_system", "source_row_number"), on=["source_system", "source_row_number"], how="semi")
    assert held.height == 2  # only the quarantined rows' source values are needed
    assert with_source_values(narrow, held).equals(quarantined)


def test_a_rule_that_raises_on_a_value_is_named_without_the_value() -> None:
    # Polars SQL's CAST is strict: one value it cannot convert fails the rule for every row (TRY_CAST does not).
    s = schema(code={"kind": "text"}, rules=[{"name": "small_code", "expression": "CAST(code AS INTEGER) < 10"}])
    with pytest.raises(GateError) as raised:
        validate(frame(s, code=["1", "Qzsecret"]), s, "run", TODAY)
    assert "rule small_code could not be evaluated (InvalidOperationError)" in str(raised.value)
    assert "Qzsecret" not in str(raised.value)
    tolerant = schema(code={"kind": "text"},
                      rules=[{"name": "small_code", "expression": "TRY_CAST(code AS INTEGER) < 10"}])
    _, quarantined = validate(frame(tolerant, code=["1", "Qzsecret"]), tolerant, "run", TODAY)
    assert quarantined["rules_broken"].to_list() == [["small_code"]]


@pytest.mark.parametrize(
    ("rule", "values", "failing"),
    [
        # A whole number reads as text without its ".0": "7", "-3", "10"; 7.5 (from "7,5") stays "7.5".
        ({"pattern": "-?[0-9]+"}, [7.0, 7.5, -3.0, 10.0, 0.25, None], [2, 5]),
        ({"allowed": ["0", "1"]}, [0.0, 1.0, 0.5, 2.0], [3, 4]),
        ({"length": {"max": 2}}, [10.0, 99.0, 100.0, 1.5], [3, 4]),
    ],
)
def test_text_rules_read_a_whole_number_without_its_decimal_part(
    rule: dict, values: list, failing: list[int]  # type: ignore[type-arg]
) -> None:
    s = schema(score={"kind": "number", "rules": [rule]})
    _, quarantined = validate(frame(s, score=values), s, "run", TODAY)
    assert quarantined["source_row_number"].to_list() == failing


def test_text_rules_on_text_keep_a_trailing_dot_zero() -> None:
    s = schema(code={"kind": "text", "rules": [{"pattern": "v[0-9]+"}]})
    _, quarantined = validate(frame(s, code=["v1.0", "v1"]), s, "run", TODAY)
    assert quarantined["source_row_number"].to_list() == [1]


def test_the_shipped_nps_rule_rejects_a_fraction() -> None:
    from cmdm_pipeline.config import load_config
    from cmdm_pipeline_tests.conftest import REPO_ROOT

    shipped = load_config(REPO_ROOT / "cmdm.yaml").customer_schema
    rows = frame(shipped, nps_score=[7.0, 7.5, 10.0, 11.0], first_name=["A"] * 4, party_type=["person"] * 4)
    _, quarantined = validate(rows, shipped, "r", TODAY)
    broken = dict(quarantined.select("source_row_number", "rules_broken").iter_rows())
    assert broken == {2: ["nps_score.whole_number"], 4: ["nps_score.range"]}


def test_a_table_validated_in_batches_gives_the_verdicts_of_the_whole(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse
    from cmdm_pipeline.stages import validate as stage
    from cmdm_pipeline.stages.extract import extract
    from cmdm_pipeline.stages.standardise import standardise
    from cmdm_pipeline.stages.validate import validate_table, with_source_values
    from cmdm_pipeline_tests.conftest import GOOD_CSV, NOW

    # Row 4 has no name, row 5 no id; row 6 shares row 2's id with other values: four rows quarantined, in
    # every batch. Row 1 warns (not a valid e-mail address).
    lines = GOOD_CSV.splitlines()
    content = "\n".join([*lines, "4,,,x@example.org,,,GB,", ",No,Id,,,,GB,", lines[2].replace("Alan", "Alana")]) + "\n"
    config = make_project(files={"crm.csv": content.replace("Ada@Example.org", "ada@")})
    source, today = config.sources[0], dt.date(2026, 12, 7)
    standardised = standardise(extract(source, config, NOW), source, config)
    validated, quarantined = validate(standardised.drop("source_values"), config.customer_schema, "run-1", today)
    quarantined = with_source_values(quarantined, standardised)
    store = open_warehouse(config)
    store.replace({"standardised_customers": standardised})
    monkeypatch.setattr(stage, "BATCH_ROWS", 2)
    parts: list[tuple[pl.DataFrame, pl.DataFrame]] = []

    def write(read):  # type: ignore[no-untyped-def]
        for part in validate_table(read, "standardised_customers", config.customer_schema, "run-1", today):
            parts.append(part)
            yield {"validated_customers": part[0], "quarantined_records": part[1]}

    store.replace_in_parts(write)
    assert sorted(quarantined["source_row_number"]) == [2, 4, 5, 6]
    assert validated["warnings"].to_list() == [["email.invalid"], []]
    assert [(v.height, q.height) for v, q in parts] == [(1, 1), (1, 1), (0, 2)]
    assert pl.concat([v for v, _ in parts]).equals(validated)
    assert pl.concat([q for _, q in parts]).equals(quarantined)
    assert quarantined["source_values"].null_count() == 0
    assert store.read("quarantined_records").equals(quarantined)
