"""``audit_log``: master events derived from the history tables, and steward decisions, appended once each."""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.assets.consent import CONSENT_CURRENT
from cmdm_pipeline.assets.master import HISTORY, ID_LINEAGE, XREF
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.audit import ACTIONS, AUDIT, append_audit, master_events, steward_events
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.match import read_decisions
from cmdm_pipeline.warehouse import Warehouse


def audit_log_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    # After consent too, so this asset's counts include the consent changes that step logged.
    deps = [XREF, ID_LINEAGE, HISTORY, *([CONSENT_CURRENT] if config.consent else [])]

    @dg.asset(
        name=AUDIT, group_name="protect", deps=deps, kinds={"duckdb"},
        description="One row per audited change (append-only): master created, merged, split or updated (attribute "
        "names), consent changed, steward decision, erasure, key rotation; with run id, actor and time, never values.",
    )
    def _audit(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get(config)
        run_id, now = context.run.run_id, dt.datetime.now(dt.UTC)
        decisions = read_decisions(config.resolve(config.matching.decisions) if config.matching.decisions else None)
        rows = pl.concat([
            master_events(_versions(store), store.read(ID_LINEAGE)).with_columns(pl.lit(None, dtype=pl.String).alias("audit_id")),
            steward_events(decisions, store.read(XREF), run_id, now),
        ], how="diagonal_relaxed")
        added = append_audit(store, rows)
        this_run = store.query(f"SELECT action, count(*) AS n FROM {AUDIT} WHERE run_id = $run_id GROUP BY 1 ORDER BY 1",  # noqa: S608
                               {"run_id": run_id})
        total = store.query(f"SELECT count(*) AS n FROM {AUDIT}")["n"][0]  # noqa: S608 - a constant name
        context.log.info(f"audit: {added} rows appended here, {total} in audit_log")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": int(total),
            "rows_appended_by_this_step": added,
            "rows_of_this_run_by_action": dg.MetadataValue.json(dict(this_run.iter_rows())),
        })

    return _audit


MASTER_ACTIONS = ", ".join(f"'{a}'" for a in ACTIONS if a.startswith("master_"))


def _versions(store: Warehouse) -> pl.DataFrame:
    """The versions of every master with a version not audited yet, decrypted only where it has several.

    A run's versions are written, and then audited, together: a run that has master events in the audit
    log is done, so a night reads only the masters changed since (the rest of the history stays
    ciphertext, and a night's cost does not grow with it). A master's only version is audited as created
    (counts), never as updated, so its personal values are not needed.
    """
    ids = store.query(f"SELECT master_id, run_id FROM {HISTORY}")  # noqa: S608 - a constant name
    if AUDIT in store.tables():
        done = store.query(f"SELECT DISTINCT run_id FROM {AUDIT} WHERE action IN ({MASTER_ACTIONS})")  # noqa: S608 - constants
        ids = ids.filter(pl.col("master_id").is_in(ids.join(done, on="run_id", how="anti")["master_id"].implode()))
    pending = pl.col("master_id").is_in(ids["master_id"].unique().implode())
    several = pl.col("master_id").is_in(ids.filter(pl.col("master_id").is_duplicated())["master_id"].unique().implode())
    stored = store.query(f"SELECT * FROM {HISTORY}").filter(pending & ~several)  # noqa: S608 - ciphertext stays as is
    singles = stored.drop([c for c in stored.columns if stored.schema[c] == pl.Binary])
    return pl.concat([store.read(HISTORY, where=several), singles], how="diagonal_relaxed")
