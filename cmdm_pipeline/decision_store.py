"""The steward decision store: what people decided in the workbench (`cmdm serve`), and what they saw.

A SQLite file the web application owns and writes (WAL journal: the nightly run reads it read-only and
never waits for the web app, the web app never waits for the run, and neither holds the warehouse for
the other). The next run reads the decisions in force (:func:`read_store_decisions`) beside the CSV
import, and writes every decision and every reveal of a personal value to ``audit_log``.

Decisions are never deleted: an undo marks the decision undone (who, when), so the store is its own
history. Decisions made by one action (a merge of two masters, a split) share a ``batch`` and are
undone together. Values are never stored here: pairs are source record keys, reveals name columns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

Decision = Literal["same", "different", "unsure"]
Action = Literal["pair", "merge", "split"]
DECISIONS: tuple[Decision, ...] = ("same", "different", "unsure")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('pair', 'merge', 'split')),
    source_system_l TEXT NOT NULL,
    source_record_id_l TEXT NOT NULL,
    source_system_r TEXT NOT NULL,
    source_record_id_r TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('same', 'different', 'unsure')),
    reason TEXT,
    master_l TEXT,
    master_r TEXT,
    decided_by TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    undone_by TEXT,
    undone_at TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_pair
    ON decisions (source_system_l, source_record_id_l, source_system_r, source_record_id_r);
CREATE TABLE IF NOT EXISTS reveals (
    reveal_id INTEGER PRIMARY KEY AUTOINCREMENT,
    viewed_by TEXT NOT NULL,
    viewed_at TEXT NOT NULL,
    page TEXT NOT NULL,
    master_id TEXT,
    records TEXT NOT NULL,
    columns TEXT NOT NULL
);
"""

#: Columns of :func:`read_store_decisions`, the CSV import's columns plus the store's own.
STORE_DECISION_COLUMNS: dict[str, pl.DataType] = {
    "source_system_l": pl.String(), "source_record_id_l": pl.String(),
    "source_system_r": pl.String(), "source_record_id_r": pl.String(),
    "decision": pl.String(), "decided_by": pl.String(), "decided_at": pl.String(), "reason": pl.String(),
}
#: Every column of the decisions table (:func:`read_decision_history`).
HISTORY_COLUMNS: dict[str, pl.DataType] = {
    "decision_id": pl.Int64(), "batch": pl.String(), "action": pl.String(),
    **{c: pl.String() for c in ("source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r")},
    "decision": pl.String(), "reason": pl.String(), "master_l": pl.String(), "master_r": pl.String(),
    "decided_by": pl.String(), "decided_at": pl.String(), "undone_by": pl.String(), "undone_at": pl.String(),
}
REVEAL_COLUMNS: dict[str, pl.DataType] = {
    "reveal_id": pl.Int64(), "viewed_by": pl.String(), "viewed_at": pl.String(), "page": pl.String(),
    "master_id": pl.String(), "records": pl.String(), "columns": pl.String(),
}


class DecisionStoreError(ValueError):
    """A decision cannot be stored or undone; the message names the field, never a value."""


@dataclass(frozen=True)
class RecordKey:
    source_system: str
    source_record_id: str

    def __str__(self) -> str:
        return f"{self.source_system}:{self.source_record_id}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def actor(user: str) -> str:
    """How the audit log and the decisions name a workbench user."""
    return f"web:{user}"


