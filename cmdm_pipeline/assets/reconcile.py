"""``run_reconciliation``: rows read = validated + quarantined, per source, every run."""


import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.assets.extract import raw_table
from cmdm_pipeline.assets.validate import QUARANTINED, VALIDATED
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.erasure_apply import rows_erased
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.reconcile import assert_balanced, reconcile

TABLE = "run_reconciliation"


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
        rows_read = {s.name: store.query(f"SELECT count(*) AS n FROM {raw_table(s)}")["n"][0] for s in config.sources}
        columns = "SELECT source_system FROM {} WHERE run_id = $run_id"
        validated = store.query(columns.format(VALIDATED), {"run_id": context.run.run_id})
        quarantined = store.query(columns.format(QUARANTINED), {"run_id": context.run.run_id})
        table = reconcile(context.run.run_id, rows_read, validated, quarantined, dt.datetime.now(dt.UTC),
                          rows_erased(store, context.run.run_id))
        if TABLE in store.tables() and "rows_erased" not in store.query(f"SELECT * FROM {TABLE} LIMIT 0").columns:
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
