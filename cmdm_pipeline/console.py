"""What the `cmdm` commands show on the terminal: tables, and library chatter kept off it.

Tables are rich tables on a terminal and plain aligned columns otherwise (pipes, files, tests), so a
script can split them on whitespace. Warnings and log lines of the libraries (Splink, Great
Expectations, DuckDB, Python's ``warnings``) go to the Dagster run log at DEBUG, not to the terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

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
