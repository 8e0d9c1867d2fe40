"""What the `cmdm` commands show on the terminal: tables, the run's own lines, and library chatter kept off it.

Tables are rich tables on a terminal and plain aligned columns otherwise (pipes, files, tests), so a
script can split them on whitespace. Warnings and log lines of the libraries (Splink, Great
Expectations, DuckDB, Python's ``warnings``) go to the Dagster run log at DEBUG, not to the terminal.
A run's log reaches the terminal through :func:`terminal_logger`: one line per message, "time  step  text";
a failed step as its reason, without Dagster's stack trace (the run log in the Dagster UI keeps it), and
the steps a failure leaves unrun counted once instead of one error line each.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

#: Records re-sent here during a step reach its run log (the tree `dagster.get_dagster_logger` logs to).
_RUN_LOG = logging.getLogger("dagster.builtin.cmdm.library")
_OURS = "cmdm_pipeline"


class _LibraryLogsToRunLog(logging.Handler):
    """On the root logger: a library's record goes to the run log at DEBUG; our own warnings to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "dagster" or record.name.startswith("dagster."):
            return  # Dagster's own records: its handlers showed and stored them already
        if record.name == _OURS or record.name.startswith(_OURS + "."):
            if record.levelno >= logging.WARNING:  # what Python showed before this handler: keep showing it
                sys.stderr.write(f"{record.getMessage()}\n")
            return
        moved = logging.makeLogRecord(record.__dict__)
        moved.name, moved.msg, moved.args = _RUN_LOG.name, f"{record.name}: {record.getMessage()}", None
        moved.levelno, moved.levelname, moved.exc_info, moved.exc_text = logging.DEBUG, "DEBUG", None, None
        _RUN_LOG.handle(moved)  # handle(), not debug(): the console's INFO level must not drop it before the run log


_NOT_RUN = "Dependencies for step "  # Dagster's error line for each step a failure leaves unrun


def root_cause(error: Any) -> str:
    """The message of the error our code raised, under Dagster's wrapping errors (a SerializableErrorInfo)."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    return str(error.message).strip()


class _TerminalLines(logging.Handler):
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.not_run = 0

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        text = str(meta.get("orig_message") or record.getMessage())
        event = meta.get("dagster_event")
        if event is not None and event.is_step_failure and event.step_failure_data is not None:
            text = f"failed: {root_cause(event.step_failure_data.error)}"
        elif event is not None and event.is_run_failure:
            return  # `cmdm run` says it once, with the failed steps and checks
        elif record.levelno >= logging.ERROR and text.startswith(_NOT_RUN):
            self.not_run += 1
            if self.not_run == 1:
                text = "later steps are not run (they need the failed one)"
            else:
                return
        first = text.strip().splitlines()[0] if text.strip() else ""
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}  "
        when = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        step = meta.get("step_key") or "run"
        stream = self.stream or sys.stderr
        stream.write(f"{when}  {step:<32} {level}{first}\n")
        stream.flush()


def terminal_logger(stream: TextIO | None = None):
    """A Dagster logger definition writing a run's log as short lines (see the module docstring)."""
    import dagster as dg

    @dg.logger({"log_level": dg.Field(str, is_required=False, default_value="INFO")},
               description="The run's log as one line per message, for the terminal.")
    def _terminal(init_context: dg.InitLoggerContext) -> logging.Logger:
        level = init_context.logger_config["log_level"]
        logger = logging.Logger("cmdm.terminal", level=level)
        logger.addHandler(_TerminalLines(stream))
        return logger

    return _terminal


@contextmanager
def library_logs_to_run_log() -> Iterator[None]:
    """For the block: library log records and Python warnings leave the terminal for the run log."""
    root = logging.getLogger()
    handler = _LibraryLogsToRunLog()
    root.addHandler(handler)
    logging.captureWarnings(True)  # the filters stay Python's: what they would have shown goes to the run log
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: int = 0,
          file: TextIO | None = None) -> str:
    """``rows`` under ``headers``; cells that are numbers, or shown numbers ("6.0%", "+12"), align right.

    On a terminal ``file`` (default stdout) a rich table; otherwise plain columns two spaces apart."""
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    right = [bool(cells) and all(_numeric(row[i]) for row in cells) for i in range(len(headers))]
    stream = sys.stdout if file is None else file
    if stream.isatty():
        return _rich(headers, cells, right, indent)
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *cells]:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        lines.append((" " * indent + "  ".join(parts)).rstrip())
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("%", "").replace(" pp", "").replace(">", "").lstrip("+-")
    return text == "" or stripped.replace(".", "", 1).isdigit()


def _rich(headers: Sequence[str], cells: list[list[str]], right: list[bool], indent: int) -> str:
    from rich import box
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table

    shown = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header, is_right in zip(headers, right, strict=True):
        shown.add_column(header, justify="right" if is_right else "left")
    for row in cells:
        shown.add_row(*row)
    console = Console(file=sys.stdout, force_terminal=True)
    with console.capture() as captured:
        console.print(Padding(shown, (0, 0, 0, indent)))
    return captured.get().rstrip("\n")
