"""SQL statements live in ``sql/<stage>/<verb>_<object>.sql``; this loads them by name.

Values are bound as ``$parameters``. Identifiers cannot be bound, so statements take them
as ``{placeholders}`` filled only with names quoted by :func:`quote_identifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@cache
def load_sql(name: str) -> str:
    """The statement in ``sql/<name>.sql``, e.g. ``load_sql("warehouse/insert_rows")``."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL statement {name!r} at {path}")
    return path.read_text(encoding="utf-8")


def quote_identifier(name: str) -> str:
    """A DuckDB identifier, double-quoted with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def statement(name: str, **identifiers: str | Sequence[str]) -> str:
    """The named statement with its identifier placeholders filled in, quoted (a list of names: each
    quoted, comma-separated)."""
    return load_sql(name).format(**{
        key: quote_identifier(value) if isinstance(value, str) else ", ".join(map(quote_identifier, value))
        for key, value in identifiers.items()
    })
