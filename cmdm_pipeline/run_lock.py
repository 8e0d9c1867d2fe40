"""One run at a time per warehouse: a lock file beside it, held with ``flock`` for the whole run.

DuckDB allows one writer per file, and two runs interleaving their steps would each see the other's
half-written tables; so a second run is refused at once, naming the run that holds the lock. The
kernel releases a ``flock`` when its holder dies, so a run killed with SIGKILL leaves no stale lock:
the file stays, with the dead run's details, but nothing holds it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WarehouseBusyError(RuntimeError):
    """Another run holds the warehouse's run lock."""


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".run.lock")


#: Lock files this process holds, and for which run: `cmdm run` takes the lock before Dagster starts (to
#: refuse without a traceback), then the run's warehouse resource takes it again for the same run.
_HELD: dict[Path, str] = {}


@contextmanager
def run_lock(warehouse: Path, run_id: str) -> Iterator[None]:
    """Hold the warehouse's run lock while the block runs; raise :class:`WarehouseBusyError` at once if
    another run (in this process or another) holds it."""
    path = lock_path(warehouse.resolve())
    if _HELD.get(path) == run_id:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseBusyError(f"warehouse {warehouse} is in use by {_holder(path)}; this run was refused "
                                     "(wait for that run to end, then start again)") from None
        holder = {"run_id": run_id, "pid": os.getpid(),
                  "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _HELD[path] = run_id
        try:
            yield
        finally:
            del _HELD[path]
            os.ftruncate(fd, 0)  # before the unlock: a reader never sees a finished run as the holder
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    """The holding run as its lock file describes it (it may be mid-write: then as much as is known)."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"run {holder['run_id']} (pid {holder['pid']}, started {holder['started_at']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run (its details are being written)"
