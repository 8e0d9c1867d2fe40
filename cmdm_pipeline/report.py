"""`cmdm report`: one quality run from the warehouse's `quality_report`, as a compact terminal summary.

Reads only: the warehouse is opened read-only. Shares of failed rows (quarantine, duplicates,
rules) are computed from the counts and compared with the previous run's counts, because a row's
`value` is not always that share (`duplicate_rate`'s value is records per master). Completeness,
the golden count and the quality score are values, and their changes come from `quality_trend`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from cmdm_pipeline.console import table
from cmdm_pipeline.sql import load_sql

STAGES = ("standardised", "validated", "golden", "quarantine")
_KEYS = ["stage", "source_system", "attribute", "metric", "rule"]
_TIME = "%Y-%m-%d %H:%M:%S UTC"


class ReportError(Exception):
    """Nothing to report (exit 1) or a wrong request (exit 2); the message says which and what to do."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class QualityRun:
    run_id: str
    run_at: dt.datetime  # UTC, stored without a zone


@dataclass(frozen=True)
class QualityReport:
    run: QualityRun
    previous: QualityRun | None
    #: The run's quality_report rows with `delta` (quality_trend) and `previous_evaluated`/`previous_failed`.
    rows: pl.DataFrame
    has_trend: bool


def read_report(warehouse: Path, run_id: str | None = None) -> QualityReport:
    """The run asked for (else the latest) with its changes; raise :class:`ReportError` when there is none."""
    if not warehouse.is_file():
        raise ReportError(f"no warehouse at {warehouse} yet: run `cmdm run` first")
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise ReportError(
                f"the warehouse {warehouse} is in use by a running pipeline (DuckDB lets nobody read while it "
                "writes); try again when the run has finished"
            ) from None
        raise ReportError(f"cannot open the warehouse {warehouse}: {exc}") from None
    try:
        tables = {row[0] for row in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        if "quality_report" not in tables:
            raise ReportError(f"the warehouse {warehouse} has no quality_report table yet: run `cmdm run` first")
        run = _run(con, "report/select_quality_run", {"run_id": run_id})
        if run is None and run_id is not None:
            raise ReportError(f"no quality report for run {run_id!r}; leave out --run for the latest", usage=True)
        if run is None:
            raise ReportError("quality_report is empty: run `cmdm run` first")
        previous = _run(con, "report/select_previous_quality_run", {"run_at": run.run_at})
        rows = _rows(con, run.run_id)
        trend = _trend(con, run.run_id) if "quality_trend" in tables else None
        if trend is not None:
            rows = rows.join(trend, on=_KEYS, how="left", nulls_equal=True)
        else:
            rows = rows.with_columns(delta=pl.lit(None, pl.Float64))
        before = pl.DataFrame(schema={**{k: pl.String for k in _KEYS}, "rows_evaluated": pl.Int64, "rows_failed": pl.Int64})
        if previous is not None:
            before = _rows(con, previous.run_id).select(*_KEYS, "rows_evaluated", "rows_failed")
        before = before.rename({"rows_evaluated": "previous_evaluated", "rows_failed": "previous_failed"})
        rows = rows.join(before, on=_KEYS, how="left", nulls_equal=True)
        return QualityReport(run=run, previous=previous, rows=rows, has_trend=trend is not None)
    finally:
        con.close()


def _rows(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    return con.sql(load_sql("report/select_quality_rows"), params={"run_id": run_id}).pl()


def _trend(con: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame | None:
    try:
        return con.sql(load_sql("report/select_quality_trend"), params={"run_id": run_id}).pl()
    except duckdb.Error:  # a view of another shape: the report still shows the run itself
        return None


def _run(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, object]) -> QualityRun | None:
    found = con.sql(load_sql(name), params=params).fetchall()
    return QualityRun(run_id=found[0][0], run_at=found[0][1]) if found else None


def render(report: QualityReport, stage: str | None = None, top: int = 3) -> str:
    """The terminal text: per-source rates, worst rules, least complete attributes, golden counts."""
    rows = report.rows if stage is None else report.rows.filter(pl.col("stage") == stage)
    lines = [f"quality report · run {report.run.run_id} at {report.run.run_at:{_TIME}}"]
    if report.previous is not None:
        lines.append(f"changes (Δ) since run {report.previous.run_id} at {report.previous.run_at:{_TIME}}")
    else:
        lines.append("first quality run: no changes to show")
    if not report.has_trend:
        lines.append("(no readable quality_trend view: changes of completeness, count and score are not shown)")
    if stage:
        lines.append(f"stage: {stage}")
    lines += _sources(rows) + _rules(rows, top) + _completeness(rows, top) + _matching(rows) + _golden(rows)
    if rows.height == 0:
        lines.append(f"\nno quality rows for stage {stage} in this run")
    return "\n".join(lines)


def _with_shares(rows: pl.DataFrame) -> pl.DataFrame:
    """Failed share of rows now and in the previous run, from the counts."""

    def share(failed: str, evaluated: str) -> pl.Expr:
        return pl.when(pl.col(evaluated) > 0).then(pl.col(failed) / pl.col(evaluated))

    return rows.with_columns(
        share("rows_failed", "rows_evaluated").alias("failed_share"),
        share("previous_failed", "previous_evaluated").alias("previous_share"),
    )


def _sources(rows: pl.DataFrame) -> list[str]:
    wanted = _with_shares(rows.filter(pl.col("metric").is_in(["quarantine_rate", "duplicate_rate"])))
    if wanted.height == 0:
        return []
    # A source's duplicates are records of one master inside that source; the all-sources row's are records
    # of one master across sources: a different rate, so it gets its own line, not the source column.
    headers = ["source", "rows", "quarantined", "Δ quarantined", "duplicates in source", "Δ in source"]
    table_rows = []
    across: dict[str, object] | None = None
    sources = sorted(set(wanted["source_system"].drop_nulls()))
    for source in sources + ([None] if wanted["source_system"].is_null().any() else []):
        mine = wanted.filter(pl.col("source_system").eq_missing(source))
        held, duplicated = _first(mine, "quarantine_rate"), _first(mine, "duplicate_rate")
        if source is None:
            across, duplicated = duplicated, None
        read = held["rows_evaluated"] if held else None
        table_rows.append((source or "all sources", _count(read), _rate(held and held["failed_share"]), _share_change(held),
                           _rate(duplicated and duplicated["failed_share"]), _share_change(duplicated)))
    lines = ["", table(headers, table_rows)]
    if across is not None and across["failed_share"] is not None:
        change = _share_change(across)
        lines.append(f"duplicates across sources: {_rate(across['failed_share'])} of records are not their master's "
                     f"only record{f' (Δ {change})' if change else ''}")
    return lines


def _first(rows: pl.DataFrame, metric: str) -> dict[str, object] | None:
    found = rows.filter(pl.col("metric") == metric)
    return found.row(0, named=True) if found.height else None


def _rules(rows: pl.DataFrame, top: int) -> list[str]:
    rules = rows.filter(pl.col("metric") == "rule")
    if rules.height == 0:
        return []
    # One line per stage and rule over all sources: the all-sources row if written, else the sum.
    combined = rules.group_by("stage", "rule").agg(
        [_over_sources(c) for c in ("rows_evaluated", "rows_failed", "previous_failed")]
    )
    failing = combined.filter(pl.col("rows_failed") > 0)
    if failing.height == 0:
        return ["", "worst rules by failed rows", "  every rule passed"]
    table_rows = []
    for stage in _stage_order(failing):
        worst = failing.filter(pl.col("stage") == stage).sort(["rows_failed", "rule"], descending=[True, False])
        for row in worst.head(top).iter_rows(named=True):
            evaluated, failed = row["rows_evaluated"], row["rows_failed"]
            passed = 1 - failed / evaluated if evaluated else None
            change = "" if row["previous_failed"] is None else f"{failed - row['previous_failed']:+,}"
            table_rows.append((stage, row["rule"], f"{failed:,}", _count(evaluated), _rate(passed), change))
    headers = ["stage", "rule", "failed", "of rows", "pass", "Δ failed"]
    return ["", "worst rules by failed rows", table(headers, table_rows, indent=2)]


def _over_sources(column: str) -> pl.Expr:
    """Inside a group: the all-sources row's value if there is one, else the sum; null if nothing is known."""
    value = pl.col(column)
    overall = value.filter(pl.col("source_system").is_null())
    total = pl.when(pl.col("source_system").is_null().any()).then(overall.sum()).otherwise(value.sum())
    return pl.when(value.is_not_null().any()).then(total).otherwise(None).alias(column)


def _completeness(rows: pl.DataFrame, top: int) -> list[str]:
    complete = rows.filter((pl.col("metric") == "completeness") & pl.col("attribute").is_not_null())
    if complete.height == 0:
        return []
    # Per-source completeness mostly says which columns a source has; the all-sources rows say more.
    if complete["source_system"].is_null().any():
        complete = complete.filter(pl.col("source_system").is_null())
    complete = complete.with_columns(share=pl.coalesce("value", "pass_rate")).filter(pl.col("share") < 1)
    if complete.height == 0:
        return ["", "least complete attributes", "  every attribute is complete"]
    table_rows = []
    for stage in _stage_order(complete):
        lowest = complete.filter(pl.col("stage") == stage).sort(["share", "attribute"], nulls_last=True).head(top)
        for row in lowest.iter_rows(named=True):
            name = row["attribute"] + (f" ({row['source_system']})" if row["source_system"] else "")
            table_rows.append((stage, name, _rate(row["share"]), _points(row["delta"])))
    headers = ["stage", "attribute", "complete", "Δ complete"]
    return ["", "least complete attributes", table(headers, table_rows, indent=2)]


def _golden(rows: pl.DataFrame) -> list[str]:
    overall = rows.filter(pl.col("source_system").is_null() & pl.col("attribute").is_null())
    parts = []
    count = _first(overall, "golden_count")
    if count is not None and count["value"] is not None:
        change = "" if count["delta"] is None else f" (Δ {count['delta']:+,.0f})"
        parts.append(f"golden records: {count['value']:,.0f}{change}")
    score = _first(overall, "quality_score")
    if score is not None and score["value"] is not None:
        change = "" if score["delta"] is None else f" (Δ {score['delta']:+.3f})"
        parts.append(f"mean quality score: {score['value']:.3f}{change}")
    return ["", " · ".join(parts)] if parts else []


def _matching(rows: pl.DataFrame) -> list[str]:
    """The run's link threshold, the model's own estimates, and the review queue."""
    found = {row["metric"]: row["value"] for row in rows.filter(pl.col("stage") == "matching").iter_rows(named=True)}
    if not found:
        return []
    lines = ["", f"matching: links at p >= {found.get('link_threshold', 0):.3f} (prior {found.get('match_prior', 0):.3g}); "
                 f"the model estimates its clusters' pair precision {_rate(found.get('estimated_precision'))} "
                 f"and recall {_rate(found.get('estimated_recall'))}"]
    if "queued" in found:
        lines.append(f"review queue: {found['queued']:,.0f} to decide; {found.get('decided_automatically', 0):,.0f} of "
                     f"{found.get('doubtful', 0):,.0f} doubtful decisions left to the model (over the review budget)")
    return lines


def _stage_order(rows: pl.DataFrame) -> list[str]:
    present = set(rows["stage"].drop_nulls())
    return [s for s in STAGES if s in present] + sorted(present - set(STAGES))


def _count(value: object) -> str:
    return "" if value is None else f"{value:,}"


def _rate(value: object) -> str:
    if value is None:
        return ""
    shown = f"{value:.1%}"
    # A few failures in many rows must not read as a clean 100 %.
    return ">99.9%" if shown == "100.0%" and value < 1 else shown  # type: ignore[operator]


def _points(delta: object) -> str:
    """A change of a share (0..1), in percentage points."""
    return "" if delta is None else f"{delta * 100:+.1f} pp"  # type: ignore[operator]


def _share_change(row: dict[str, object] | None) -> str:
    if row is None or row["failed_share"] is None or row["previous_share"] is None:
        return ""
    return _points(row["failed_share"] - row["previous_share"])  # type: ignore[operator]
