"""One run's quality measurement: the GX suite over each stage, then every ``quality_report`` row.

Standardised and validated records are validated per source (a GX batch each, so Data Docs
and the report show which source fails which rule); golden records as one batch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlglot
from sqlglot import exp

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.quality import report
from cmdm_pipeline.quality.expectations import rule_expectations
from cmdm_pipeline.quality.validation import Batch, SuiteRun, run_suite
from cmdm_pipeline.stages.validate import compile_rules

#: Report stage -> warehouse table validated with the suite.
STAGE_TABLES = {"standardised": "standardised_customers", "validated": "validated_customers", "golden": "golden_customers"}


@dataclass(frozen=True)
class QualityInputs:
    """The tables a quality run reads, cut to the columns it needs."""

    standardised: pl.DataFrame  # source_system, record_type, party_type, attributes
    validated: pl.DataFrame  # same columns
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


def stage_batches(inputs: QualityInputs) -> list[Batch]:
    batches = []
    for stage in ("standardised", "validated"):
        frame: pl.DataFrame = getattr(inputs, stage)
        # Lazy parts, not partition_by: a copy of both tables by source would be held through the whole suite.
        sources = sorted(frame["source_system"].unique().to_list(), key=str)
        batches += [Batch(stage, STAGE_TABLES[stage], source, frame.lazy().filter(pl.col("source_system").eq_missing(source)))
                    for source in sources]
    return [*batches, Batch("golden", STAGE_TABLES["golden"], None, inputs.golden)]


def measure_quality(
    inputs: QualityInputs, config: ProjectConfig, run_id: str, run_at: dt.datetime, docs_dir: Path | None = None
) -> QualityOutcome:
    """Validate the stages with the suite and compute every quality_report row and golden score of the run."""
    schema = config.customer_schema
    today = run_at.astimezone(dt.UTC).date()
    suite = run_suite(stage_batches(inputs), rule_expectations(schema, today), f"cmdm-{run_id}", docs_dir)
    mapped = attributes_by_source(config)
    scores = report.golden_quality_scores(inputs.golden, compile_rules(schema, today), mapped, run_id)
    rows_read = inputs.standardised.group_by("source_system").agg(pl.len().alias("rows")).sort("source_system")
    parts = [
        report.rule_rows(suite.counts),
        report.completeness_rows(inputs.standardised, "standardised", mapped, per_source=True),
        report.completeness_rows(inputs.validated, "validated", mapped, per_source=True),
        report.completeness_rows(inputs.golden, "golden", mapped, per_source=False),
        report.quarantine_rows(rows_read, inputs.quarantined, list(schema.attributes)),
        report.duplicate_rows(inputs.xref),
        report.match_rows(inputs.clusters),
        *([report.matching_rows(inputs.matching)] if inputs.matching is not None else []),
        report.golden_rows(inputs.golden, scores),
    ]
    return QualityOutcome(report=report.assemble(run_id, run_at, parts), scores=scores, suite=suite)
