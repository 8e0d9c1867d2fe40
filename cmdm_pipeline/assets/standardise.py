"""``standardised_customers``: all sources on the customer schema."""


from collections import Counter
from collections.abc import Iterator

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.standardise import standardise_table
from cmdm_pipeline.tables import STANDARDISED as TABLE
from cmdm_pipeline.tables import raw_table
from cmdm_pipeline.warehouse import TableReader


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
        by_source: Counter[str] = Counter()
        by_rule: Counter[str] = Counter()
        with_issues = 0

        def parts(read: TableReader) -> Iterator[dict[str, pl.DataFrame]]:
            # A batch of one source at a time, each sealed and written before the next is made.
            nonlocal with_issues
            for source in config.sources:
                for frame in standardise_table(read, raw_table(source), source, config):
                    by_source.update(dict(frame.group_by("source_system").len().iter_rows()))
                    by_rule.update(dict(frame.select(pl.col("issues").explode().struct.field("rule")).drop_nulls()
                                        .group_by("rule").len().iter_rows()))
                    with_issues += frame.filter(pl.col("issues").list.len() > 0).height
                    yield {TABLE: frame}  # each source's count is logged by its progress step

        store.replace_in_parts(parts)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": sum(by_source.values()),
                "rows_with_issues": with_issues,
                "rows_by_source": dg.MetadataValue.json(dict(sorted(by_source.items()))),
                "issues_by_rule": dg.MetadataValue.json(dict(by_rule.most_common())),
            }
        )

    return _standardise

