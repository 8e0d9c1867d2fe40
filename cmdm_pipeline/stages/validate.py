"""Validate: the schema's rules, compiled to a Pandera gate, split rows into validated and quarantined.

A row is quarantined when any ``reject`` rule fails for it — a declared rule checked by
Pandera, or an issue standardisation recorded. ``warn`` failures let the row pass with the
rule ids in ``warnings``. Quarantined rows keep their original source values and a reason a
person can read; reasons name attributes and rules, never values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from cmdm_pipeline.progress import step
from cmdm_pipeline.schema import CustomerSchema, Kind, Rule, Severity
from cmdm_pipeline.stages.fields import DTYPES
from cmdm_pipeline.stages.standardise import standardised_columns
from cmdm_pipeline.warehouse import BATCH_ROWS, TableReader

_ROW = "__row"


@dataclass(frozen=True)
class CompiledRule:
    """One declared rule as every consumer sees it: id, attribute, severity, readable reason, test."""

    rule_id: str
    attribute: str | None
    severity: Severity
    reason: str
    passes: pl.Expr  # true where the row satisfies the rule
    text: pl.Expr | None = None  # pattern, allowed and length rules: the value as text, as the rule reads it


class GateError(RuntimeError):
    """The standardised table itself does not fit the schema (a missing column or wrong type)."""


def _bound(value: float | dt.date | str | None, today: dt.date) -> float | dt.date | None:
    return today if value == "today" else value  # type: ignore[return-value]


def _rule_text(attribute: str, kind: Kind | None) -> pl.Expr:
    """An attribute's value as pattern, allowed and length rules read it. A whole number reads without
    its ``.0`` (``7``, not ``7.0``): ``pattern: '-?[0-9]+'`` is then a whole-number rule, and 7.5 fails it."""
    text = pl.col(attribute).cast(pl.String)
    return text.str.replace(r"\.0$", "") if kind is Kind.number else text


def compile_rule(attribute: str | None, rule: Rule, today: dt.date, kind: Kind | None = None) -> CompiledRule:
    """Turn one declared rule into its id, reason and a Polars test (null values pass, except `required`).
    ``kind`` is the attribute's: it says how the value reads as text."""
    col = pl.col(attribute) if attribute else None
    rule_id = rule.name or f"{attribute}.{rule.type}"
    if rule.required:
        assert col is not None
        return CompiledRule(rule_id, attribute, rule.severity,
                            rule.description or f"{attribute}: required value is missing", col.is_not_null())
    if rule.expression is not None:
        return CompiledRule(rule_id, None, rule.severity, rule.description or f"fails rule {rule.name}",
                            pl.sql_expr(rule.expression).fill_null(False))
    assert col is not None and attribute is not None
    text = _rule_text(attribute, kind)
    if rule.pattern is not None:
        test = text.str.contains(f"^(?:{rule.pattern})$")
        reason = f"{attribute}: does not match the required pattern"
    elif rule.allowed is not None:
        test = text.is_in(rule.allowed)
        reason = f"{attribute}: not one of the allowed values ({', '.join(rule.allowed)})"
    elif rule.range is not None:
        low, high = _bound(rule.range.min, today), _bound(rule.range.max, today)
        test = pl.lit(True)
        if low is not None:
            test = test & (col >= low)
        if high is not None:
            test = test & (col <= high)
        shown_high = "today" if rule.range.max == "today" else high
        reason = f"{attribute}: outside the allowed range [{'' if low is None else low}, {'' if high is None else shown_high}]"
    else:
        assert rule.length is not None
        length = text.str.len_chars()
        test = pl.lit(True)
        if rule.length.min is not None:
            test = test & (length >= rule.length.min)
        if rule.length.max is not None:
            test = test & (length <= rule.length.max)
        reason = f"{attribute}: length outside [{rule.length.min or 0}, {rule.length.max or ''}] characters"
    if rule.description:
        reason = f"{attribute}: {rule.description}"
    return CompiledRule(rule_id, attribute, rule.severity, reason, col.is_null() | test.fill_null(False),
                        None if rule.range is not None else text)


def compile_rules(schema: CustomerSchema, today: dt.date) -> list[CompiledRule]:
    """Every declared rule, attribute rules first, in declaration order."""
    compiled = [
        compile_rule(name, rule, today, attribute.kind)
        for name, attribute in schema.attributes.items()
        for rule in attribute.rules
    ]
    compiled += [compile_rule(None, rule, today) for rule in schema.rules]
    return compiled


_GATE_NAME = "customer_schema"


