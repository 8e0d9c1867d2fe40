"""``validated_customers`` and ``quarantined_records``: the schema's rules as the gate."""


import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.standardise import standardised_columns
from cmdm_pipeline.stages.validate import validate, with_source_values
from cmdm_pipeline.tables import QUARANTINED, STANDARDISED, VALIDATED


def validation_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="validate_customers",
        specs=[
            dg.AssetSpec(
                VALIDATED, group_name="validate", deps=[STANDARDISED], kinds={"duckdb", "pandera"},
                description="One row per source record that passed every `reject` rule; `warnings` lists the `warn` rules it failed.",
            ),
            dg.AssetSpec(
                QUARANTINED, group_name="validate", deps=[STANDARDISED], kinds={"duckdb", "pandera"},
                description="One row per source record held back: the rules it broke, a readable reason and its original source values.",
            ),
        ],
    )
    def _validate(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        today = dt.datetime.now(dt.UTC).date()
        # The row as read (source_values, the largest column) is decrypted only for the rows quarantined.
        columns = [c for c in standardised_columns(config.customer_schema) if c != "source_values"]
        validated, quarantined = validate(store.read(STANDARDISED, columns), config.customer_schema, context.run.run_id, today)
        held = quarantined.select("source_system", "source_row_number")
        rows = pl.struct("source_system", "source_row_number").is_in(held.to_struct().implode())
        source_values = store.read(STANDARDISED, ["source_system", "source_row_number", "source_values"], where=rows)
        quarantined = with_source_values(quarantined, source_values)
        store.replace({VALIDATED: validated, QUARANTINED: quarantined})
        by_rule = quarantined.select(pl.col("rules_broken").explode()).group_by("rules_broken").len()
        warned = validated.select(pl.col("warnings").explode()).drop_nulls().group_by("warnings").len()
        context.log.info(f"validated {validated.height} rows, quarantined {quarantined.height}")
        yield dg.MaterializeResult(
            asset_key=VALIDATED,
            metadata={
                "dagster/row_count": validated.height,
                "rows_with_warnings": validated.filter(pl.col("warnings").list.len() > 0).height,
                "rows_by_source": dg.MetadataValue.json(
                    dict(validated.group_by("source_system").len().sort("source_system").iter_rows())
                ),
                "warnings_by_rule": dg.MetadataValue.json(dict(warned.sort("len", descending=True).iter_rows())),
            },
        )
        yield dg.MaterializeResult(
            asset_key=QUARANTINED,
            metadata={
                "dagster/row_count": quarantined.height,
                "quarantined_by_rule": dg.MetadataValue.json(dict(by_rule.sort("len", descending=True).iter_rows())),
                "quarantined_by_source": dg.MetadataValue.json(
                    dict(quarantined.group_by("source_system").len().sort("source_system").iter_rows())
                ),
                "quarantine_rate_by_source": dg.MetadataValue.json(_quarantine_rates(validated, quarantined)),
            },
        )

    return _validate


def _quarantine_rates(validated: pl.DataFrame, quarantined: pl.DataFrame) -> dict[str, float]:
    """Share of each source's rows quarantined in this run."""
    rows = pl.concat([validated.select("source_system", held=pl.lit(False)),
                      quarantined.select("source_system", held=pl.lit(True))])
    rates = rows.group_by("source_system").agg(pl.col("held").mean().round(4)).sort("source_system")
    return dict(rates.iter_rows())
