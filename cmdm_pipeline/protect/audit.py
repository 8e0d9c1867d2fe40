"""The audit log: an append-only record of who changed what, when, and in which run.

Details hold attribute *names*, counts and master ids, never values. Each row has an
``audit_id``, a digest of what it says (or a key the caller gives), and a row is appended only
if its id is new, so deriving the same events again (a re-run, a retried step) logs nothing twice.

Master events are derived from tables that keep every run (``golden_customers_history``,
``master_id_lineage``), so a run whose audit step did not run is still logged by the next one.
Other stages log through :func:`append_audit`, in the same transaction as their own tables: the
lenses step one ``lens_published`` row per lens and run (name, rows, columns, targets, key generation),
``cmdm lenses key --rotate`` a ``lens_key_rotated`` row (lens, generation, key owner and id; never a key).

A steward decision is logged once it is *in force*: both records it names have a master. A decision
naming a record that is not (or no longer) mastered does nothing in matching either: a record not read
yet, quarantined, or erased (tombstoned: it never comes back, so neither does its decision's row).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from cmdm_pipeline.protect.keys.crypto import DIGEST_COLUMN
from cmdm_pipeline.protect.keys.digest import sha256_hex
from cmdm_pipeline.stages.history import BOOKKEEPING_COLUMNS
from cmdm_pipeline.warehouse import Warehouse

AUDIT = "audit_log"
ACTIONS = (
    "master_created", "master_merged", "master_split", "master_updated",
    "consent_changed", "steward_decision", "steward_decision_undone", "personal_data_viewed", "erased", "key_rotated", "lens_published", "lens_key_rotated",
)
UTC = pl.Datetime("us", "UTC")

AUDIT_COLUMNS: dict[str, pl.DataType] = {
    "audit_id": pl.String(),
    "event_time": UTC,  # when the change happened
    "run_id": pl.String(),  # the pipeline run that made or recorded it
    "actor": pl.String(),  # "pipeline:<run_id>", or a person's organisation e-mail
    "action": pl.String(),  # one of ACTIONS
    "master_id": pl.String(),
    "detail": pl.String(),  # JSON: names, counts, ids; never values
    "logged_at": UTC,
}
_INPUT = [c for c in AUDIT_COLUMNS if c not in ("audit_id", "logged_at")]
# Columns of a version that are not attributes: the history's bookkeeping and the ciphertexts' digest.
_VERSION_COLUMNS = (*BOOKKEEPING_COLUMNS, DIGEST_COLUMN)


class AuditError(ValueError):
    """Rows handed to the audit log are incomplete or name an unknown action."""


def pipeline_actor(run_id: str) -> str:
    return f"pipeline:{run_id}"


def audit_rows(rows: pl.DataFrame, logged_at: dt.datetime) -> pl.DataFrame:
    """``rows`` (event_time, run_id, actor, action, master_id, detail as JSON text or a struct; optional
    audit_id) checked and completed to AUDIT_COLUMNS."""
    missing = [c for c in _INPUT if c not in rows.columns]
    if missing:
        raise AuditError(f"audit rows lack column(s) {missing}")
    if isinstance(rows.schema["detail"], pl.Struct):
        rows = rows.with_columns(pl.col("detail").struct.json_encode())
    unknown = sorted(set(rows["action"].drop_nulls().unique()) - set(ACTIONS))
    if unknown or rows["action"].null_count():
        raise AuditError(f"unknown audit action(s) {unknown or [None]}; expected one of {list(ACTIONS)}")
    if rows["actor"].null_count() or rows["event_time"].null_count():
        raise AuditError("every audit row needs an actor and an event_time")
    rows = rows.with_columns(pl.col("event_time").cast(UTC), pl.col("master_id").cast(pl.String))
    identity = rows.select(pl.struct("action", "master_id", "run_id", "actor", "detail").struct.json_encode())
    computed = sha256_hex(identity.to_series())
    given = rows["audit_id"] if "audit_id" in rows.columns else pl.Series([None] * rows.height, dtype=pl.String)
    return rows.with_columns(
        given.fill_null(computed).alias("audit_id"), pl.lit(logged_at, dtype=UTC).alias("logged_at")
    ).unique("audit_id", keep="first", maintain_order=True).select(list(AUDIT_COLUMNS)).cast(AUDIT_COLUMNS)  # type: ignore[arg-type]


def append_audit(
    store: Warehouse, rows: pl.DataFrame, replace: dict[str, pl.DataFrame] | None = None,
    logged_at: dt.datetime | None = None, append: dict[str, tuple[pl.DataFrame, str]] | None = None,
) -> int:
    """Append ``rows`` not logged yet to ``audit_log``, replacing the ``replace`` tables and appending the
    ``append`` rows (table -> rows, key column) in the same transaction (all or none); returns how many
    audit rows were new."""
    complete = audit_rows(rows, logged_at or dt.datetime.now(dt.UTC))
    if AUDIT in store.tables() and complete.height:
        logged = store.query(f"SELECT audit_id FROM {AUDIT}")  # noqa: S608 - a constant name
        complete = complete.join(logged, on="audit_id", how="anti")
    store.replace(replace or {}, append={**(append or {}), AUDIT: (complete, "audit_id")})
    return complete.height


def master_events(history: pl.DataFrame, lineage: pl.DataFrame) -> pl.DataFrame:
    """master_created, master_updated (names of the attributes that changed), master_merged and
    master_split rows from every version in ``golden_customers_history`` and every ``master_id_lineage`` row."""
    values = [c for c in history.columns if c not in _VERSION_COLUMNS]
    versions = history.sort("master_id", "valid_from").with_columns(
        pl.col("valid_from").rank("ordinal").over("master_id").alias("__version"))
    changed = pl.concat_list(
        pl.when(pl.col(c).ne_missing(pl.col(c).shift(1).over("master_id"))).then(pl.lit(c)) for c in values
    ).list.drop_nulls() if values else pl.lit([], dtype=pl.List(pl.String))
    split_ids = lineage.filter(pl.col("event") == "split").select("master_id")
    first = versions.filter(pl.col("__version") == 1).join(split_ids, on="master_id", how="anti")
    counts = [c for c in ("record_count", "source_count") if c in values]
    created = first.select(
        "master_id", "run_id", pl.col("valid_from").alias("event_time"), pl.lit("master_created").alias("action"),
        (pl.struct(counts) if counts else pl.struct(pl.lit(None, dtype=pl.Int64).alias("record_count"))).alias("detail"),
    )
    updated = versions.with_columns(changed.alias("__changed")).filter(
        (pl.col("__version") > 1) & (pl.col("__changed").list.len() > 0)
    ).select(
        "master_id", "run_id", pl.col("valid_from").alias("event_time"), pl.lit("master_updated").alias("action"),
        pl.struct(pl.col("__changed").alias("attributes")).alias("detail"),
    )
    moves = lineage.select(
        "master_id", "run_id", pl.col("recorded_at").alias("event_time"),
        pl.when(pl.col("event") == "merged").then(pl.lit("master_merged")).otherwise(pl.lit("master_split")).alias("action"),
        pl.struct(pl.col("related_master_id").alias("related_master_id"), "records").alias("detail"),
    )
    parts = [p.with_columns(pl.col("detail").struct.json_encode()) for p in (created, updated, moves)]
    return pl.concat(parts).with_columns(
        pl.format("pipeline:{}", pl.col("run_id")).alias("actor")
    ).select(_INPUT)


def decision_audit_ids(decisions: pl.DataFrame) -> pl.Series:
    """The ``audit_id`` of each decision's steward_decision row: a digest of the decision itself."""
    key = pl.struct("source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r",
                    "decision", "decided_by", "decided_at").struct.json_encode()
    return sha256_hex(decisions.select(key).to_series()).alias("audit_id")


