"""Erasure assets: requests processed at the start of every run, before anything is extracted.

The step also records which source records the current golden versions drew on (``golden_history_sources``,
see :mod:`cmdm_pipeline.protect.erasure.history`), and, with a PostgreSQL ``lenses_target``, deletes erased
subjects' lens rows there before anything else.
"""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.erasure.apply import process_erasure
from cmdm_pipeline.protect.erasure.subjects import LOG, NOTIFICATIONS, QUARANTINE, TOMBSTONES
from cmdm_pipeline.resources import WarehouseResource

_SHOWN_REASONS = 3


def erasure_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="process_erasure_requests",
        specs=[
            dg.AssetSpec(LOG, group_name="ingest", kinds={"duckdb"},
                         description="One row per erasure request processed (once each): status, rows removed per "
                         "table, keys destroyed, tombstones added. Ids and counts, never personal data."),
            dg.AssetSpec(NOTIFICATIONS, group_name="ingest", kinds={"duckdb"},
                         description="One row per erased source record: the source system and record id that system "
                         "must delete, and the request; and per erased record the steward decisions name (source "
                         "system match_decisions, id system:id: delete every decision naming it)."),
            dg.AssetSpec(TOMBSTONES, group_name="ingest", kinds={"duckdb"},
                         description="One row per tombstone: a keyed digest of an erased record key, or the blind index "
                         "of an erased subject's own e-mail or phone; extracts drop the source rows they match."),
            dg.AssetSpec(QUARANTINE, group_name="ingest", kinds={"duckdb"},
                         description="One row per erasure request row of this run held back: rules broken and a reason "
                         "naming row and column, never the value."),
        ],
    )
    def _erasure(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        outcome = process_erasure(store, config, context.run.run_id, dt.datetime.now(dt.UTC))
        statuses = dict(outcome.log.group_by("status").len().sort("status").iter_rows())
        processed = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in statuses.items())
        if outcome.recovered:
            context.log.warning("erasure: finished an erasure an earlier run was killed during (keys destroyed, files "
                                "rebuilt, lenses republished)")
        context.log.info(
            f"erasure: {outcome.requests.valid.height} requests read, {outcome.pending} new, {outcome.waiting} waiting "
            f"for a first run; {processed or 'nothing processed'}; {sum(outcome.rows_removed.values())} rows removed, "
            f"{outcome.keys_destroyed} data keys destroyed, {outcome.tombstones_added} tombstones added"
            + (f"; file rebuilt in {outcome.seconds['rebuild_warehouse']:.2f}s" if "rebuild_warehouse" in outcome.seconds else "")
        )
        quarantined = outcome.requests.quarantine(context.run.run_id)
        if quarantined.height:
            shown = "; ".join(quarantined["reason"].head(_SHOWN_REASONS))
            context.log.warning(f"erasure: {quarantined.height} request rows held back (table {QUARANTINE}), e.g. {shown}")
        by_rule = quarantined.select(pl.col("rules_broken").explode()).group_by("rules_broken").len().sort("rules_broken")
        tables = store.tables()

        def rows(table: str) -> int:
            return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0]) if table in tables else 0  # noqa: S608 - constant names

        yield dg.MaterializeResult(asset_key=LOG, metadata={
            "dagster/row_count": rows(LOG),
            "requests_read": outcome.requests.valid.height,
            "requests_processed": outcome.log.height,
            "requests_waiting": outcome.waiting,
            "processed_by_status": dg.MetadataValue.json(statuses),
            "rows_removed_by_table": dg.MetadataValue.json(outcome.rows_removed),
            "keys_destroyed": outcome.keys_destroyed,
            "history_sources_recorded": outcome.history_sources_added,
            "interrupted_erasure_finished": outcome.recovered,
            "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in outcome.seconds.items()}),
        })
        yield dg.MaterializeResult(asset_key=NOTIFICATIONS, metadata={
            "dagster/row_count": rows(NOTIFICATIONS), "records_added": outcome.notifications})
        yield dg.MaterializeResult(asset_key=TOMBSTONES, metadata={
            "dagster/row_count": rows(TOMBSTONES), "tombstones_added": outcome.tombstones_added})
        yield dg.MaterializeResult(asset_key=QUARANTINE, metadata={
            "dagster/row_count": quarantined.height,
            "quarantined_by_rule": dg.MetadataValue.json(dict(by_rule.iter_rows())),
        })

    return _erasure
