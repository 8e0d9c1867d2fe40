"""The publish step: each purpose lens of ``cmdm.yaml`` is its own asset (``lens_<name>``), and
``published_reports`` the report tables BI reads beside them; one step publishes them all at once
(files all or none, PostgreSQL in one transaction), each lens publication audited (``lens_published``)."""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt
import html
import time
from collections.abc import Iterator

import dagster as dg

from cmdm_pipeline.config import Lens, ProjectConfig
from cmdm_pipeline.protect.keys.kek import load_keyring
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.protect.lenses.build import LENS_FOLDER, REPORT_FOLDER, column_treatments
from cmdm_pipeline.protect.lenses.publication import REPORTS, publish_lenses
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.tables import CONSENT_CURRENT, GOLDEN, lens_schema, reports_schema

GROUP = "publish"
PUBLISHED_REPORTS = "published_reports"


def lens_key(lens_name: str) -> dg.AssetKey:
    return dg.AssetKey(f"lens_{lens_name}")


def _lens_spec(lens: Lens, config: ProjectConfig) -> dg.AssetSpec:
    # Markdown in the UI: an angle-bracketed word would be taken for an HTML tag and vanish.
    described = html.escape(lens.description, quote=False)
    return dg.AssetSpec(
        lens_key(lens.name), group_name=GROUP, kinds={"parquet"},
        deps=[GOLDEN, *([CONSENT_CURRENT] if config.consent else [])],
        metadata={"dagster/column_schema": lens_schema(lens, config)},
        description=f"One row per master customer the {lens.name} lens shows ({described}): its columns revealed, "
        f"masked or tokenised, for masters with its consent purpose and row filters; published as {LENS_FOLDER}/"
        f"{lens.name}.* in the warehouse folder (Parquet encrypted when it reveals personal data), and as a "
        "PostgreSQL schema with a lenses_target; rebuilt every run.",
    )


def lens_assets(config: ProjectConfig) -> list[dg.AssetsDefinition]:
    specs = [*(_lens_spec(lens, config) for lens in config.lenses), dg.AssetSpec(
        PUBLISHED_REPORTS, group_name=GROUP, kinds={"parquet"}, deps=list(REPORTS),
        metadata={"dagster/column_schema": reports_schema(config)},
        description=f"One row per row of {', '.join(REPORTS)}: those tables as Parquet files in {REPORT_FOLDER}/ "
        "in the warehouse folder, for BI tools that must never open the warehouse; counts, quality metrics and "
        "record ids, no attribute values; rewritten with the lenses, all files or none. The same step publishes the "
        "workbench snapshot (`cmdm serve` reads it, never the warehouse): web/ in the warehouse folder, encrypted.",
    )]

    @dg.multi_asset(name="publish_for_bi", specs=specs, can_subset=False)
    def _publish(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
        started = time.perf_counter()
        key_store = KeyStore.for_config(config, load_keyring(config, create_dev_key=True))
        done = publish_lenses(warehouse.get(config), config, key_store, context.run.run_id, dt.datetime.now(dt.UTC))
        if done.old_keys_destroyed:
            context.log.info(f"{done.old_keys_destroyed} rotated-out lens key(s) destroyed")
        lenses = {lens.name: lens for lens in config.lenses}
        for lens in done.published:
            schema = done.schemas.get(lens.name)
            context.log.info(f"lens {lens.name}: {lens.rows} rows, {', '.join(str(p) for p in lens.files.values())}"
                             + (" (encrypted)" if lens.encrypted else "") + (f"; PostgreSQL {schema}" if schema else ""))
            yield dg.MaterializeResult(asset_key=lens_key(lens.name), metadata={
                "dagster/row_count": lens.rows,
                "columns_by_treatment": dg.MetadataValue.json(column_treatments(lenses[lens.name])),
                "files": dg.MetadataValue.json({f: str(path) for f, path in lens.files.items()}),
                "encrypted": lens.encrypted,
                "postgresql_schema": schema or "",
                "key_generation": done.generations.latest.get(lens.name, 1),
            })
        yield dg.MaterializeResult(asset_key=PUBLISHED_REPORTS, metadata={
            "dagster/row_count": sum(rows for _, rows in done.reports.values()),
            "rows_by_report": dg.MetadataValue.json({name: rows for name, (_, rows) in done.reports.items()}),
            "files": dg.MetadataValue.json({name: str(path) for name, (path, _) in done.reports.items()}),
            "workbench_snapshot": dg.MetadataValue.path(str(done.snapshot)) if done.snapshot else "",
            "seconds": round(time.perf_counter() - started, 3),
        })

    return [_publish]
