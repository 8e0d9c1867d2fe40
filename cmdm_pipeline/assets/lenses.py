"""``lenses``: each purpose lens of ``cmdm.yaml`` published as its own files (and PostgreSQL schema), each
publication audited (``lens_published``), with the lens's latest file-key generation."""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt
import time

import dagster as dg

from cmdm_pipeline.assets.consent import CONSENT_CURRENT
from cmdm_pipeline.assets.master import GOLDEN
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.keys import load_keyring
from cmdm_pipeline.protect.keystore import KeyStore
from cmdm_pipeline.protect.lens_publication import publish_lenses
from cmdm_pipeline.protect.lenses import column_treatments
from cmdm_pipeline.resources import WarehouseResource

LENSES = "lenses"


def lenses_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    deps = [GOLDEN, *([CONSENT_CURRENT] if config.consent else [])]

    @dg.asset(
        name=LENSES, group_name="protect", deps=deps, kinds={"duckdb", "parquet"},
        description="One row per master customer a lens shows, per lens: the lens's columns revealed, masked or "
        "tokenised, for masters with its consent purpose and row filters; published as <warehouse folder>/lenses/"
        "<lens>.duckdb|.parquet (encrypted when it reveals personal data) and PostgreSQL schemas, rebuilt every run; "
        "one lens_published audit_log row per lens.",
    )
    def _lenses(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        started = time.perf_counter()
        store = warehouse.get(config)
        key_store = KeyStore.for_config(config, load_keyring(config, create_dev_key=True))
        done = publish_lenses(store, config, key_store, context.run.run_id, dt.datetime.now(dt.UTC))
        published, schemas, generations, retired = done.published, done.schemas, done.generations, done.old_keys_destroyed
        for lens in published:
            context.log.info(f"lens {lens.name}: {lens.rows} rows, {', '.join(str(p) for p in lens.files.values())}"
                             + (" (encrypted)" if lens.encrypted else "") + (f"; PostgreSQL {schemas[lens.name]}"
                                                                             if lens.name in schemas else ""))
        return dg.MaterializeResult(metadata={
            "dagster/row_count": sum(p.rows for p in published),
            "rows_by_lens": dg.MetadataValue.json({p.name: p.rows for p in published}),
            "columns_by_treatment": dg.MetadataValue.json({lens.name: column_treatments(lens) for lens in config.lenses}),
            "files": dg.MetadataValue.json({p.name: {f: str(path) for f, path in p.files.items()} for p in published}),
            "encrypted_lenses": dg.MetadataValue.json(sorted(p.name for p in published if p.encrypted)),
            "postgresql_schemas": dg.MetadataValue.json(schemas),
            "key_generations": dg.MetadataValue.json({lens.name: generations.latest.get(lens.name, 1) for lens in config.lenses}),
            "old_keys_destroyed": retired,
            "seconds": round(time.perf_counter() - started, 3),
        })

    return _lenses

