"""One extract asset per configured source: ``raw_<source>``."""


import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig, Source
from cmdm_pipeline.protect.erasure.apply import drop_erased_rows
from cmdm_pipeline.protect.erasure.subjects import TOMBSTONES
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.extract import extract, source_location
from cmdm_pipeline.tables import raw_table


def extract_retry_policy(source: Source, config: ProjectConfig) -> dg.RetryPolicy | None:
    """Retries for sources that fail for a while and then work again (a database restarting, a locked file)."""
    retry = config.schedule.extract_retry
    if retry.max_retries == 0 or source.kind not in retry.source_kinds:
        return None
    backoff = {"linear": dg.Backoff.LINEAR, "exponential": dg.Backoff.EXPONENTIAL}.get(retry.backoff)
    return dg.RetryPolicy(max_retries=retry.max_retries, delay=retry.delay_seconds, backoff=backoff)


def raw_asset(source: Source, config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name=raw_table(source),
        group_name="ingest",
        kinds={"duckdb", source.kind},
        description=(
            f"One row per record of source `{source.name}` ({source.kind}), every column as read, "
            "with lineage columns and any parse error."
        ),
        retry_policy=extract_retry_policy(source, config),
        deps=[TOMBSTONES],  # erasure runs first: rows its tombstones match are never stored
    )
    def _extract(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        frame = extract(source, config, ingested_at=dt.datetime.now(dt.UTC))
        store = warehouse.get(config)
        frame, erased = drop_erased_rows(store, frame, source, config, context.run.run_id)
        store.replace({raw_table(source): frame}, append=erased)
        unparsable = frame.filter(pl.col("parse_error").is_not_null()).height
        rows_erased = sum(int(row["rows_erased"].sum()) for row, _ in erased.values())
        context.log.info(f"{source.name}: read {frame.height + rows_erased} rows ({unparsable} unparsable, "
                         f"{rows_erased} dropped: erased)")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "unparsable_rows": unparsable,
                "rows_erased": rows_erased,
                "source": source_location(source, config),
                "table": raw_table(source),
            }
        )

    return _extract
