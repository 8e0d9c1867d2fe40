"""Ctrl-C stops a running DuckDB query at once, not when the query ends.

Python runs its SIGINT handler in the main thread between bytecodes, and DuckDB looks for a pending signal only
between the tasks the calling thread runs itself. One task can last many minutes (a hash join probing large
blocks: scoring at 10M records), and Ctrl-C went unanswered all that time. Python's C-level handler writes the
signal's number to the wakeup file descriptor at once (``signal.set_wakeup_fd``), so a thread waiting on it
interrupts every DuckDB connection the pipeline holds open: the query ends with DuckDB's ``InterruptException``
and the ``KeyboardInterrupt`` follows as before. The warehouse resource keeps this active for the whole run,
wherever it was started: ``cmdm run``, the Dagster UI (whose Terminate sends the run a SIGINT), a schedule.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

#: The signals that stop a run (Dagster turns SIGTERM into an interrupt too).
STOPPING = frozenset({signal.SIGINT, signal.SIGTERM})

_open: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
_lock = threading.Lock()


def interruptible(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``con``, interrupted when a stopping signal arrives (while :func:`queries_stop_on_signal` is active)."""
    with _lock:
        _open.add(con)
    return con


def interrupt_open_connections() -> None:
    with _lock:
        connections = list(_open)
    for con in connections:
        # A connection closed meanwhile has nothing to interrupt.
        with contextlib.suppress(Exception):
            con.interrupt()


@contextlib.contextmanager
def queries_stop_on_signal() -> Iterator[None]:
    """While active, SIGINT or SIGTERM interrupts the queries of every :func:`interruptible` connection.
    Only the main thread can watch signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(write, False)  # the C handler must never block on a full pipe
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read,), name="cmdm-interrupts", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write)  # the watcher reads end of file and returns
        watcher.join()
        os.close(read)


def _watch(read: int) -> None:
    while received := os.read(read, 64):
        if any(number in STOPPING for number in received):
            interrupt_open_connections()
