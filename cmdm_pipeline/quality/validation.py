"""Run the GX suite over the pipeline's tables, one batch per stage and source, and keep the counts.

GX runs in an ephemeral context on pandas batches (no SQL datasource: on DuckDB it fails
silently) and makes no network calls. Results are asked for as counts and rates only
(``exclude_unexpected_values``): GX never collects failing values, so neither its results
nor the Data Docs built from them can show personal data.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from cmdm_pipeline.quality.docs import SITE_NAME, site_config
from cmdm_pipeline.quality.expectations import RuleExpectation, build_suite, expectation_frame

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

#: Counts and rates only: no samples of failing values, no failing rows, no index lists.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "exclude_unexpected_values": True,
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "return_unexpected_index_query": False,
}

COUNT_COLUMNS: dict[str, pl.DataType] = {
    "stage": pl.String(),
    "source_system": pl.String(),
    "rule": pl.String(),
    "attribute": pl.String(),
    "severity": pl.String(),
    "rows_evaluated": pl.Int64(),
    "rows_failed": pl.Int64(),
}


class QualityError(RuntimeError):
    """GX could not evaluate a rule; the message names stage, source and rule, never values."""


@dataclass(frozen=True)
class Batch:
    """One table (``stage``) or one source's part of it, validated as one GX batch."""

    stage: str
    table: str  # the warehouse table: the data asset's name in Data Docs
    source_system: str | None  # None: the whole table
    frame: pl.DataFrame


@dataclass(frozen=True)
class SuiteRun:
    counts: pl.DataFrame  # one row per batch and rule: COUNT_COLUMNS
    docs_index: Path | None  # the Data Docs index, when a site folder was given
    seconds: float


def run_suite(
    batches: Iterable[Batch], expectations: list[RuleExpectation], run_name: str, docs_dir: Path | None = None
) -> SuiteRun:
    """Validate every batch with the suite; build Data Docs into ``docs_dir`` (a fresh folder) if given.

    ``batches`` is read once, a batch at a time: a generator may read each from the warehouse when its turn comes.
    """
    started = time.perf_counter()
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GX draws a progress bar per batch on stderr; the run's log says enough.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        # GX's DataDocsSiteConfigTypedDict is incomplete (no show_how_to_buttons, which SiteBuilder takes).
        context.update_data_docs_site(SITE_NAME, site_config(docs_dir))  # type: ignore[arg-type]
    datasource = context.data_sources.add_pandas("cmdm_warehouse")
    suite = context.suites.add(build_suite(expectations))
    definitions = {}
    by_rule = {spec.rule_id: spec for spec in expectations}
    rows: list[dict[str, Any]] = []
    for batch in batches:
        if batch.stage not in definitions:
            batch_definition = datasource.add_dataframe_asset(batch.table).add_batch_definition_whole_dataframe("whole table")
            definitions[batch.stage] = context.validation_definitions.add(
                gx.ValidationDefinition(name=batch.stage, data=batch_definition, suite=suite)
            )
        with warnings.catch_warnings():
            # pandas warns about capture groups in a declared pattern; matching is unaffected.
            warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
            result = definitions[batch.stage].run(
                batch_parameters={"dataframe": expectation_frame(batch.frame, expectations)},
                result_format=RESULT_FORMAT,
                # No spaces: the run name becomes a folder in the Data Docs links.
                run_id=RunIdentifier(run_name=f"{run_name}-{batch.source_system or 'all_sources'}"),
            )
        rows += _counts(result, batch, by_rule)
        del batch, result  # the next batch is read meanwhile: without this, two are in memory
    docs_index = None
    if docs_dir is not None:
        context.build_data_docs(site_names=[SITE_NAME])
        docs_index = docs_dir / "index.html"
    counts = pl.DataFrame(rows, schema=COUNT_COLUMNS, orient="row") if rows else pl.DataFrame(schema=COUNT_COLUMNS)
    return SuiteRun(counts=counts, docs_index=docs_index, seconds=time.perf_counter() - started)


def _counts(result: ExpectationSuiteValidationResult, batch: Batch, by_rule: dict[str, RuleExpectation]) -> list[dict[str, Any]]:
    rows = []
    for outcome in result.results:
        where = f"{batch.stage}/{batch.source_system or 'all sources'}"
        if outcome.expectation_config is None:  # GX sets it on every result of a suite run
            raise QualityError(f"{where}: GX returned a result without its expectation")
        rule_id = outcome.expectation_config.meta["rule"]
        spec = by_rule[rule_id]
        if _raised(outcome.exception_info or {}):
            # GX's message may quote data; the rule and the expectation type say where to look.
            raise QualityError(f"{where}: GX could not evaluate rule {rule_id!r} ({spec.expectation} on {spec.column!r})")
        found = outcome.result
        if found.get("unexpected_count") is None:
            raise QualityError(f"{where}: GX returned no counts for rule {rule_id!r}")
        evaluated = found["element_count"]
        if spec.cross_field:
            # A null rule column means "not applicable to this table", not "passed".
            evaluated -= found.get("missing_count") or 0
        rows.append({
            "stage": batch.stage, "source_system": batch.source_system, "rule": rule_id,
            "attribute": spec.attribute, "severity": spec.severity.value,
            "rows_evaluated": evaluated, "rows_failed": found["unexpected_count"],
        })
    return rows


def _raised(info: dict[str, Any]) -> bool:
    """GX reports an exception at the top level or per metric it could not compute."""
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())
