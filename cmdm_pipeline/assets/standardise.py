"""``standardised_customers``: all sources on the customer schema."""


import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.standardise import standardise
from cmdm_pipeline.tables import STANDARDISED as TABLE
from cmdm_pipeline.tables import raw_table


def standardised_customers_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name=TABLE,
        group_name="standardise",
        kinds={"duckdb", "polars"},
        deps=[raw_table(source) for source in config.sources],
        description=(
            "One row per source record: every schema attribute standardised (names, e-mails, "
            "E.164 phones, ISO countries, dates, postcodes), with source values and the issues found."
        ),
    )
    def _standardise(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get(config)
        frames = []
        for source in config.sources:
            frame = standardise(store.read(raw_table(source)), source, config)
            context.log.info(f"{source.name}: standardised {frame.height} rows")
            frames.append(frame)
        table = pl.concat(frames, how="vertical")
        store.replace({TABLE: table})
        issues = table.select(pl.col("issues").explode().struct.field("rule")).drop_nulls()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": table.height,
                "rows_with_issues": table.filter(pl.col("issues").list.len() > 0).height,
                "rows_by_source": dg.MetadataValue.json(
                    dict(table.group_by("source_system").len().sort("source_system").iter_rows())
                ),
                "issues_by_rule": dg.MetadataValue.json(
                    dict(issues.group_by("rule").len().sort("len", descending=True).iter_rows())
                ),
            }
        )

    return _standardise
