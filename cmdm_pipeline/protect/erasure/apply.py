"""Carry out erasure requests against the warehouse: delete, shred keys, rebuild the files, log.

Erasure is a transaction that a kill at any moment leaves resumable (named crash points in brackets):

0. with a PostgreSQL ``lenses_target``, one transaction there deletes the subjects' lens rows (see
   :func:`erase_lens_rows`): a failure here stops before anything else is done (the requests stay pending);
1. a marker file beside the warehouse lists the requests and the data-key owners to destroy (ids only)
   [``erasure.marker_written``];
2. one transaction deletes the subjects' rows from every table and appends the tombstones,
   notifications, ``erasure_log`` rows (the commit point) and the ``erased`` audit rows
   [``erasure.rows_deleted``];
3. the subjects' data keys are destroyed (crypto-shredding) [``erasure.keys_destroyed``]: only now, as
   nothing left in the warehouse needs them;
4. the key store and the warehouse file are rebuilt (deleted bytes survive DELETE), the lenses are
   published again without the subjects (files replaced, never just removed: ``lenses.file_replaced``),
   then the marker goes.

A run that finds the marker first looks for its requests in ``erasure_log``: logged, the transaction
committed and the run redoes steps 3 and 4 (each is idempotent); not logged, nothing was deleted or
destroyed, so the marker is dropped and the requests, still pending, are processed afresh.

Step 3 first copies every tombstone into the key store (digests and ids, no personal data), which already
knows the destroyed owners. A warehouse restored from a backup taken before an erasure lacks its tombstones
and still holds the subject's rows, which nothing can decrypt: every run first finishes such erasures again
(:func:`restore_erasures`).
Before any of it, every run records which source records the current golden versions drew on
(:func:`~cmdm_pipeline.protect.erasure.history.record_history_sources`), so copies of a subject's values in
other masters' history can be found later.

Which rows are a subject's is decided from each table's columns, so tables added later are covered:
``source_system`` + ``source_record_id`` (and, for rows without an id, ``source_row_number``), ``master_id``,
``related_master_id``, the pair columns ``source_system_l/_r`` + ``source_record_id_l/_r``, a ``records``
list, ``event_id`` (consent), ``master_id`` + ``valid_from`` (versions of other masters that drew on the
subject's records), ``audit_id`` + ``detail`` (audit rows of their steward decisions, and rows whose detail
names their master as ``related_master_id``), and consent quarantine rows about them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from cmdm_pipeline.config import ProjectConfig, Source
from cmdm_pipeline.decision_store import forget, read_decision_history
from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.protect.audit import AUDIT, audit_rows, decision_audit_ids, pipeline_actor
from cmdm_pipeline.protect.erasure.history import (
    HISTORY,
    HISTORY_SOURCES,
    SOURCE_COLUMNS,
    VERSION_COLUMNS,
    record_history_sources,
)
from cmdm_pipeline.protect.erasure.rebuild import rebuild_duckdb_file
from cmdm_pipeline.protect.erasure.requests import QUARANTINE_COLUMNS, Requests, read_requests
from cmdm_pipeline.protect.erasure.subjects import (
    DECISIONS_SYSTEM,
    LOG,
    LOG_COLUMNS,
    NOTIFICATION_COLUMNS,
    NOTIFICATIONS,
    OWN_TABLES,
    QUARANTINE,
    SUPPRESSED,
    TOMBSTONE_COLUMNS,
    TOMBSTONES,
    UTC,
    Known,
    Subject,
    contact_frame,
    erased_events,
    erased_rows,
    index_requests,
    quarantine_subjects,
    resolve_request,
    subject_of_owners,
    suppressed_row,
    tombstones_of,
)
from cmdm_pipeline.protect.keys.blind_index import blind_index
from cmdm_pipeline.protect.keys.kek import load_keyring
from cmdm_pipeline.protect.keys.keystore import KeyStore, master_owner, record_owner
from cmdm_pipeline.protect.lenses.publication import CONSENT_CURRENT, GOLDEN, publish_lenses
from cmdm_pipeline.schema import Kind
from cmdm_pipeline.sql import statement
from cmdm_pipeline.warehouse import Warehouse, append_new_rows, write_table

STANDARDISED, XREF, ID_LINEAGE = "standardised_customers", "customer_xref", "master_id_lineage"
CONSENT_HISTORY, CONSENT_QUARANTINE = "consent_history", "consent_quarantine"
#: The request id of tombstones an old-order recovery wrote (:func:`_delete_owned_rows`): never a logged request.
UNLOGGED_REQUEST = subject_of_owners([]).request_id
#: Where `dagster.get_dagster_logger` logs: Dagster keeps this tree in the running step's run log.
log = logging.getLogger("dagster.builtin.cmdm.erasure")


@dataclass
class Outcome:
    requests: Requests
    pending: int = 0
    waiting: int = 0  # pending requests kept for later: the warehouse has no customers yet
    subjects: list[Subject] = field(default_factory=list)
    log: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LOG_COLUMNS))
    rows_removed: dict[str, int] = field(default_factory=dict)
    keys_destroyed: int = 0
    tombstones_added: int = 0
    notifications: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    #: request_id -> rows removed outside the warehouse (PostgreSQL lens tables), per table
    removed_outside: dict[str, dict[str, int]] = field(default_factory=dict)
    history_sources_added: int = 0
    recovered: bool = False  # an erasure a kill interrupted was finished first


def marker_path(store: Warehouse) -> Path:
    return store.path.with_name(store.path.name + ".erasure-pending.json")


def open_keys(config: ProjectConfig) -> KeyStore:
    return KeyStore.for_config(config, load_keyring(config, create_dev_key=True))


def process_erasure(store: Warehouse, config: ProjectConfig, run_id: str, now: dt.datetime) -> Outcome:
    """Finish an interrupted erasure, read the requests, erase the subjects of those not processed yet,
    and log every outcome."""
    timer = time.perf_counter()
    recovered = recover(store, config, run_id, now)
    restore_erasures(store, config, run_id, now)
    sources_added = record_history_sources(store)
    requests = read_requests(config, [s.name for s in config.sources])
    outcome = Outcome(requests, history_sources_added=sources_added, recovered=recovered)
    tables = set(store.tables())
    done = store.query(statement("erasure/select_processed_requests", table=LOG)) if LOG in tables else None
    pending = requests.valid if done is None else requests.valid.join(done, on="request_id", how="anti")
    outcome.pending = pending.height
    if pending.height and XREF not in tables:
        outcome.waiting, pending = pending.height, pending.clear()  # nothing ingested yet: wait for a first run
    keys = open_keys(config) if pending.height else None
    if keys is not None:
        known = load_known(store, config, keys)
        indexed = index_requests(pending, keys)
        outcome.subjects = [resolve_request(row, known) for row in indexed.iter_rows(named=True)]
    outcome.seconds["resolve"] = time.perf_counter() - timer
    erased = [s for s in outcome.subjects if s.status == "erased"]
    to_destroy: dict[str, int] = {}
    owners: list[str] = []
    if erased:
        assert keys is not None
        timer = time.perf_counter()
        outcome.removed_outside = erase_lens_rows(config, keys, erased)
        outcome.seconds["lens_target"] = time.perf_counter() - timer
        owners = sorted({o for s in erased for o in s.owners()})
        to_destroy = {s.request_id: keys.live_keys(s.owners()) for s in erased}
        _write_marker(store, [s.request_id for s in erased], owners)
        crash_point("erasure.marker_written")
    timer = time.perf_counter()
    removed, tombstones = _write(store, config, outcome, pending, to_destroy, keys, run_id, now)
    outcome.seconds["delete"] = time.perf_counter() - timer
    outcome.rows_removed = removed
    outcome.keys_destroyed = sum(to_destroy.values())
    outcome.tombstones_added = tombstones
    if erased:
        crash_point("erasure.rows_deleted")
        outcome.seconds |= _finish(store, config, owners, run_id, now)
    return outcome


def recover(store: Warehouse, config: ProjectConfig, run_id: str, now: dt.datetime) -> bool:
    """Finish or drop an erasure a kill interrupted (the marker is there); see the module docstring."""
    marker = marker_path(store)
    if not marker.exists():
        return False
    plan = json.loads(marker.read_text(encoding="utf-8"))
    if "request_ids" not in plan:
        # Written by an earlier version, which destroyed keys before deleting rows: delete the rows those
        # keys opened (ids only, nothing to decrypt), so no unreadable row is left behind.
        _delete_owned_rows(store, config, plan["owners"], run_id, now)
    elif not _logged(store, plan["request_ids"]):
        marker.unlink()  # the transaction never committed: no row deleted, no key destroyed
        return False
    _finish(store, config, plan["owners"], run_id, now)
    return True


def _finish(store: Warehouse, config: ProjectConfig, owners: list[str], run_id: str, now: dt.datetime) -> dict[str, float]:
    """Steps 3 and 4, after the rows are deleted: destroy the keys, rebuild both files, republish lenses,
    drop the marker. Every step may run twice. Returns seconds per step."""
    seconds = {}
    timer = time.perf_counter()
    keys = KeyStore.for_config(config, None)  # destroying needs no key-encryption key
    if TOMBSTONES in store.tables():  # a copy first: a warehouse restored from an older backup gets them back
        keys.keep_tombstones(store.read(TOMBSTONES))
    keys.destroy(owners, compact=False)
    crash_point("erasure.keys_destroyed")
    forget(config.decision_store_path, [o.removeprefix("record/").replace("/", ":", 1) for o in owners if o.startswith("record/")],
           [o.removeprefix("master/") for o in owners if o.startswith("master/")])
    keys.compact()
    seconds["destroy_keys"] = time.perf_counter() - timer
    seconds["rebuild_warehouse"] = rebuild_duckdb_file(store.path)
    if {GOLDEN, *([CONSENT_CURRENT] if config.consent else [])} <= set(store.tables()):  # else nothing to publish from
        timer = time.perf_counter()
        publish_lenses(store, config, open_keys(config), run_id, now)
        seconds["publish_lenses"] = time.perf_counter() - timer
    marker_path(store).unlink(missing_ok=True)
    return seconds


def restore_erasures(store: Warehouse, config: ProjectConfig, run_id: str, now: dt.datetime) -> bool:
    """Finish again the erasures a warehouse restored from an older backup lacks; whether there were any.

    Such a warehouse lacks tombstones the key store keeps a copy of, or its ``customer_xref`` names an owner whose
    data key is destroyed. Then, in one transaction, the rows of every destroyed owner are deleted, the missing
    tombstones appended, and each erased request whose ``erasure_log`` row is missing gets one back (status
    ``erased``, ``processed_at`` and ``run_id`` of its tombstones, the other counts unknown), so it is not
    processed again; then the file is rebuilt. The rows are found by id, so nothing is decrypted."""
    keys = KeyStore.for_config(config, None)  # reading copies and destroyed owners needs no key-encryption key
    kept, destroyed = keys.kept_tombstones(), keys.destroyed_owners()
    if kept.is_empty() and not destroyed:
        return False
    tables = set(store.tables())
    missing = kept.join(read_tombstones(store).select("tombstone"), on="tombstone", how="anti")
    if missing.is_empty() and not _names_owners(store, tables, destroyed):
        return False
    done = store.query(statement("erasure/select_processed_requests", table=LOG)) if LOG in tables else \
        pl.DataFrame(schema={"request_id": pl.String})
    lost = kept.filter(pl.col("request_id") != UNLOGGED_REQUEST).join(done, on="request_id", how="anti")
    logs = lost.group_by("request_id").agg(
        pl.col("created_at").min().alias("processed_at"), pl.col("run_id").min(), pl.len().alias("tombstones_added"),
    ).sort("request_id").with_columns(status=pl.lit("erased"), file_rebuilt=pl.lit(True))
    logs = logs.select([pl.col(c) if c in logs.columns else pl.lit(None).alias(c) for c in LOG_COLUMNS])
    appends = {TOMBSTONES: (missing.cast(TOMBSTONE_COLUMNS), "tombstone"),  # type: ignore[arg-type]
               LOG: (logs.cast(LOG_COLUMNS), "request_id")}  # type: ignore[arg-type]
    log.warning("erasure: the warehouse was restored from a backup older than its key store: deleting any rows of the "
                "%d data-key owners erased so far, restoring %d tombstones of %d requests and %d erasure_log rows",
                len(destroyed), missing.height, missing["request_id"].n_unique(), logs.height)
    _delete_owned_rows(store, config, destroyed, run_id, now, appends)
    rebuild_duckdb_file(store.path)  # the deleted rows' bytes go with the rebuild, as after any erasure
    return True


def _names_owners(store: Warehouse, tables: set[str], owners: list[str]) -> bool:
    """Does ``customer_xref`` name a master or record among ``owners`` (ids only, nothing decrypted)?"""
    if not owners or XREF not in tables:
        return False
    xref = store.read(XREF, ["source_system", "source_record_id", "master_id"])
    return bool(xref.select((record_owner().is_in(owners) | master_owner().is_in(owners)).any()).item())


def _logged(store: Warehouse, request_ids: list[str]) -> bool:
    """Are these requests in ``erasure_log`` (the erasure transaction committed)?"""
    if LOG not in store.tables():
        return False
    done = store.query(statement("erasure/select_processed_requests", table=LOG))["request_id"]
    return bool(done.is_in(request_ids).any())


def _write_marker(store: Warehouse, request_ids: list[str], owners: list[str]) -> None:
    marker = marker_path(store)
    temporary = marker.with_name(marker.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"request_ids": request_ids, "owners": owners}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, marker)


def _delete_owned_rows(store: Warehouse, config: ProjectConfig, owners: list[str], run_id: str, now: dt.datetime,
                       appends: dict[str, tuple[pl.DataFrame, str]] | None = None) -> None:
    """Delete the rows of ``owners`` from every table, and tombstone their records so no extract brings them back;
    the new rows of ``appends`` (table: frame, key column) are added first, in the same transaction."""
    subject = subject_of_owners(owners)
    stones = tombstones_of(subject, open_keys(config), False, run_id, now)
    with store.connect() as con:
        layout = {name: set(columns) for name, columns in con.sql(statement("erasure/select_table_columns")).fetchall()}
        con.begin()
        try:
            _delete_subject(con, layout, subject)
            for name, (frame, key) in (appends or {}).items():
                _append(con, name, frame, key)
            _append(con, TOMBSTONES, stones, "tombstone")
            con.commit()
        except BaseException:
            con.rollback()
            raise


def load_known(store: Warehouse, config: ProjectConfig, keys: KeyStore) -> Known:
    """The previous run's tables as resolution needs them (plaintext in memory only)."""
    tables = set(store.tables())
    schema = config.customer_schema
    contact_columns = [*schema.of_kind(Kind.email), *schema.of_kind(Kind.phone)]
    ids = ["source_system", "source_record_id", "source_row_number"]
    standardised = store.read(STANDARDISED, [*ids, *contact_columns]) if STANDARDISED in tables else \
        pl.DataFrame(schema={"source_system": pl.String, "source_record_id": pl.String, "source_row_number": pl.Int64})
    xref = store.read(XREF, ["source_system", "source_record_id", "master_id", "first_seen"])
    lineage = store.read(ID_LINEAGE, ["event", "master_id", "related_master_id", "recorded_at"]) \
        if ID_LINEAGE in tables else pl.DataFrame(schema={"event": pl.String, "master_id": pl.String,
                                                          "related_master_id": pl.String, "recorded_at": UTC})
    consent_schema = {"event_id": pl.String(), "email_index": pl.Binary(), "phone_index": pl.Binary(),
                      "subject_source_system": pl.String(), "subject_source_record_id": pl.String(), "master_id": pl.String()}
    consent = pl.DataFrame(schema=consent_schema)
    if CONSENT_HISTORY in tables:
        history = store.read(CONSENT_HISTORY, ["event_id", "subject_email", "subject_phone", "subject_source_system",
                                               "subject_source_record_id", "master_id"])
        consent = history.with_columns(
            blind_index(history["subject_email"], "email", keys).alias("email_index"),
            blind_index(history["subject_phone"], "phone", keys).alias("phone_index"),
        ).select(list(consent_schema))
    quarantine = store.read(CONSENT_QUARANTINE, ["run_id", "source_row_number", "source_values"]) \
        if CONSENT_QUARANTINE in tables else \
        pl.DataFrame(schema={"run_id": pl.String, "source_row_number": pl.Int64, "source_values": pl.String})
    return Known(contact_frame(standardised, config, keys), standardised.select(ids), xref, lineage, consent,
                 quarantine_subjects(quarantine, config, keys), *_history(store, tables), steward_decisions(config))