class DecisionStore:
    """Read and write access for the web application; one short transaction per call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout=10000")
            yield con
        finally:
            con.close()

    def decide(self, pairs: Sequence[tuple[RecordKey, RecordKey]], decision: Decision, user: str,
               reason: str | None = None, action: Action = "pair",
               masters: tuple[str | None, str | None] | list[tuple[str | None, str | None]] = (None, None)) -> str:
        """Store one decision per pair (one batch; the pair is kept in key order); returns the batch id.

        ``masters``: the masters the steward saw the two records under (one pair of ids for every pair, or a list
        of one per pair), kept with the decision so the accuracy page can judge the master the steward judged."""
        if decision not in DECISIONS:
            raise DecisionStoreError(f"decision: expected one of {', '.join(DECISIONS)}")
        if not pairs:
            raise DecisionStoreError("records: a decision needs at least one pair of records")
        per_pair = masters if isinstance(masters, list) else [masters] * len(pairs)
        if len(per_pair) != len(pairs):
            raise DecisionStoreError("masters: one pair of master ids per pair of records")
        batch, at = uuid.uuid4().hex, _now()
        rows = []
        # A few pairs per call (a click): a loop is clearer than a frame here.
        for (left, right), (master_left, master_right) in zip(pairs, per_pair, strict=True):
            if left == right:
                raise DecisionStoreError("records: a record cannot be judged against itself")
            if (left.source_system, left.source_record_id) > (right.source_system, right.source_record_id):
                left, right, master_left, master_right = right, left, master_right, master_left
            rows.append((batch, action, left.source_system, left.source_record_id, right.source_system,
                         right.source_record_id, decision, reason, master_left, master_right, actor(user), at))
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO decisions (batch, action, source_system_l, source_record_id_l, source_system_r, "
                "source_record_id_r, decision, reason, master_l, master_r, decided_by, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.execute("COMMIT")
        return batch

    def undo(self, batch: str, user: str) -> int:
        """Mark a batch undone; returns how many decisions that was (0: no such batch, or undone before)."""
        with self._connect() as con:
            cursor = con.execute("UPDATE decisions SET undone_by = ?, undone_at = ? WHERE batch = ? AND undone_at IS NULL",
                                 (actor(user), _now(), batch))
            return cursor.rowcount

    def last_batch(self, user: str) -> str | None:
        """The user's newest batch still in force (what "undo" takes back)."""
        with self._connect() as con:
            row = con.execute("SELECT batch FROM decisions WHERE decided_by = ? AND undone_at IS NULL "
                              "ORDER BY decision_id DESC LIMIT 1", (actor(user),)).fetchone()
        return row[0] if row else None

    def log_reveal(self, user: str, page: str, columns: Sequence[str], records: Sequence[str] = (),
                   master_id: str | None = None) -> None:
        """A person was shown these columns' personal values in clear (names only, never values)."""
        if not columns:
            return
        with self._connect() as con:
            con.execute("INSERT INTO reveals (viewed_by, viewed_at, page, master_id, records, columns) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (actor(user), _now(), page, master_id, json.dumps(sorted(records)), json.dumps(sorted(columns))))

    def decisions(self) -> pl.DataFrame:
        """Every decision, undone ones too, newest first (for the workbench's pages)."""
        with self._connect() as con:
            cursor = con.execute("SELECT * FROM decisions ORDER BY decision_id DESC")
            names = [d[0] for d in cursor.description]
            return pl.DataFrame(cursor.fetchall(), schema=names, orient="row", infer_schema_length=None)


def forget(path: Path, records: Sequence[str], masters: Sequence[str]) -> int:
    """Erasure: delete every decision naming one of ``records`` ("system:id") and every reveal naming one of
    them or of ``masters``; returns the rows deleted. Idempotent (an interrupted erasure runs it again)."""
    if not path.exists() or not (records or masters):
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as con:
        con.execute("PRAGMA secure_delete=ON")  # deleted rows' bytes are overwritten, not left in free pages
        con.execute("BEGIN IMMEDIATE")
        con.execute("CREATE TEMP TABLE erased_records (record TEXT PRIMARY KEY)")
        con.execute("CREATE TEMP TABLE erased_masters (master_id TEXT PRIMARY KEY)")
        con.executemany("INSERT OR IGNORE INTO erased_records VALUES (?)", [(r,) for r in records])
        con.executemany("INSERT OR IGNORE INTO erased_masters VALUES (?)", [(m,) for m in masters])
        deleted = con.execute(
            "DELETE FROM decisions WHERE source_system_l || ':' || source_record_id_l IN (SELECT record FROM erased_records) "
            "OR source_system_r || ':' || source_record_id_r IN (SELECT record FROM erased_records) "
            "OR master_l IN (SELECT master_id FROM erased_masters) OR master_r IN (SELECT master_id FROM erased_masters)"
        ).rowcount
        deleted += con.execute(
            "DELETE FROM reveals WHERE master_id IN (SELECT master_id FROM erased_masters) OR EXISTS "
            "(SELECT 1 FROM json_each(reveals.records) AS r WHERE r.value IN (SELECT record FROM erased_records))"
        ).rowcount
        con.execute("COMMIT")
    return deleted


def read_store_decisions(path: Path) -> pl.DataFrame:
    """The decisions in force (not undone; ``same`` or ``different``: ``unsure`` links nothing), read-only.

    No store yet means no decisions. Columns: :data:`STORE_DECISION_COLUMNS`.
    """
    query = ("SELECT source_system_l, source_record_id_l, source_system_r, source_record_id_r, decision, decided_by, "
             "decided_at, reason FROM decisions WHERE undone_at IS NULL AND decision IN ('same', 'different') "
             "ORDER BY decision_id")
    return _read(path, query, STORE_DECISION_COLUMNS)


def read_decision_history(path: Path) -> pl.DataFrame:
    """Every decision, undone ones too, oldest first (the audit step logs each once)."""
    return _read(path, f"SELECT {', '.join(HISTORY_COLUMNS)} FROM decisions ORDER BY decision_id", HISTORY_COLUMNS)  # noqa: S608 - constant names


def read_reveals(path: Path) -> pl.DataFrame:
    """Every reveal of personal values the workbench logged (the audit step appends each once)."""
    return _read(path, f"SELECT {', '.join(REVEAL_COLUMNS)} FROM reveals ORDER BY reveal_id", REVEAL_COLUMNS)  # noqa: S608 - constant names


def _read(path: Path, query: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not path.exists():
        return pl.DataFrame(schema=schema)
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        try:
            rows = con.execute(query).fetchall()
        except sqlite3.OperationalError as exc:  # a file that is not a decision store
            if "no such table" in str(exc):
                return pl.DataFrame(schema=schema)
            raise DecisionStoreError(f"{path}: cannot read the decision store: {exc}") from None
    finally:
        con.close()
    return pl.DataFrame(rows, schema=schema, orient="row")
