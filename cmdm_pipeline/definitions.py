"""The single Dagster ``Definitions`` of cmdm_pipeline, built from the project config.

``dagster dev -w workspace.yaml`` and ``dg`` call ``defs`` from here; the config path comes
from ``$CMDM_CONFIG`` (default ``cmdm.yaml`` in the working directory). Importing this module
reads no config: ``cmdm run --config PATH`` builds its own from any folder.
"""

from __future__ import annotations

import dagster as dg

from cmdm_pipeline.assets.audit import audit_log_asset
from cmdm_pipeline.assets.consent import consent_assets
from cmdm_pipeline.assets.erasure import erasure_assets
from cmdm_pipeline.assets.extract import raw_asset
from cmdm_pipeline.assets.lenses import lens_assets
from cmdm_pipeline.assets.master import golden_assets, master_id_assets
from cmdm_pipeline.assets.match import match_assets, match_model_asset
from cmdm_pipeline.assets.quality import quality_assets, quality_checks
from cmdm_pipeline.assets.reconcile import run_reconciliation_asset, source_shrink_check
from cmdm_pipeline.assets.standardise import standardised_customers_asset
from cmdm_pipeline.assets.validate import validation_assets
from cmdm_pipeline.config import ProjectConfig, load_config
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.schedules import automation
from cmdm_pipeline.tables import with_table_metadata

JOB_NAME = "cmdm_job"


def build_definitions(config: ProjectConfig) -> dg.Definitions:
    """Every asset, resource and job for one project config."""
    assets = [
        erasure_assets(config),  # first: every extract depends on its tombstones
        *[raw_asset(source, config) for source in config.sources],
        standardised_customers_asset(config),
        validation_assets(config),
        run_reconciliation_asset(config),
        match_model_asset(config),
        match_assets(config),
        master_id_assets(config),
        golden_assets(config),
        quality_assets(config),
        *([consent_assets(config)] if config.consent else []),
        audit_log_asset(config),
        *lens_assets(config),  # one asset per lens, and the report files BI reads
    ]
    # In-process, for this job and for ad-hoc materialisations from the UI ("Materialize
    # all"): DuckDB allows one writer per file, and on small machines a process per step
    # costs more than the steps themselves.
    job = dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.all(),
        executor_def=dg.in_process_executor,
        description="Apply erasure requests, extract every source, standardise, validate and reconcile, match, "
        "master (golden records, lineage, history), measure quality (blocking checks, Data Docs), record consent and "
        "the audit log, and publish the lenses.",
    )
    schedules, sensors = automation(config, JOB_NAME)
    return dg.Definitions(
        assets=with_table_metadata(assets, config),
        asset_checks=[*quality_checks(config), source_shrink_check(config)],
        jobs=[job],
        schedules=schedules,
        sensors=sensors,
        resources={"warehouse": WarehouseResource(path=str(config.warehouse_path))},
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What Dagster's loader runs; it reads the config only then."""
    return build_definitions(load_config())
