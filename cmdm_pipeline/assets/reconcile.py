"""``run_reconciliation``: rows read = validated + quarantined, per source, every run; and the check that
stops a run before matching when a source yields nothing, shrank too much, or went without being retired."""


import datetime as dt
from collections.abc import Mapping

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.erasure.apply import rows_erased
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.sql import quote_identifier, statement
from cmdm_pipeline.stages.reconcile import assert_balanced, reconcile, source_shrinkage
from cmdm_pipeline.tables import ID_SEQUENCE, QUARANTINED, VALIDATED, raw_table
from cmdm_pipeline.tables import RECONCILIATION as TABLE
from cmdm_pipeline.warehouse import Warehouse

ACCEPT_SHRINK_TAG = "cmdm/accept_shrink"  # comma-separated source names


def accepted_shrinkage(tags: Mapping[str, str]) -> list[str]:
    """The sources a run's tag lets shrink or vanish (``cmdm run --accept-shrink SOURCE`` sets it)."""
    return [name.strip() for name in tags.get(ACCEPT_SHRINK_TAG, "").split(",") if name.strip()]


def rows_read(store: Warehouse, config: ProjectConfig, run_id: str) -> dict[str, int]:
    """Rows each configured source yielded this run: those stored, plus those an erasure tombstone dropped."""
    erased = rows_erased(store, run_id)
    counts = {s.name: int(store.query(f"SELECT count(*) AS n FROM {quote_identifier(raw_table(s))}")["n"][0])  # noqa: S608 - a quoted name
              for s in config.sources}
    return {name: n + erased.get(name, 0) for name, n in counts.items()}


def last_good_counts(store: Warehouse, run_id: str) -> dict[str, int] | None:
    """Rows read per source by the last run that assigned master ids; None on a warehouse without one."""
    if not {TABLE, ID_SEQUENCE} <= set(store.tables()):
        return None
    found = store.query(statement("reconcile/select_last_good_counts", reconciliation=TABLE, sequence=ID_SEQUENCE),
                        {"run_id": run_id})
    return {s: int(n) for s, n in found.iter_rows()} or None


def source_shrink_check(config: ProjectConfig) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=VALIDATED, name="sources_did_not_shrink", blocking=True,
        additional_deps=[raw_table(s) for s in config.sources],
        description="No source yields 0 rows, shrinks by more than `quality.max_shrink` since the last good run, or "
        f"disappears from `sources` without being listed in `retired_sources` (run tag {ACCEPT_SHRINK_TAG}=SOURCE "
        "or `cmdm run --accept-shrink SOURCE` accepts it). A failure stops the run before matching, so the masters "
        "of records missing for a night are not dropped.",
    )
    def _shrink(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        store = warehouse.get(config)
        run_id = context.run.run_id
        now, before = rows_read(store, config, run_id), last_good_counts(store, run_id)
        accepted = accepted_shrinkage(context.run.tags)
        problems = source_shrinkage(now, before, config.retired_sources, config.quality.max_shrink, accepted)
        metadata: dict[str, dg.MetadataValue | str] = {
            "rows_read": dg.MetadataValue.json(now), "rows_read_last_good_run": dg.MetadataValue.json(before or {}),
            "accepted": ", ".join(accepted) or "none"}
        if problems:
            return dg.AssetCheckResult(passed=False, description="; ".join(problems), metadata=metadata)
        return dg.AssetCheckResult(passed=True, description=f"{len(now)} source(s) within quality.max_shrink "
                                   f"{config.quality.max_shrink:.0%} of the last good run", metadata=metadata)

    return _shrink


def run_reconciliation_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name=TABLE,
        group_name="validate",
        kinds={"duckdb"},
        deps=[VALIDATED, QUARANTINED, *[raw_table(s) for s in config.sources]],
        description="One row per run and source: rows read, validated, quarantined and erased. The run fails if they do not add up.",
    )
    def _reconcile(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get(config)
        stored = {s.name: store.query(f"SELECT count(*) AS n FROM {raw_table(s)}")["n"][0] for s in config.sources}  # noqa: S608 - identifiers are constants or quoted, values bound
        columns = "SELECT source_system FROM {} WHERE run_id = $run_id"
        validated = store.query(columns.format(VALIDATED), {"run_id": context.run.run_id})
        quarantined = store.query(columns.format(QUARANTINED), {"run_id": context.run.run_id})
        table = reconcile(context.run.run_id, stored, validated, quarantined, dt.datetime.now(dt.UTC),
                          rows_erased(store, context.run.run_id))
        if TABLE in store.tables() and "rows_erased" not in store.query(f"SELECT * FROM {TABLE} LIMIT 0").columns:  # noqa: S608 - identifiers are constants or quoted, values bound
            # A warehouse from before erasure: earlier runs erased nothing.
            store.replace({TABLE: store.read(TABLE).with_columns(rows_erased=pl.lit(0, dtype=pl.Int64)).select(table.columns)})
        # Written before the check so a failing run leaves its evidence behind.
        store.replace_run(TABLE, table, context.run.run_id)
        assert_balanced(table)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": table.height,
                "rows_read": int(table["rows_read"].sum()),
                "rows_validated": int(table["rows_validated"].sum()),
                "rows_quarantined": int(table["rows_quarantined"].sum()),
                "rows_erased": int(table["rows_erased"].sum()),
            }
        )

    return _reconcile