def steward_events(decisions: pl.DataFrame, xref: pl.DataFrame, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """One steward_decision row per decision in force (both records mastered, see the module docstring),
    keyed by the decision so it is logged once.

    The steward's free-text reason is left out: it may quote the customer.
    """
    masters = xref.select("source_system", "source_record_id", "master_id")
    joined = decisions.join(
        masters.rename({"source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
        on=["source_system_l", "source_record_id_l"], how="inner",
    ).join(
        masters.rename({"source_system": "source_system_r", "source_record_id": "source_record_id_r",
                        "master_id": "related_master_id"}),
        on=["source_system_r", "source_record_id_r"], how="inner",
    )
    return joined.select(
        decision_audit_ids(joined),
        _time("decided_at", now),
        pl.lit(run_id).alias("run_id"),
        pl.col("decided_by").fill_null("steward:unknown").alias("actor"),
        pl.lit("steward_decision").alias("action"),
        "master_id",
        pl.struct("decision", "related_master_id",
                  pl.concat_list("source_system_l", "source_system_r").alias("source_systems"))
        .struct.json_encode().alias("detail"),
    )


def workbench_events(decisions: pl.DataFrame, reveals: pl.DataFrame, xref: pl.DataFrame, run_id: str,
                     now: dt.datetime) -> pl.DataFrame:
    """What people did in the workbench (:mod:`cmdm_pipeline.decision_store`), each logged once: every
    decision (``steward_decision``, in force or not, keyed like a decision of the CSV import), every undo
    (``steward_decision_undone``) and every page that showed personal values in clear
    (``personal_data_viewed``: the columns' names and record keys). The actor is ``web:<user>``."""
    masters = xref.select("source_system", "source_record_id", "master_id")
    with_masters = decisions.join(
        masters.rename({"source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
        on=["source_system_l", "source_record_id_l"], how="left",
    ).join(
        masters.rename({"source_system": "source_system_r", "source_record_id": "source_record_id_r",
                        "master_id": "related_master_id"}),
        on=["source_system_r", "source_record_id_r"], how="left",
    ).with_columns(decision_audit_ids(decisions).alias("audit_id"))
    detail = pl.struct("decision", "action", "batch", pl.coalesce("related_master_id", "master_r").alias("related_master_id"),
                       pl.concat_list("source_system_l", "source_system_r").alias("source_systems")).struct.json_encode()
    made = with_masters.select(
        "audit_id", _time("decided_at", now), pl.lit(run_id).alias("run_id"), pl.col("decided_by").alias("actor"),
        pl.lit("steward_decision").alias("action"), pl.coalesce("master_id", "master_l").alias("master_id"),
        detail.alias("detail"),
    )
    undone = with_masters.filter(pl.col("undone_at").is_not_null()).select(
        sha256_hex(pl.select(pl.concat_str(pl.lit("undone|"), with_masters.filter(pl.col("undone_at").is_not_null())
                                           ["audit_id"])).to_series()).alias("audit_id"),
        _time("undone_at", now), pl.lit(run_id).alias("run_id"), pl.col("undone_by").alias("actor"),
        pl.lit("steward_decision_undone").alias("action"), pl.coalesce("master_id", "master_l").alias("master_id"),
        pl.struct("batch", pl.col("audit_id").alias("decision_audit_id")).struct.json_encode().alias("detail"),
    )
    viewed = reveals.select(
        sha256_hex(pl.select(pl.concat_str(pl.lit("viewed|"), pl.lit(reveals["viewed_by"]), pl.lit("|"),
                                           pl.lit(reveals["viewed_at"]), pl.lit("|"),
                                           pl.lit(reveals["reveal_id"].cast(pl.String)))).to_series()).alias("audit_id"),
        _time("viewed_at", now), pl.lit(run_id).alias("run_id"), pl.col("viewed_by").alias("actor"),
        pl.lit("personal_data_viewed").alias("action"), "master_id",
        pl.struct("page", pl.col("columns").str.json_decode(pl.List(pl.String)),
                  pl.col("records").str.json_decode(pl.List(pl.String))).struct.json_encode().alias("detail"),
    )
    return pl.concat([made, undone, viewed], how="vertical_relaxed")


def _time(column: str, now: dt.datetime) -> pl.Expr:
    return pl.coalesce(pl.col(column).str.to_datetime(strict=False, time_zone="UTC", time_unit="us"),
                       pl.lit(now, dtype=UTC)).alias("event_time")


def consent_events(changes: pl.DataFrame, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """One consent_changed row per master × purpose × channel whose current consent changed."""
    return changes.select(
        pl.lit(now, dtype=UTC).alias("event_time"), pl.lit(run_id).alias("run_id"),
        pl.lit(pipeline_actor(run_id)).alias("actor"), pl.lit("consent_changed").alias("action"), "master_id",
        pl.struct("purpose", "channel", pl.col("before").alias("from"), pl.col("after").alias("to"))
        .struct.json_encode().alias("detail"),
    )
