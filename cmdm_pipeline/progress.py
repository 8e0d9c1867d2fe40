"""Progress of long steps (training, scoring, clustering, standardising, golden records).

Stage functions wrap their slow parts in ``step(name, total)`` and call the ``advance`` it yields at a
few points (never per row). The caller chooses who shows it: ``cmdm run`` on a terminal draws a bar
with counts and elapsed time, ``--quiet`` shows nothing (``shown_on_terminal``); everywhere else
(pipes, tests, runs started from the Dagster UI) a step writes a log line when it starts and ends, and
one at most every ``HEARTBEAT_SECONDS`` while it advances, which Dagster keeps in the run log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

#: Where `dagster.get_dagster_logger` logs: Dagster captures this tree into the running step's run log.
log = logging.getLogger("dagster.builtin.cmdm.progress")
HEARTBEAT_SECONDS = 15.0


class Display(Protocol):
    def start(self, name: str, total: int | None) -> Any: ...
    def update(self, handle: Any, done: int) -> None: ...
    def finish(self, handle: Any, done: int, seconds: float, ok: bool) -> None: ...


class LogDisplay:
    """A log line per step start and end, and a heartbeat line while a step lasts."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def start(self, name: str, total: int | None) -> Any:
        log.info("%s: started%s", name, f" ({total:,} to do)" if total is not None else "")
        started = time.perf_counter()
        handle = [name, total, started]
        self._last[id(handle)] = started
        return handle

    def update(self, handle: Any, done: int) -> None:
        now = time.perf_counter()
        if now - self._last.get(id(handle), now) >= HEARTBEAT_SECONDS:
            self._last[id(handle)] = now
            name, total, started = handle
            log.info("%s: %s done, %.0fs so far", name, _count(done, total), now - started)

    def finish(self, handle: Any, done: int, seconds: float, ok: bool) -> None:
        self._last.pop(id(handle), None)
        log.info("%s: %s done %s %.1fs", handle[0], _count(done, handle[1]), "in" if ok else "then stopped after", seconds)


def _count(done: int, total: int | None) -> str:
    return f"{done:,}/{total:,}" if total is not None else f"{done:,}"


class _BarDisplay:
    """A rich progress bar per running step on stderr; a finished step leaves one line."""

    def __init__(self, bars: Any) -> None:
        self._bars = bars

    def start(self, name: str, total: int | None) -> Any:
        return self._bars.add_task(name, total=total)

    def update(self, handle: Any, done: int) -> None:
        self._bars.update(handle, completed=done)

    def finish(self, handle: Any, done: int, seconds: float, ok: bool) -> None:
        task = self._bars.tasks[self._bars.task_ids.index(handle)]
        self._bars.remove_task(handle)
        if ok:  # a failed step is reported by the run's error lines
            self._bars.console.print(f"cmdm: {task.description}: {_count(done, task.total)} done in {seconds:.1f}s")


_display: Display | None = LogDisplay()


@contextmanager
def showing(display: Display | None) -> Iterator[None]:
    """Show every ``step`` through ``display`` (None: show nothing) until the block ends."""
    global _display
    before, _display = _display, display
    try:
        yield
    finally:
        _display = before


@contextmanager
def bar_display() -> Iterator[Display]:
    """Bars on stderr for the length of the block. Whatever else writes to stderr meanwhile (the
    run's log lines) is printed above the bars, not through them."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bars:
        yield _BarDisplay(bars)


@contextmanager
def shown_on_terminal(quiet: bool) -> Iterator[None]:
    """`cmdm run`'s choice for the block: nothing when quiet, bars when stderr is a terminal, else log lines."""
    if quiet:
        with showing(None):
            yield
    elif sys.stderr.isatty():
        with bar_display() as display, showing(display):
            yield
    else:
        yield


@contextmanager
def step(name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Report a long step's progress; the block calls the yielded ``advance(n)`` as work gets done.

    ``total``: how much there is to do, in the unit ``advance`` counts (None: unknown)."""
    display = _display
    if display is None:

        def ignore(n: int = 1) -> None:
            """Nothing shows progress."""

        yield ignore
        return
    started = time.perf_counter()
    handle = display.start(name, total)
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        display.update(handle, done)

    ok = False
    try:
        yield advance
        ok = True
    finally:
        display.finish(handle, done, time.perf_counter() - started, ok)
