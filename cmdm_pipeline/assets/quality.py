"""Quality: ``quality_report`` (every run kept) and ``golden_quality_scores``, Data Docs, and the blocking checks.

The checks sit on the assets whose bad result must stop publication: a failing check skips
everything downstream of its asset (matching, mastering, this report) and fails the run.
"""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt
from collections.abc import Collection
from typing import Any

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.keys.at_rest import AtRest, plaintext_personal_columns
from cmdm_pipeline.quality import checks
from cmdm_pipeline.quality.docs import building_folder, docs_folder, publish
from cmdm_pipeline.quality.expectations import SUITE_NAME
from cmdm_pipeline.quality.measure import (
    BySource,
    QualityInputs,
    golden_columns,
    measure_quality,
    presence_only_columns,
    record_columns,
)
from cmdm_pipeline.quality.report import CLUSTER_SIZE_BUCKETS, MATCH_RATE, match_rows
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.sql import load_sql, quote_identifier
from cmdm_pipeline.stages.reconcile import reconcile
from cmdm_pipeline.tables import (
    CLUSTERS,
    GOLDEN,
    MATCH_SUMMARY,
    QUALITY_REPORT,
    QUARANTINED,
    SCORES,
    STANDARDISED,
    VALIDATED,
    XREF,
    raw_table,
)
from cmdm_pipeline.warehouse import Warehouse

TREND = "quality_trend"
ACCEPT_DRIFT_TAG = "cmdm/accept_drift"
_TOP_FAILURES = 5


def _select(store: Warehouse, table: str, columns: list[str], presence_only: Collection[str] = ()) -> pl.DataFrame:
    return store.read(table, columns, presence_only=presence_only)


def _source_parts(store: Warehouse, table: str, columns: list[str], presence_only: Collection[str]) -> BySource:
    """``table`` read a source at a time, each chosen in DuckDB: at 10M records a stage whole would not fit."""
    sources = sorted(store.query(f"SELECT DISTINCT source_system FROM {quote_identifier(table)}")["source_system"])  # noqa: S608 - identifiers are constants or quoted
    return BySource(sources, lambda source: store.read(table, columns, rows=pl.DataFrame({"source_system": [source]}),
                                                        presence_only=presence_only))


