"""One run's quality measurement: the GX suite over each stage, then every ``quality_report`` row.

Standardised and validated records are validated per source (a GX batch each, so Data Docs
and the report show which source fails which rule), read a source at a time; golden records as one batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlglot
from sqlglot import exp

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.progress import step
from cmdm_pipeline.quality import report
from cmdm_pipeline.quality.expectations import rule_expectations
from cmdm_pipeline.quality.validation import Batch, SuiteRun, run_suite
from cmdm_pipeline.stages.validate import compile_rules

#: Report stage -> warehouse table validated with the suite.
STAGE_TABLES = {"standardised": "standardised_customers", "validated": "validated_customers", "golden": "golden_customers"}


@dataclass(frozen=True)
class BySource:
    """A stage's records a source at a time, each read when its turn comes: the stage is never whole in memory."""

    sources: list[str]
    read: Callable[[str], pl.DataFrame]  # one source's rows

    @classmethod
    def of(cls, frame: pl.DataFrame) -> BySource:
        """The sources of a frame already in memory."""
        return cls(sorted(frame["source_system"].unique().to_list()),
                   lambda source: frame.filter(pl.col("source_system") == source))


@dataclass(frozen=True)
class QualityInputs:
    """The tables a quality run reads, cut to the columns it needs."""

    standardised: BySource  # source_system, record_type, party_type, attributes
    validated: BySource  # same columns
    quarantined: pl.DataFrame  # source_system, rules_broken
    clusters: pl.DataFrame  # source_system, cluster
    xref: pl.DataFrame  # source_system, master_id
    golden: pl.DataFrame  # master_id, record_type, party_type, attributes, source_systems
    matching: pl.DataFrame | None = None  # match_summary: the run's prior, threshold, estimates, queue counts


@dataclass(frozen=True)
class QualityOutcome:
    report: pl.DataFrame  # this run's quality_report rows
    scores: pl.DataFrame  # golden_quality_scores
    suite: SuiteRun


def record_columns(config: ProjectConfig) -> list[str]:
    """Columns of standardised and validated records that rules may name."""
    return ["source_system", "record_type", "party_type", *config.customer_schema.attributes]


def golden_columns(config: ProjectConfig) -> list[str]:
    return ["master_id", "record_type", "party_type", *config.customer_schema.attributes, "source_systems"]


def presence_only_columns(config: ProjectConfig) -> list[str]:
    """The attributes whose values no rule reads: of them a quality run needs only which rows hold one
    (completeness, ``required``, a cross-field rule's ``IS [NOT] NULL``), so they are not decrypted."""
    schema = config.customer_schema
    read = {name for name, attribute in schema.attributes.items() if any(not rule.required for rule in attribute.rules)}
    for rule in schema.rules:  # cross-field: always an expression (the schema checks)
        read |= _values_read(rule.expression or "")
    return [name for name in schema.attributes if name not in read]


def _values_read(expression: str) -> set[str]:
    """The columns a SQL rule reads the values of: every one it names, except where it only tests for null.

    The gate's own reading (``pl.sql_expr``) names the columns; sqlglot only tells which uses are null
    tests, and is trusted only if it found exactly those columns (it reads a few words, such as
    ``comment``, as commands, not columns).
    """
    named = set(pl.sql_expr(expression).meta.root_names())
    try:
        tree = sqlglot.parse_one(expression)
    except sqlglot.errors.SqlglotError:
        return named
    columns = list(tree.find_all(exp.Column))
    if not isinstance(tree, exp.Condition) or {column.name for column in columns} != named:
        return named
    return {
        column.name for column in columns
        if not (isinstance(column.parent, exp.Is) and isinstance(column.parent.expression, exp.Null))
    }


def attributes_by_source(config: ProjectConfig) -> dict[str, list[str]]:
    """The attributes each source maps: completeness is only meaningful for those."""
    return {source.name: list(dict.fromkeys(source.columns.values())) for source in config.sources}


def _batches(inputs: QualityInputs, mapped: dict[str, list[str]], filled: dict[str, list[pl.DataFrame]]) -> Iterator[Batch]:
    """The suite's batches: each source of the record stages, read as its turn comes (its completeness counted into
    ``filled`` on the way, so it is read once), then the golden records whole."""
    total = len(inputs.standardised.sources) + len(inputs.validated.sources) + 1
    with step("quality: the rules' suite over each stage and source", total=total) as advance:
        for stage in ("standardised", "validated"):
            records: BySource = getattr(inputs, stage)
            for source in records.sources:
                frame = records.read(source)
                filled[stage].append(report.filled_counts(frame, mapped, per_source=True))
                yield Batch(stage, STAGE_TABLES[stage], source, frame)
                del frame  # before the next source is read
                advance(1)
        yield Batch("golden", STAGE_TABLES["golden"], None, inputs.golden)
        advance(1)


def _summed(parts: list[pl.DataFrame], mapped: dict[str, list[str]]) -> pl.DataFrame:
    """The per-source counts of a stage (no source: no rows)."""
    if parts:
        return pl.concat(parts)
    empty = pl.DataFrame(schema={"source_system": pl.String, **{a: pl.String for s in mapped.values() for a in s}})
    return report.filled_counts(empty, mapped, per_source=True)


def measure_quality(
    inputs: QualityInputs, config: ProjectConfig, run_id: str, run_at: dt.datetime, docs_dir: Path | None = None
) -> QualityOutcome:
    """Validate the stages with the suite and compute every quality_report row and golden score of the run."""
    schema = config.customer_schema
    today = run_at.astimezone(dt.UTC).date()
    mapped = attributes_by_source(config)
    filled: dict[str, list[pl.DataFrame]] = {"standardised": [], "validated": []}
    suite = run_suite(_batches(inputs, mapped, filled), rule_expectations(schema, today), f"cmdm-{run_id}", docs_dir)
    standardised, validated = _summed(filled["standardised"], mapped), _summed(filled["validated"], mapped)
    scores = report.golden_quality_scores(inputs.golden, compile_rules(schema, today), mapped, run_id)
    rows_read = standardised.select("source_system", pl.col("rows_evaluated").alias("rows")).sort("source_system")
    parts = [
        report.rule_rows(suite.counts),
        report.completeness_rows(standardised, "standardised", mapped, per_source=True),
        report.completeness_rows(validated, "validated", mapped, per_source=True),
        report.completeness_rows(report.filled_counts(inputs.golden, mapped, per_source=False), "golden", mapped,
                                 per_source=False),
        report.quarantine_rows(rows_read, inputs.quarantined, list(schema.attributes)),
        report.duplicate_rows(inputs.xref),
        report.match_rows(inputs.clusters),
        *([report.matching_rows(inputs.matching)] if inputs.matching is not None else []),
        report.golden_rows(inputs.golden, scores),
    ]
    return QualityOutcome(report=report.assemble(run_id, run_at, parts), scores=scores, suite=suite)
