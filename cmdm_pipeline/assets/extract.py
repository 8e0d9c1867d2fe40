"""One extract asset per configured source: ``raw_<source>``."""


import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig, Source
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.extract import extract, source_location


def raw_table(source: Source) -> str:
    return f"raw_{source.name}"


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
        group_name="extract",
        kinds={"duckdb", source.kind},
        description=(
            f"One row per record of source `{source.name}` ({source.kind}), every column as read, "
            "with lineage columns and any parse error."
        ),
        retry_policy=extract_retry_policy(source, config),
    )
    def _extract(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        frame = extract(source, config, ingested_at=dt.datetime.now(dt.UTC))
        warehouse.get().replace({raw_table(source): frame})
        unparsable = frame.filter(pl.col("parse_error").is_not_null()).height
        context.log.info(f"{source.name}: read {frame.height} rows ({unparsable} unparsable)")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "unparsable_rows": unparsable,
                "source": source_location(source, config),
                "table": raw_table(source),
            }
        )

    return _extract
