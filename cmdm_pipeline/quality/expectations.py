"""The schema's rules as a Great Expectations suite: one declared rule, one expectation.

The suite is compiled from the same declarations and the same :func:`compile_rules` as the
Pandera gate, so editing a rule in ``cmdm.yaml`` changes both. Attribute rules become GX's own
column expectations (Data Docs then show the pattern, set or bounds). A cross-field rule is a
SQL expression that GX cannot evaluate on a pandas batch (its SQL datasource fails silently on
DuckDB), so the gate's own Polars test computes a boolean column per rule and the suite
expects it to be ``True``: gate and suite cannot read an expression differently.

Only the columns the suite needs reach GX: no lineage, no source values.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from cmdm_pipeline.schema import CustomerSchema, Rule, Severity
from cmdm_pipeline.stages.fields import DTYPES
from cmdm_pipeline.stages.validate import compile_rules

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite

SUITE_NAME = "customer_schema"
#: Prefix of the boolean columns that carry cross-field rules into GX.
RULE_COLUMN_PREFIX = "rule: "
_TEXT_SUFFIX = " (as text)"
_GX_SEVERITY = {Severity.reject: "critical", Severity.warn: "warning"}


@dataclass(frozen=True)
class RuleExpectation:
    """One rule as the suite holds it: which GX expectation, on which column, with which arguments."""

    rule_id: str
    attribute: str | None  # None: a cross-field rule
    severity: Severity
    reason: str
    column: str  # the column of the frame handed to GX
    expectation: str  # class name in ``great_expectations.expectations``
    kwargs: dict[str, Any] = field(default_factory=dict)
    passes: pl.Expr | None = None  # cross-field rules: the gate's own test, computed before GX
    text: pl.Expr | None = None  # pattern, set and length rules: the gate's own text of the value
    expression: str | None = None

    @property
    def cross_field(self) -> bool:
        return self.attribute is None


def rule_column(rule_id: str) -> str:
    return f"{RULE_COLUMN_PREFIX}{rule_id}"


def text_column(attribute: str) -> str:
    return f"{attribute}{_TEXT_SUFFIX}"


def _declared(schema: CustomerSchema) -> list[tuple[str | None, Rule]]:
    """Every declared rule with its attribute, in the order :func:`compile_rules` returns them."""
    return [(name, rule) for name, attr in schema.attributes.items() for rule in attr.rules] + [
        (None, rule) for rule in schema.rules
    ]


def _bound(value: float | dt.date | str | None, today: dt.date) -> float | dt.date | None:
    return today if value == "today" else value  # type: ignore[return-value]


def rule_expectations(schema: CustomerSchema, today: dt.date) -> list[RuleExpectation]:
    """One expectation per declared rule, with the gate's rule id, severity and reason."""
    expectations = []
    for (attribute, rule), compiled in zip(_declared(schema), compile_rules(schema, today), strict=True):
        assert compiled.attribute == attribute  # the gate's order is the declaration order
        common: dict[str, Any] = {"rule_id": compiled.rule_id, "attribute": attribute,
                                  "severity": compiled.severity, "reason": compiled.reason, "text": compiled.text}
        if attribute is None:
            expectations.append(RuleExpectation(
                **common, column=rule_column(compiled.rule_id), expectation="ExpectColumnValuesToBeInSet",
                kwargs={"value_set": [True]}, passes=compiled.passes, expression=rule.expression))
            continue
        # Pattern, set and length rules read the value as text, as the gate does (`compiled.text`).
        as_text = attribute if DTYPES[schema.attributes[attribute].kind] == pl.String() else text_column(attribute)
        spec: tuple[str, str, dict[str, Any]]  # column, expectation, its arguments
        if rule.required:
            spec = (attribute, "ExpectColumnValuesToNotBeNull", {})
        elif rule.pattern is not None:
            # \Z, not $: Python's $ also matches before a final newline, the gate's (Rust) $ does not.
            spec = (as_text, "ExpectColumnValuesToMatchRegex", {"regex": rf"^(?:{rule.pattern})\Z"})
        elif rule.allowed is not None:
            spec = (as_text, "ExpectColumnValuesToBeInSet", {"value_set": list(rule.allowed)})
        elif rule.range is not None:
            spec = (attribute, "ExpectColumnValuesToBeBetween",
                    {"min_value": _bound(rule.range.min, today), "max_value": _bound(rule.range.max, today)})
        else:
            assert rule.length is not None
            spec = (as_text, "ExpectColumnValueLengthsToBeBetween",
                    {"min_value": rule.length.min, "max_value": rule.length.max})
        column, expectation, kwargs = spec
        expectations.append(RuleExpectation(**common, column=column, expectation=expectation, kwargs=kwargs))
    return expectations


def build_suite(expectations: list[RuleExpectation]) -> ExpectationSuite:
    """The GX suite: each expectation carries its rule id, severity and reason in ``meta``."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    built = []
    for spec in expectations:
        meta = {"rule": spec.rule_id, "severity": spec.severity.value, "attribute": spec.attribute,
                "reason": spec.reason}
        notes = f"Rule `{spec.rule_id}` ({spec.severity.value}): {spec.reason}"
        if spec.expression is not None:
            meta["expression"] = spec.expression
            notes += f". Cross-field: `{spec.expression}`, evaluated by the validation gate into this column."
        built.append(getattr(gxe, spec.expectation)(
            column=spec.column, **spec.kwargs, meta=meta, notes=notes, severity=_GX_SEVERITY[spec.severity]))
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=built, meta={"compiled_from": "cmdm.yaml schema rules"})


def expectation_frame(frame: pl.DataFrame | pl.LazyFrame, expectations: list[RuleExpectation]) -> pd.DataFrame:
    """The pandas frame GX validates: the attribute columns the rules name, text copies, rule columns.

    A cross-field rule naming a column the table lacks (``source_system`` on golden records)
    gets an all-null column: GX then counts its rows as not evaluated instead of failing them.
    """
    columns: dict[str, pl.Expr] = {}
    for spec in expectations:
        if spec.passes is not None:
            applicable = set(spec.passes.meta.root_names()) <= set(frame.collect_schema().names())
            columns[spec.column] = spec.passes if applicable else pl.lit(None, pl.Boolean)
        elif spec.column == spec.attribute:
            columns[spec.column] = pl.col(spec.attribute)
        else:
            assert spec.text is not None  # a text copy: only pattern, set and length rules make one
            columns[spec.column] = spec.text
    # Dates as Python dates, compared with date bounds: datetime64[ns] cannot hold a year 2999 typo.
    return frame.lazy().select(**columns).collect().to_pandas(date_as_object=True)
