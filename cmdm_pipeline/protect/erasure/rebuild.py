"""Rebuild a DuckDB file so deleted rows are gone from its bytes, not just from its tables.

DuckDB's DELETE (even with CHECKPOINT and VACUUM) leaves deleted values in the file's blocks
(docs/concepts/erasure.md, "What erasure does", step 3).
:func:`rebuild_duckdb_file` copies every table, view, sequence and macro into a new file
(``COPY FROM DATABASE``: the rows as they are now), fsyncs it, and renames it over the old file. A crash
before the rename leaves the old file whole (with the WAL folded in); the rename itself is atomic.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb

from cmdm_pipeline.sql import statement


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def rebuild_duckdb_file(path: Path) -> float:
    """Rewrite ``path`` from its live rows; returns the seconds it took. Nobody may hold the file open."""
    started = time.perf_counter()
    path = Path(path)
    fresh = path.with_name(path.name + ".rebuild")
    for leftover in (fresh, wal_path(fresh)):
        leftover.unlink(missing_ok=True)
    # Fold the WAL into the old file first: the copy reads it, and no WAL of the old file may outlive it
    # (DuckDB would replay it onto the new file).
    con = duckdb.connect(str(path))
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()
    try:
        con = duckdb.connect()
        try:
            con.execute("ATTACH $path AS old (READ_ONLY)", {"path": str(path)})
            con.execute("ATTACH $path AS fresh", {"path": str(fresh)})
            con.execute(statement("erasure/copy_database"))
            con.execute("DETACH old")
            con.execute("DETACH fresh")  # checkpoints: the new file is complete, without a WAL
        finally:
            con.close()
        if wal_path(fresh).exists():
            raise RuntimeError(f"rebuilt file {fresh} still has a WAL; not replacing {path}")
        _fsync(fresh)
        if path.exists():
            os.chmod(fresh, path.stat().st_mode & 0o777)
        wal_path(path).unlink(missing_ok=True)  # checkpointed above; a stale one must not meet the new file
        os.replace(fresh, path)
        _fsync(path.parent)
    finally:
        fresh.unlink(missing_ok=True)
        wal_path(fresh).unlink(missing_ok=True)
    return time.perf_counter() - started


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