def build_gate(schema: CustomerSchema, today: dt.date) -> tuple[pa.DataFrameSchema, pl.DataFrame]:
    """The Pandera schema for the standardised table, and a lookup from Pandera's failure
    coordinates (``column``, ``check_number``) to rule id, attribute, severity and reason."""
    rules = compile_rules(schema, today)

    def check(rule: CompiledRule) -> pa.Check:
        def run(data: PolarsData) -> pl.LazyFrame:
            return data.lazyframe.select(rule.passes.alias(rule.rule_id))

        return pa.Check(run, name=rule.rule_id, error=rule.reason)

    # The row as read is not judged: a caller may leave it out and add it to quarantined rows only.
    columns = {
        name: pa.Column(dtype, nullable=True, required=name != "source_values")
        for name, dtype in standardised_columns(schema).items()
        if name not in schema.attributes and name != "issues"
    }
    coordinates: list[tuple[str, int, CompiledRule]] = []
    for name, attribute in schema.attributes.items():
        own = [r for r in rules if r.attribute == name]
        coordinates += [(name, i, r) for i, r in enumerate(own)]
        columns[name] = pa.Column(
            DTYPES[attribute.kind], nullable=True, required=True, checks=[check(r) for r in own]
        )
    # Cross-field rules run as frame checks; Pandera reports them under the schema's name.
    frame_rules = [r for r in rules if r.attribute is None]
    coordinates += [(_GATE_NAME, i, r) for i, r in enumerate(frame_rules)]
    gate = pa.DataFrameSchema(columns, checks=[check(r) for r in frame_rules], strict=False, name=_GATE_NAME)
    lookup = pl.DataFrame(
        {
            "column": [c for c, _, _ in coordinates],
            "check_number": [n for _, n, _ in coordinates],
            "rule": [r.rule_id for _, _, r in coordinates],
            "attribute": [r.attribute for _, _, r in coordinates],
            "severity": [r.severity.value for _, _, r in coordinates],
            "reason": [r.reason for _, _, r in coordinates],
        },
        schema={"column": pl.String, "check_number": pl.Int32, "rule": pl.String, "attribute": pl.String,
                "severity": pl.String, "reason": pl.String},
    )
    return gate, lookup


def rule_failures(standardised: pl.DataFrame, schema: CustomerSchema, today: dt.date) -> pl.DataFrame:
    """Run the Pandera gate; one row per (row position, failed rule) with the rule's severity and reason."""
    gate, lookup = build_gate(schema, today)
    empty = pl.DataFrame(schema={_ROW: pl.Int64, **{k: v for k, v in lookup.schema.items() if k not in ("column", "check_number")}})
    try:
        # Without the nested `issues`: Pandera rebuilds a failing row from Python values and cannot when
        # their nulls differ in shape (an unparsable row's issue has no attribute).
        gate.validate(standardised.drop("issues", strict=False), lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return empty
    structural = cases.filter(pl.col("index").is_null())
    if structural.height:
        # Pandera reports a check that raised (a strict CAST in an expression meeting a value it cannot
        # convert) like a wrong column; naming the rule says what to fix. The error's own text quotes values.
        problems = structural.join(
            lookup.select("column", "check_number", "rule"), on=["column", "check_number"], how="left"
        ).select(
            pl.when(pl.col("rule").is_not_null())
            .then(pl.format("rule {} could not be evaluated ({})", "rule",
                            pl.col("failure_case").str.extract(r"(\w+)\(", 1).fill_null("error")))
            .otherwise(pl.format("{} {}: {}", "schema_context", "column", "check"))
        ).to_series()
        raise GateError("standardised table does not fit the customer schema: " + "; ".join(problems.to_list()))
    # Failure values (personal data) are dropped here: only coordinates and row positions go on.
    return (
        cases.select(pl.col("index").cast(pl.Int64).alias(_ROW), "column", pl.col("check_number").cast(pl.Int32))
        .unique()
        .join(lookup, on=["column", "check_number"], how="inner")
        .select(empty.columns)
    )


def validation_columns(schema: CustomerSchema) -> dict[str, pl.DataType]:
    """Columns of ``validated_customers``, in order."""
    columns = {k: v for k, v in standardised_columns(schema).items() if k not in ("source_values", "issues")}
    return {**columns, "warnings": pl.List(pl.String()), "run_id": pl.String()}


QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "source_system": pl.String(),
    "source_record_id": pl.String(),
    "source_row_number": pl.Int64(),
    "ingested_at": pl.Datetime("us", "UTC"),
    "record_type": pl.String(),
    "party_type": pl.String(),
    "rules_broken": pl.List(pl.String()),
    "reason": pl.String(),
    "warnings": pl.List(pl.String()),
    "source_values": pl.String(),
}