def quality_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="measure_quality",
        specs=[
            dg.AssetSpec(
                QUALITY_REPORT, group_name="govern",
                deps=[STANDARDISED, VALIDATED, QUARANTINED, CLUSTERS, MATCH_SUMMARY, XREF, GOLDEN],
                kinds={"duckdb", "great_expectations"},
                description="One row per run × stage × source × attribute × metric × rule: rule pass rates (the schema's "
                "rules as a Great Expectations suite), completeness, quarantine and duplicate rates, match rate, "
                "cluster sizes, matching's prior, threshold and estimated precision and recall, golden counts and scores. Every run kept; the quality_trend view compares runs.",
            ),
            dg.AssetSpec(
                SCORES, group_name="govern", deps=[GOLDEN], kinds={"duckdb"},
                description="One row per master customer: quality score (0..1), completeness, rule pass rate, rules failed.",
            ),
        ],
    )
    def _quality(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        run_id = context.run.run_id
        unread = presence_only_columns(config)  # no rule reads their values: left encrypted
        inputs = QualityInputs(
            standardised=_source_parts(store, STANDARDISED, record_columns(config), unread),
            validated=_source_parts(store, VALIDATED, record_columns(config), unread),
            quarantined=_select(store, QUARANTINED, ["source_system", "rules_broken"]),
            clusters=_select(store, CLUSTERS, ["source_system", "cluster"]),
            xref=_select(store, XREF, ["source_system", "master_id"]),
            golden=_select(store, GOLDEN, golden_columns(config), unread),
            matching=store.read(MATCH_SUMMARY) if MATCH_SUMMARY in store.tables() else None,
        )
        published = docs_folder(config.warehouse_path)
        building = building_folder(published, run_id)
        outcome = measure_quality(inputs, config, run_id, dt.datetime.now(dt.UTC), building)
        store.replace({SCORES: outcome.scores})
        store.replace_run(QUALITY_REPORT, outcome.report, run_id)
        with store.connect() as con:
            con.execute(load_sql("quality/create_quality_trend"))
        # Published after the tables: the site never shows a run the report does not hold.
        index = publish(building, published)
        rows = outcome.report
        context.log.info(f"quality: {rows.height} report rows, GX suite over {outcome.suite.counts.height} batch × rule "
                         f"results in {outcome.suite.seconds:.1f}s; Data Docs {index}")
        yield dg.MaterializeResult(asset_key=QUALITY_REPORT, metadata={
            "dagster/row_count": rows.height,
            # A browser refuses file:// links from a web page: the workbench (`cmdm serve`) serves the site.
            "data_docs": dg.MetadataValue.url(f"{config.web.base_url.rstrip('/')}/quality/data-docs/index.html"),
            "data_docs_folder": dg.MetadataValue.path(str(index.parent)),
            "suite": SUITE_NAME,
            "expectations": outcome.suite.counts["rule"].n_unique(),
            "gx_seconds": round(outcome.suite.seconds, 2),
            "top_failures": dg.MetadataValue.json(_top_failures(rows)),
            "quarantine_rate_by_source": dg.MetadataValue.json(_by_source(rows, "quarantine_rate")),
            "match_rate": _overall(rows, MATCH_RATE),
            "mean_quality_score": _overall(rows, "quality_score"),
        })
        scores = outcome.scores["quality_score"]
        mean_score = scores.mean()  # a float, or None without golden records
        yield dg.MaterializeResult(asset_key=SCORES, metadata={
            "dagster/row_count": outcome.scores.height,
            "mean_quality_score": round(mean_score if isinstance(mean_score, float) else 0.0, 4),
            "below_half": int((scores < 0.5).sum()),
        })

    return _quality


def _top_failures(rows: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per stage, the rules failing most rows (all sources together): rule ids and counts only."""
    failing = rows.filter((pl.col("metric") == "rule") & pl.col("source_system").is_null() & (pl.col("rows_failed") > 0))
    top = failing.sort("rows_failed", "rule", descending=[True, False]).group_by("stage", maintain_order=True).head(_TOP_FAILURES)
    return {stage: dict(zip(part["rule"], part["rows_failed"], strict=True))
            for (stage,), part in top.partition_by("stage", as_dict=True, maintain_order=True).items()}


def _by_source(rows: pl.DataFrame, metric: str) -> dict[str, float]:
    found = rows.filter((pl.col("metric") == metric) & pl.col("source_system").is_not_null())
    return {s: round(v, 4) for s, v in found.select("source_system", "value").iter_rows()}


def _overall(rows: pl.DataFrame, metric: str) -> float:
    found = rows.filter((pl.col("metric") == metric) & pl.col("source_system").is_null())["value"]
    return round(float(found[0]), 4) if found.len() and found[0] is not None else float("nan")


# --- checks ---------------------------------------------------------------------------------


def _result(verdict: checks.Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN if verdict.warn_only else dg.AssetCheckSeverity.ERROR,
        description=verdict.description,
        metadata={k: _metadata_value(v) for k, v in verdict.metadata.items()},
    )


def _metadata_value(value: Any) -> Any:
    if value is None:
        return dg.MetadataValue.text("none")
    return dg.MetadataValue.json(value) if isinstance(value, dict) else value


def _previous_match_metrics(store: Warehouse, run_id: str) -> tuple[str | None, dict[str, float]]:
    """The latest other run's all-sources match rate and cluster-size shares from quality_report."""
    if QUALITY_REPORT not in store.tables():
        return None, {}
    metrics = [MATCH_RATE, *[m for _, _, m in CLUSTER_SIZE_BUCKETS]]
    found = store.query(load_sql("quality/select_previous_run_metrics"), {"run_id": run_id, "metrics": metrics})
    if found.height == 0:
        return None, {}
    return found["run_id"][0], dict(found.select("metric", "value").iter_rows())


def quality_checks(config: ProjectConfig) -> list[dg.AssetChecksDefinition]:
    limits = config.quality

    @dg.asset_check(
        asset=VALIDATED, name="source_rows_reconcile", blocking=True,
        additional_deps=[QUARANTINED, *[raw_table(s) for s in config.sources]],
        description="Every row read from each source is validated or quarantined: none lost, none doubled.",
    )
    def _reconcile(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.get(config)
        rows_read = {s.name: int(store.query(f"SELECT count(*) AS n FROM {quote_identifier(raw_table(s))}")["n"][0])  # noqa: S608 - identifiers are constants or quoted, values bound
                     for s in config.sources}
        table = reconcile(context.run.run_id, rows_read, _select(store, VALIDATED, ["source_system"]),
                          _select(store, QUARANTINED, ["source_system"]), dt.datetime.now(dt.UTC))
        return _result(checks.reconciliation_verdict(table))

    @dg.asset_check(
        asset=VALIDATED, name="quarantine_rate_within_limit", blocking=True, additional_deps=[QUARANTINED],
        description="No source has more of its rows quarantined than `quality.max_quarantine_rate` (or its own limit).",
    )
    def _quarantine(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.get(config)
        counts = store.query(load_sql("quality/select_rows_by_source"))
        return _result(checks.quarantine_rate_verdict(counts, limits.max_quarantine_rate, limits.quarantine_rate_by_source))

    @dg.asset_check(
        asset=GOLDEN, name="unique_master_id", blocking=True,
        description="Every golden record has a master_id, and no two share one.",
    )
    def _unique(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        found = warehouse.get(config).query(load_sql("quality/count_master_ids")).row(0, named=True)
        return _result(checks.unique_master_id_verdict(found["rows"], found["distinct_ids"], found["missing"]))

    @dg.asset_check(
        asset=GOLDEN, name="personal_data_stored_encrypted", blocking=True,
        description="Every column the schema marks pii (and every unmapped source column) is stored as ciphertext "
        "in every table of the warehouse; a warning when `protection.encrypt` is off.",
    )
    def _encrypted(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        stored, encrypted = warehouse.get(config).column_types()
        plaintext = plaintext_personal_columns(AtRest(config), stored, encrypted)
        return _result(checks.personal_data_encrypted_verdict(plaintext, len(stored), config.protection.encrypt))

    def _current(store: Warehouse) -> dict[str, float]:
        rows = match_rows(_select(store, CLUSTERS, ["source_system", "cluster"]))
        return dict(rows.filter(pl.col("source_system").is_null()).select("metric", "value").iter_rows())

    def _accepted(context: dg.AssetCheckExecutionContext) -> bool:
        return context.run.tags.get(ACCEPT_DRIFT_TAG, "").lower() == "true"

    @dg.asset_check(
        asset=CLUSTERS, name="match_rate_within_drift", blocking=True,
        description="The share of records linked to another record moved at most `quality.max_match_rate_drift` "
        f"since the previous run (run tag {ACCEPT_DRIFT_TAG}=true accepts a larger move).",
    )
    def _match_rate(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.get(config)
        previous_run, previous = _previous_match_metrics(store, context.run.run_id)
        return _result(checks.match_rate_drift_verdict(
            _current(store).get(MATCH_RATE), previous.get(MATCH_RATE), previous_run, limits.max_match_rate_drift,
            _accepted(context)))

    @dg.asset_check(
        asset=CLUSTERS, name="cluster_sizes_within_drift", blocking=True,
        description="The cluster-size distribution moved at most `quality.max_cluster_size_drift` (total variation "
        f"distance) since the previous run (run tag {ACCEPT_DRIFT_TAG}=true accepts a larger move).",
    )
    def _cluster_sizes(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.get(config)
        previous_run, previous = _previous_match_metrics(store, context.run.run_id)
        buckets = [m for _, _, m in CLUSTER_SIZE_BUCKETS]
        current = {k: v for k, v in _current(store).items() if k in buckets and v is not None}
        return _result(checks.cluster_size_drift_verdict(
            current, {k: v for k, v in previous.items() if k in buckets} or None, previous_run,
            limits.max_cluster_size_drift, _accepted(context)))

    return [_reconcile, _quarantine, _unique, _encrypted, _match_rate, _cluster_sizes]
