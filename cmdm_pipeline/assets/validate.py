"""``validated_customers`` and ``quarantined_records``: the schema's rules as the gate."""


import datetime as dt
from collections import Counter
from collections.abc import Iterator

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.validate import validate_table
from cmdm_pipeline.tables import QUARANTINED, STANDARDISED, VALIDATED
from cmdm_pipeline.warehouse import TableReader


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
        tally = _Tally()

        def parts(read: TableReader) -> Iterator[dict[str, pl.DataFrame]]:
            for validated, quarantined in validate_table(read, STANDARDISED, config.customer_schema,
                                                         context.run.run_id, today):
                tally.add(validated, quarantined)
                yield {VALIDATED: validated, QUARANTINED: quarantined}

        store.replace_in_parts(parts)
        context.log.info(f"validated {tally.validated.total()} rows, quarantined {tally.quarantined.total()}")
        yield dg.MaterializeResult(
            asset_key=VALIDATED,
            metadata={
                "dagster/row_count": tally.validated.total(),
                "rows_with_warnings": tally.warned_rows,
                "rows_by_source": dg.MetadataValue.json(dict(sorted(tally.validated.items()))),
                "warnings_by_rule": dg.MetadataValue.json(dict(tally.warnings.most_common())),
            },
        )
        yield dg.MaterializeResult(
            asset_key=QUARANTINED,
            metadata={
                "dagster/row_count": tally.quarantined.total(),
                "quarantined_by_rule": dg.MetadataValue.json(dict(tally.rules.most_common())),
                "quarantined_by_source": dg.MetadataValue.json(dict(sorted(tally.quarantined.items()))),
                "quarantine_rate_by_source": dg.MetadataValue.json(tally.rates()),
            },
        )

    return _validate


class _Tally:
    """The gate's counts, batch by batch."""

    def __init__(self) -> None:
        self.validated: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.warned_rows = 0

    def add(self, validated: pl.DataFrame, quarantined: pl.DataFrame) -> None:
        self.validated.update(dict(validated.group_by("source_system").len().iter_rows()))
        self.quarantined.update(dict(quarantined.group_by("source_system").len().iter_rows()))
        self.warnings.update(dict(validated.select(pl.col("warnings").explode()).drop_nulls()
                                  .group_by("warnings").len().iter_rows()))
        self.rules.update(dict(quarantined.select(pl.col("rules_broken").explode()).drop_nulls()
                               .group_by("rules_broken").len().iter_rows()))
        self.warned_rows += validated.filter(pl.col("warnings").list.len() > 0).height

    def rates(self) -> dict[str, float]:
        """Share of each source's rows quarantined in this run."""
        sources = sorted({*self.validated, *self.quarantined})
        return {s: round(self.quarantined[s] / (self.validated[s] + self.quarantined[s]), 4) for s in sources}
