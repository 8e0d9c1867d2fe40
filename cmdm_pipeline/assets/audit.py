"""``audit_log``: master events derived from the history tables, steward decisions (the CSV import's and the
workbench's) and the workbench's reveals of personal values, appended once each."""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.decision_store import read_decision_history, read_reveals
from cmdm_pipeline.protect.audit import AUDIT, append_audit, master_events, steward_events, workbench_events
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.sql import statement
from cmdm_pipeline.stages.decisions import read_decisions
from cmdm_pipeline.tables import CONSENT_CURRENT, HISTORY, ID_LINEAGE, XREF
from cmdm_pipeline.warehouse import Warehouse


def audit_log_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    # After consent too, so this asset's counts include the consent changes that step logged.
    deps = [XREF, ID_LINEAGE, HISTORY, *([CONSENT_CURRENT] if config.consent else [])]

    @dg.asset(
        name=AUDIT, group_name="govern", deps=deps, kinds={"duckdb"},
        description="One row per audited change (append-only): master created, merged, split or updated (attribute "
        "names), consent changed, steward decision, erasure, key rotation; with run id, actor and time, never values.",
    )
    def _audit(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        store = warehouse.get(config)
        run_id, now = context.run.run_id, dt.datetime.now(dt.UTC)
        decisions = read_decisions(config.resolve(config.matching.decisions) if config.matching.decisions else None)
        versions, runs = _versions(store)
        xref = store.read(XREF)
        rows = pl.concat([
            master_events(versions, store.read(ID_LINEAGE)).with_columns(pl.lit(None, dtype=pl.String).alias("audit_id")),
            steward_events(decisions, xref, run_id, now),
            workbench_events(read_decision_history(config.decision_store_path), read_reveals(config.decision_store_path),
                             xref, run_id, now),
        ], how="diagonal_relaxed")
        audited = runs.with_columns(pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("audited_at"))
        added = append_audit(store, rows, append={AUDITED_RUNS: (audited, "run_id")})
        this_run = store.query(f"SELECT action, count(*) AS n FROM {AUDIT} WHERE run_id = $run_id GROUP BY 1 ORDER BY 1",  # noqa: S608 - identifiers are constants or quoted, values bound
                               {"run_id": run_id})
        total = store.query(f"SELECT count(*) AS n FROM {AUDIT}")["n"][0]  # noqa: S608 - a constant name
        context.log.info(f"audit: {added} rows appended here, {total} in audit_log")
        return dg.MaterializeResult(metadata={
            "dagster/row_count": int(total),
            "rows_appended_by_this_step": added,
            "rows_of_this_run_by_action": dg.MetadataValue.json(dict(this_run.iter_rows())),
        })

    return _audit


#: The runs whose history versions have been audited (run ids only), appended with the audit rows.
AUDITED_RUNS = "audit_history_runs"


def _versions(store: Warehouse) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The versions of every master with a version from a run not audited yet, decrypted only where it has
    several; and those runs.

    A run's versions are written, and then audited, together (the runs are recorded in the same
    transaction as their audit rows), so a night reads only the masters changed since: the rest of the
    history stays ciphertext, and a night's cost does not grow with it. A master's only version is
    audited as created (counts), never as updated, so its personal values are not needed.
    """
    stored, _ = store.column_types()
    audited = store.query(f"SELECT run_id FROM {AUDITED_RUNS}")["run_id"].to_list() if AUDITED_RUNS in stored else []  # noqa: S608 - identifiers are constants or quoted, values bound
    runs = store.query(statement("audit/select_pending_runs", history=HISTORY), {"audited": audited})
    # Chosen in DuckDB: a quiet night (no pending master) loads no version at all.
    counted = store.query(statement("audit/select_pending_masters", history=HISTORY), {"audited": audited})
    public = [c for c, data_type in stored[HISTORY].items() if data_type != "BLOB"]
    singles = store.read(HISTORY, public, rows=counted.filter(pl.col("versions") == 1).select("master_id"))
    several = store.read(HISTORY, rows=counted.filter(pl.col("versions") > 1).select("master_id"))
    return pl.concat([several, singles], how="diagonal_relaxed"), runs