def _history(store: Warehouse, tables: set[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``golden_history_sources`` and every history version's (master_id, valid_from, valid_to): ids only."""
    sources = store.read(HISTORY_SOURCES) if HISTORY_SOURCES in tables else pl.DataFrame(schema=SOURCE_COLUMNS)
    versions = store.read(HISTORY, list(VERSION_COLUMNS)) if HISTORY in tables else pl.DataFrame(schema=VERSION_COLUMNS)
    return sources, versions


_PAIR = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]


def steward_decisions(config: ProjectConfig) -> pl.DataFrame:
    """Every row of the steward decisions file and of the workbench's store, superseded and undone decisions
    included (each was logged), normalised as matching normalises them: pair keys, each decision's audit id,
    and whether the workbench's store holds it (erasure deletes those itself; the file's a steward must)."""
    return pl.concat([_file_decisions(config).with_columns(pl.lit(False).alias("in_store")),
                      _store_decisions(config).with_columns(pl.lit(True).alias("in_store"))])


def _store_decisions(config: ProjectConfig) -> pl.DataFrame:
    rows = read_decision_history(config.decision_store_path)
    return rows.select(*_PAIR, decision_audit_ids(rows))


def _file_decisions(config: ProjectConfig) -> pl.DataFrame:
    from cmdm_pipeline.stages.decisions import DECISION_COLUMNS, read_decisions

    path = config.resolve(config.matching.decisions) if config.matching.decisions else None
    checked = read_decisions(path)  # a file matching would refuse fails here alike, naming row and column
    if checked.is_empty():
        return checked.select(*_PAIR, decision_audit_ids(checked))
    assert path is not None
    rows = pl.read_csv(path, infer_schema=False)
    rows = rows.select([pl.col(c) if c in rows.columns else pl.lit(None, dtype=pl.String).alias(c) for c in DECISION_COLUMNS])
    ordered = pl.concat_str("source_system_l", pl.lit("\x1f"), "source_record_id_l") \
        <= pl.concat_str("source_system_r", pl.lit("\x1f"), "source_record_id_r")
    swap = {"source_system_l": "source_system_r", "source_record_id_l": "source_record_id_r"}
    swap |= {v: k for k, v in swap.items()}
    every = rows.select(
        *[pl.when(ordered).then(pl.col(c)).otherwise(pl.col(swap[c])).alias(c) for c in _PAIR],
        pl.col("decision").str.strip_chars().str.to_lowercase(), "decided_by", "decided_at",
    )
    return every.select(*_PAIR, decision_audit_ids(every)).unique()


def erase_lens_rows(config: ProjectConfig, keys: KeyStore, subjects: list[Subject]) -> dict[str, dict[str, int]]:
    """Delete the subjects' rows from the PostgreSQL lens tables, if there is a ``lenses_target``: one
    transaction for every subject and lens; rows removed per request and table."""
    if config.lenses_target is None or not subjects:
        return {}
    from cmdm_pipeline.protect.lenses.build import token_key
    from cmdm_pipeline.protect.lenses.postgres import erase_masters

    tokens = {lens.name: token_key(keys, lens.name) for lens in config.lenses}
    return erase_masters(config.lenses_target, config.lenses, {s.request_id: s.lens_masters() for s in subjects},
                         tokens)


def _write(
    store: Warehouse, config: ProjectConfig, outcome: Outcome, pending: pl.DataFrame, destroyed: dict[str, int],
    keys: KeyStore | None, run_id: str, now: dt.datetime,
) -> tuple[dict[str, int], int]:
    """One transaction: every subject's rows deleted, tombstones, notifications, log and audit rows appended."""
    removed_total: dict[str, int] = {}
    log_rows, tombstones, notifications, audit = [], [], [], []
    requested = {r["request_id"]: r for r in pending.iter_rows(named=True)}
    with store.connect() as con:
        layout = {name: set(columns) for name, columns in con.sql(statement("erasure/select_table_columns")).fetchall()}
        con.begin()
        try:
            for subject in outcome.subjects:
                erased = subject.status == "erased"
                removed = {**_delete_subject(con, layout, subject), **outcome.removed_outside.get(subject.request_id, {})} \
                    if erased else {}
                for table, n in removed.items():
                    removed_total[table] = removed_total.get(table, 0) + n
                stones = tombstones_of(subject, keys, config.erasure.tombstone_contacts, run_id, now) \
                    if erased and keys is not None else pl.DataFrame(schema=TOMBSTONE_COLUMNS)
                tombstones.append(stones)
                log_rows.append(_log_row(subject, requested[subject.request_id], removed,
                                         destroyed.get(subject.request_id, 0), stones.height, run_id, now))
                if erased:
                    notifications.append(notifications_of(subject, run_id, now))
                    audit.append(_audit_row(subject, removed, destroyed.get(subject.request_id, 0), run_id, now))
            log = pl.DataFrame(log_rows, schema=LOG_COLUMNS)
            stones_all = pl.concat(tombstones) if tombstones else pl.DataFrame(schema=TOMBSTONE_COLUMNS)
            notes = pl.concat(notifications) if notifications else pl.DataFrame(schema=NOTIFICATION_COLUMNS)
            appends = {LOG: (log, "request_id"), TOMBSTONES: (stones_all, "tombstone"), NOTIFICATIONS: (notes, "notification_id")}
            if audit:
                appends[AUDIT] = (audit_rows(pl.DataFrame(audit, schema=_AUDIT_INPUT), now), "audit_id")
            for name, (frame, key) in appends.items():
                _append(con, name, frame, key)
            _replace(con, QUARANTINE, outcome.requests.quarantine(run_id).cast(QUARANTINE_COLUMNS))  # type: ignore[arg-type]
            con.commit()
        except BaseException:
            con.rollback()
            raise
    outcome.log = log
    outcome.notifications = notes.height
    return removed_total, stones_all.height


_AUDIT_INPUT: dict[str, pl.DataType] = {"event_time": UTC, "run_id": pl.String(), "actor": pl.String(),
                                        "action": pl.String(), "master_id": pl.String(), "detail": pl.String()}


def _log_row(subject: Subject, request: dict[str, object], removed: dict[str, int], destroyed: int, tombstones: int,
             run_id: str, now: dt.datetime) -> dict[str, object]:
    return {
        "request_id": subject.request_id, "origin": request["origin"], "requested_at": request["requested_at"],
        "processed_at": now, "run_id": run_id, "status": subject.status, "resolved_by": subject.resolved_by,
        "candidate_masters": subject.candidates, "masters_erased": len(subject.masters),
        "records_erased": subject.records.height, "rows_removed": json.dumps(dict(sorted(removed.items()))),
        "keys_destroyed": destroyed, "tombstones_added": tombstones, "file_rebuilt": subject.status == "erased",
    }


def _audit_row(subject: Subject, removed: dict[str, int], destroyed: int, run_id: str, now: dt.datetime) -> dict[str, object]:
    detail = {"request_id": subject.request_id, "masters": len(subject.masters), "records": subject.records.height,
              "keys_destroyed": destroyed, "tables": sorted(removed)}
    return {"event_time": now, "run_id": run_id, "actor": pipeline_actor(run_id), "action": "erased", "master_id": None,
            "detail": json.dumps(detail)}


def notifications_of(subject: Subject, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """One row per record a source system must delete, and per record steward decisions name
    (pseudo system ``match_decisions``, id ``system:id``: delete every decision naming it)."""
    decisions = pl.DataFrame({"source_system": DECISIONS_SYSTEM, "source_record_id": subject.decision_records},
                             schema={"source_system": pl.String(), "source_record_id": pl.String()})
    return pl.concat([subject.records, decisions]).select(
        pl.concat_str([pl.lit(subject.request_id), "source_system", "source_record_id"], separator="|")
        .alias("notification_id"),
        pl.lit(subject.request_id).alias("request_id"), "source_system", "source_record_id",
        pl.lit(now, dtype=UTC).alias("erased_at"), pl.lit(run_id).alias("run_id"),
    ).cast(NOTIFICATION_COLUMNS)  # type: ignore[arg-type]


def _delete_subject(con: duckdb.DuckDBPyConnection, layout: dict[str, set[str]], subject: Subject) -> dict[str, int]:
    """Delete the subject's rows from every table whose columns identify them; rows removed per table."""
    frames = {
        "__cmdm_erase_records": subject.records,
        "__cmdm_erase_rows": subject.unkeyed_rows,
        "__cmdm_erase_masters": pl.DataFrame({"master_id": subject.masters}, schema={"master_id": pl.String}),
        "__cmdm_erase_events": pl.DataFrame({"event_id": subject.consent_events}, schema={"event_id": pl.String}),
        "__cmdm_erase_run_rows": subject.consent_quarantine_rows,
        "__cmdm_erase_versions": subject.history_versions,
        "__cmdm_erase_audit_ids": pl.DataFrame({"audit_id": subject.decision_audit_ids}, schema={"audit_id": pl.String}),
    }
    for name, frame in frames.items():
        con.register(name, frame.to_arrow())
    removed: dict[str, int] = {}
    try:
        for table, columns in sorted(layout.items()):
            if table in OWN_TABLES:
                continue
            steps = _deletions(table, columns)
            count = sum(int(con.execute(statement(name, table=table, **scratch)).fetchall()[0][0]) for name, scratch in steps)
            if count:
                removed[table] = count
    finally:
        for name in frames:
            con.unregister(name)
    return removed


def _deletions(table: str, columns: set[str]) -> list[tuple[str, dict[str, str]]]:
    """The delete statements (and the scratch frames they read) that apply to a table with ``columns``."""
    steps = []
    if {"source_system", "source_record_id"} <= columns:
        steps.append(("erasure/delete_records", {"records": "__cmdm_erase_records"}))
        if "source_row_number" in columns:
            steps.append(("erasure/delete_unkeyed_rows", {"rows": "__cmdm_erase_rows"}))
    if {"source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"} <= columns:
        steps.append(("erasure/delete_pairs", {"records": "__cmdm_erase_records"}))
    if "records" in columns and "review_type" in columns:
        steps.append(("erasure/delete_listed_records", {"records": "__cmdm_erase_records"}))
    if "master_id" in columns:
        steps.append(("erasure/delete_masters", {"masters": "__cmdm_erase_masters"}))
        if "valid_from" in columns:
            steps.append(("erasure/delete_versions", {"versions": "__cmdm_erase_versions"}))
    if "related_master_id" in columns:
        steps.append(("erasure/delete_related_masters", {"masters": "__cmdm_erase_masters"}))
    if {"audit_id", "detail"} <= columns:
        steps.append(("erasure/delete_audit_ids", {"ids": "__cmdm_erase_audit_ids"}))
        steps.append(("erasure/delete_detail_related_masters", {"masters": "__cmdm_erase_masters"}))
    if "event_id" in columns:
        steps.append(("erasure/delete_events", {"events": "__cmdm_erase_events"}))
    if table == CONSENT_QUARANTINE:
        steps.append(("erasure/delete_run_rows", {"rows": "__cmdm_erase_run_rows"}))
    return steps


def _append(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame, key: str) -> None:
    staged = f"__cmdm_appended_{name}"
    con.register(staged, frame.to_arrow())
    append_new_rows(con, name, staged, key)
    con.unregister(staged)


def _replace(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    staged = f"__cmdm_staged_{name}"
    con.register(staged, frame.to_arrow())
    write_table(con, name, staged)
    con.unregister(staged)


def read_tombstones(store: Warehouse) -> pl.DataFrame:
    """Every tombstone (empty before the first erasure)."""
    if TOMBSTONES not in store.tables():
        return pl.DataFrame(schema={"tombstone": pl.Binary(), "kind": pl.String()})
    return store.query(statement("erasure/select_tombstones", table=TOMBSTONES))


def rows_erased(store: Warehouse, run_id: str) -> dict[str, int]:
    """Source rows this run dropped because a tombstone matched them, per source."""
    if SUPPRESSED not in store.tables():
        return {}
    found = store.query(statement("erasure/select_suppressed", table=SUPPRESSED), {"run_id": run_id})
    return {s: int(n) for s, n in found.iter_rows()}


def drop_erased_rows(
    store: Warehouse, frame: pl.DataFrame, source: Source, config: ProjectConfig, run_id: str
) -> tuple[pl.DataFrame, dict[str, tuple[pl.DataFrame, str]]]:
    """``frame`` (one source's extract) without the rows a tombstone matches, and the ``erasure_suppressed``
    row counting them (as ``Warehouse.replace(append=...)`` takes it: written with the raw table, or not at all)."""
    tombstones = read_tombstones(store)
    if tombstones.is_empty():
        return frame, {}
    erased = erased_rows(frame, source, config, tombstones, open_keys(config))
    count = int(erased.sum())
    if not count:
        return frame, {}
    row = suppressed_row(source.name, count, run_id, dt.datetime.now(dt.UTC))
    return frame.filter(~erased), {SUPPRESSED: (row, "suppression_id")}


def drop_erased_events(raw: pl.DataFrame, store: Warehouse, config: ProjectConfig) -> tuple[pl.DataFrame, int]:
    """The consent source's rows (as read) without those about an erased subject, and how many were dropped."""
    tombstones = read_tombstones(store)
    if tombstones.is_empty():
        return raw, 0
    erased = erased_events(raw, config, tombstones, open_keys(config))
    return raw.filter(~erased), int(erased.sum())
