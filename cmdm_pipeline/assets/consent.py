"""Consent assets: ``consent_history`` (append-only), ``consent_current`` (its replay), ``consent_quarantine``."""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.audit import append_audit, consent_events
from cmdm_pipeline.protect.consent.events import parse_consent_events, read_consent_events
from cmdm_pipeline.protect.consent.update import subject_index, update_consent
from cmdm_pipeline.protect.erasure.apply import drop_erased_events
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.schema import Kind
from cmdm_pipeline.stages.extract import source_location
from cmdm_pipeline.tables import CONSENT_CURRENT, CONSENT_HISTORY, CONSENT_QUARANTINE, ID_LINEAGE, VALIDATED, XREF
from cmdm_pipeline.warehouse import Warehouse

_SHOWN_REASONS = 3


def _subjects(store: Warehouse, config: ProjectConfig) -> pl.DataFrame:
    """Validated records' keys and the e-mail and phone attributes subjects are found by; nothing else."""
    schema = config.customer_schema
    columns = ["source_system", "source_record_id", *schema.of_kind(Kind.email), *schema.of_kind(Kind.phone)]
    return store.read(VALIDATED, columns)


def consent_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    assert config.consent is not None
    consent = config.consent
    deps = [VALIDATED, XREF, ID_LINEAGE]

    @dg.multi_asset(
        name="update_consent",
        specs=[
            dg.AssetSpec(CONSENT_HISTORY, group_name="govern", deps=deps, kinds={"duckdb"},
                         description="One row per consent event ever ingested (append-only): subject, purpose, channel, "
                         "action, time, lawful basis, policy version, evidence, and the master it resolved to then."),
            dg.AssetSpec(CONSENT_CURRENT, group_name="govern", deps=deps, kinds={"duckdb"},
                         description="One row per master × purpose × channel with a consent event: granted or not, "
                         "replayed from consent_history against today's masters. No row: not granted."),
            dg.AssetSpec(CONSENT_QUARANTINE, group_name="govern", deps=deps, kinds={"duckdb"},
                         description="One row per consent event of this run held back: rules broken and a reason "
                         "naming row and column, with the row as read."),
        ],
    )
    def _consent(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        run_id, now = context.run.run_id, dt.datetime.now(dt.UTC)
        raw = read_consent_events(config)
        raw, events_erased = drop_erased_events(raw, store, config)  # events about erased subjects: not kept
        parsed = parse_consent_events(raw, consent, [s.name for s in config.sources])
        tables = set(store.tables())
        xref = store.read(XREF)
        result = update_consent(
            parsed,
            store.read(CONSENT_HISTORY) if CONSENT_HISTORY in tables else None,
            subject_index(_subjects(store, config), xref, config.customer_schema),
            store.read(ID_LINEAGE),
            xref["master_id"].unique(),
            store.read(CONSENT_CURRENT) if CONSENT_CURRENT in tables else None,
            consent, run_id, now,
        )
        logged = append_audit(store, consent_events(result.changes, run_id, now), replace={
            CONSENT_HISTORY: result.history, CONSENT_CURRENT: result.current, CONSENT_QUARANTINE: result.quarantined})

        where = source_location(consent.source.as_source(), config)
        by_rule = result.quarantined.select(pl.col("rules_broken").explode()).group_by("rules_broken").len()
        resolution = dict(result.appended.group_by("resolution").len().sort("resolution").iter_rows())
        context.log.info(
            f"consent: {raw.height} events read from {where}: {result.appended.height} new, "
            f"{result.already_ingested} already in the history, {result.quarantined.height} quarantined; "
            f"{result.current.filter('granted').height} grants and {result.current.filter(~pl.col('granted')).height} "
            f"withdrawals in force; {logged} consent changes audited"
        )
        if result.quarantined.height:  # reasons name row and column, never the value
            shown = "; ".join(result.quarantined["reason"].head(_SHOWN_REASONS))
            context.log.warning(f"consent: {result.quarantined.height} events quarantined (table {CONSENT_QUARANTINE}), "
                                f"e.g. {shown}")
        yield dg.MaterializeResult(asset_key=CONSENT_HISTORY, metadata={
            "dagster/row_count": result.history.height,
            "events_read": raw.height,
            "events_appended": result.appended.height,
            "events_already_ingested": result.already_ingested,
            "events_quarantined": result.quarantined.height,
            "events_erased": events_erased,
            "appended_by_resolution": dg.MetadataValue.json(resolution),
            "appended_by_action": dg.MetadataValue.json(
                dict(result.appended.group_by("action").len().sort("action").iter_rows())),
            "source": where,
        })
        yield dg.MaterializeResult(asset_key=CONSENT_CURRENT, metadata={
            "dagster/row_count": result.current.height,
            "granted": result.current.filter("granted").height,
            "withdrawn": result.current.filter(~pl.col("granted")).height,
            "masters_with_consent_rows": result.current["master_id"].n_unique(),
            "history_events_applied": result.events_applied,
            "history_events_not_applied": result.history.height - result.events_applied,
            "changes_this_run": result.changes.height,
        })
        yield dg.MaterializeResult(asset_key=CONSENT_QUARANTINE, metadata={
            "dagster/row_count": result.quarantined.height,
            "quarantined_by_rule": dg.MetadataValue.json(dict(by_rule.sort("rules_broken").iter_rows())),
        })

    return _consent