def validate(
    standardised: pl.DataFrame, schema: CustomerSchema, run_id: str, today: dt.date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``standardised`` into (validated, quarantined); every input row lands in exactly one.

    Without a ``source_values`` column in ``standardised``, quarantined rows come without it too: the
    caller adds it for those few rows only (see :func:`with_source_values`)."""
    failures = rule_failures(standardised, schema, today)
    recorded = (
        standardised.select("issues").with_row_index(_ROW).with_columns(pl.col(_ROW).cast(pl.Int64))
        .explode("issues").drop_nulls("issues").unnest("issues")
    )
    # An unparsable row's fields are not where the header says: judging them by the
    # schema's rules would only add noise to the one reason that matters.
    unparsable = recorded.filter(pl.col("rule") == "input.unparsable_row").select(_ROW)
    failures = failures.join(unparsable, on=_ROW, how="anti")
    columns = [_ROW, "rule", "attribute", "severity", "reason"]
    # Sorted so a rerun on the same input lists the same rules in the same order.
    issues = pl.concat([recorded.select(columns), failures.select(columns)], how="vertical_relaxed").sort(_ROW, "rule")
    per_row = issues.group_by(_ROW).agg(
        pl.col("rule").filter(pl.col("severity") == Severity.reject.value).unique(maintain_order=True).alias("rules_broken"),
        pl.col("reason").filter(pl.col("severity") == Severity.reject.value).unique(maintain_order=True).alias("reasons"),
        pl.col("rule").filter(pl.col("severity") == Severity.warn.value).unique(maintain_order=True).alias("warnings"),
    )
    empty = pl.lit([], dtype=pl.List(pl.String))
    # The verdicts are joined to a row index, then set beside the columns: a join to the table itself would
    # copy every column of every row once more.
    verdicts = (
        pl.DataFrame({_ROW: pl.int_range(standardised.height, dtype=pl.Int64, eager=True)})
        .join(per_row, on=_ROW, how="left", maintain_order="left")
        .select(
            pl.col("rules_broken").fill_null(empty),
            pl.col("warnings").fill_null(empty),
            pl.col("reasons").fill_null(empty),
        )
    )
    judged = standardised.with_columns(
        *verdicts.get_columns(), pl.lit(run_id).alias("run_id")
    )
    rejected = verdicts["rules_broken"].list.len() > 0
    validated = judged.select(list(validation_columns(schema))).filter(~rejected)
    quarantined = judged.filter(rejected).with_columns(
        pl.col("reasons").list.join("; ").alias("reason")
    ).select([c for c in QUARANTINE_COLUMNS if c != "source_values" or c in judged.columns])
    if validated.height + quarantined.height != standardised.height:
        raise AssertionError("validation lost or duplicated rows")  # a bug, never data
    return validated, quarantined


def validate_table(
    read: TableReader, table: str, schema: CustomerSchema, run_id: str, today: dt.date,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """:func:`validate` of standardised table ``table``, ``BATCH_ROWS`` rows at a time: (validated, quarantined)
    of each batch, the quarantined rows with their ``source_values``. Every rule judges one row, so a batch is
    judged as it would be in the whole table. The row as read (``source_values``, the largest column) is
    decrypted only for the rows quarantined."""
    columns = [c for c in standardised_columns(schema) if c != "source_values"]
    keys = ["source_system", "source_row_number"]
    with step("validate", total=read.read(table, ["source_row_number"]).height) as advance:
        for batch in read.batches(table, BATCH_ROWS, columns):
            validated, quarantined = validate(batch, schema, run_id, today)
            held = quarantined.select(keys)
            source_values = (read.read(table, [*keys, "source_values"], rows=held) if held.height
                             else pl.DataFrame(schema={"source_system": pl.String, "source_row_number": pl.Int64,
                                                       "source_values": pl.String}))
            yield validated, with_source_values(quarantined, source_values)
            advance(batch.height)


def with_source_values(quarantined: pl.DataFrame, source_values: pl.DataFrame) -> pl.DataFrame:
    """``quarantined`` with its rows' ``source_values`` (from ``source_system``, ``source_row_number``,
    ``source_values`` rows of the standardised table), in the quarantine's column order."""
    keys = ["source_system", "source_row_number"]
    return quarantined.join(source_values.select(*keys, "source_values"), on=keys, how="left",
                            maintain_order="left").select(list(QUARANTINE_COLUMNS))


__all__ = [
    "QUARANTINE_COLUMNS", "CompiledRule", "GateError", "build_gate", "compile_rules", "rule_failures",
    "validate", "validate_table", "validation_columns", "with_source_values",
]
