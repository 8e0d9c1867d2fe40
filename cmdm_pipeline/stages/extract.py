"""Extract: read one source system's records, keep every row, add lineage columns.

Every column arrives as text (the standardiser types it), so nothing is lost to a reader's
type guess. Rows a reader cannot parse are kept too, with ``parse_error`` saying why and
``unparsed`` holding what was there; the validation gate quarantines them. Problems with the
file, table or columns as a whole raise :class:`SourceError`, naming source, location and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl

from cmdm_pipeline.config import FromColumn, MappedSource, ProjectConfig, Source
from cmdm_pipeline.schema import LINEAGE_COLUMNS

_ROW = "source_row_number"
#: Columns extract adds next to the source's own.
EXTRACT_COLUMNS = (*LINEAGE_COLUMNS, "parse_error", "unparsed")

# Far above any real field; the input checks quarantine long values with a reason instead
# of the csv module failing the whole file at its 128 KiB default.
csv.field_size_limit(2**31 - 1)


class SourceError(RuntimeError):
    """A source cannot be read as a whole (file, table, column or connection)."""


def extract(source: Source, config: ProjectConfig, ingested_at: dt.datetime) -> pl.DataFrame:
    """Read ``source`` into one text column per source column plus lineage columns.

    One row per source row, in source order; ``source_row_number`` counts data rows from 1
    (for files: records after the header, blank lines not counted).
    """
    reader = _READERS[source.kind]
    frame = reader(source, config)
    return _with_lineage(frame, source, source_location(source, config), ingested_at)


def read_rows(source: Source, config: ProjectConfig) -> pl.DataFrame:
    """The source's rows as text columns plus ``parse_error`` and ``unparsed``, without lineage."""
    return _READERS[source.kind](source, config)


def read_mapped_rows(spec: MappedSource, config: ProjectConfig, what: str) -> pl.DataFrame:
    """A source that is not customer records (consent events, erasure requests): its rows as text with
    ``source_row_number`` (1 = first data row); a mapped column it lacks fails naming ``what`` and the columns."""
    source = spec.as_source()
    frame = read_rows(source, config)
    own = [c for c in frame.columns if c not in ("parse_error", "unparsed")]
    missing = [c for c in spec.columns if c not in own]
    # A JSON-lines file has no header: a key absent from every record is only an error if there are records.
    if missing and not (source.kind == "jsonl" and frame.height == 0):
        raise SourceError(
            f"{what} ({source_location(source, config)}): mapped column(s) {missing} not found; "
            f"the source has: {', '.join(own) or '(no columns)'}"
        )
    if _ROW in own:
        raise SourceError(f"{what} ({source_location(source, config)}): column {_ROW!r} is reserved")
    frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in missing)
    return frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(_ROW))


def source_location(source: Source, config: ProjectConfig) -> str:
    """Where a source lives, for messages: a file path or a redacted connection."""
    if source.path is not None:
        return str(config.resolve(source.path))
    parts = urlsplit(source.url or "")
    where = f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    return f"{source.kind}://{where}"


def _fail(source: Source, config: ProjectConfig, message: str) -> SourceError:
    return SourceError(f"source {source.name!r} ({source_location(source, config)}): {message}")


def _existing_file(source: Source, config: ProjectConfig) -> Path:
    assert source.path is not None
    path = config.resolve(source.path)
    if not path.is_file():
        raise _fail(source, config, "file not found")
    if path.stat().st_size == 0:
        raise _fail(source, config, "file is empty (no header, no rows)")
    return path


def _read_csv(source: Source, config: ProjectConfig) -> pl.DataFrame:
    # The csv module, not a vectorised reader: only it reports, per record, where the record
    # sits in the file, so a ragged row is kept with its line number instead of failing the
    # file (Polars) or losing its row position (DuckDB's rejects table). It handles quoted
    # newlines and costs ~1.5 s per million rows.
    path = _existing_file(source, config)
    encoding = "utf-8-sig" if source.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else source.encoding
    with path.open(encoding=encoding, errors="strict", newline="") as handle:
        reader = csv.reader(handle, delimiter=source.delimiter, strict=False)
        try:
            header = next(reader)
            rows = [fields for fields in reader if fields]
        except UnicodeDecodeError as exc:
            raise _fail(
                source, config,
                f"bytes at or after line {reader.line_num + 1} are not valid {source.encoding} "
                f"({exc.reason}); set `encoding` for this source",
            ) from None
        except csv.Error as exc:
            raise _fail(source, config, f"cannot parse CSV at line {reader.line_num}: {exc}") from None
    _check_header(header, source, config)
    width = len(header)
    errors: list[str | None] = [None] * len(rows)
    unparsed: list[str | None] = [None] * len(rows)
    for i, fields in enumerate(rows):
        if len(fields) != width:
            # Why Python here: only ragged rows (rare) reach this branch.
            errors[i] = f"row has {len(fields)} fields, the header has {width}"
            unparsed[i] = json.dumps(fields, ensure_ascii=False)
            rows[i] = (fields + [""] * width)[:width]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    frame = pl.DataFrame({name: pl.Series(name, col, dtype=pl.String) for name, col in zip(header, columns, strict=True)})
    return frame.with_columns(
        pl.Series("parse_error", errors, dtype=pl.String), pl.Series("unparsed", unparsed, dtype=pl.String)
    )


def _check_header(header: list[str], source: Source, config: ProjectConfig) -> None:
    if not any(name.strip() for name in header):
        raise _fail(source, config, "the header row is empty")
    blank = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if blank:
        raise _fail(source, config, f"header has unnamed column(s) at position {blank}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise _fail(source, config, f"header repeats column(s) {repeated}")


def _read_jsonl(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    try:
        text = path.read_bytes().decode(source.encoding)
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise _fail(
            source, config, f"bytes on line {line} are not valid {source.encoding} ({exc.reason}); set `encoding`"
        ) from None
    lines = [line for line in text.splitlines() if line.strip()]
    records: list[dict[str, object]] = []
    errors: list[str | None] = []
    unparsed: list[str | None] = []
    # Why Python per line: one malformed line must be quarantined, not fail the whole file,
    # and no vectorised JSON reader reports which line broke.
    for line in lines:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            value, error = None, f"invalid JSON at character {exc.pos + 1}: {exc.msg}"
        else:
            error = None if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"
        records.append(_flatten(value) if error is None else {})
        errors.append(error)
        unparsed.append(line if error else None)
    names = list(dict.fromkeys(key for record in records for key in record))
    frame = pl.DataFrame(
        {name: pl.Series(name, [r.get(name) for r in records], dtype=pl.String) for name in names}
    )
    return frame.with_columns(
        pl.Series("parse_error", errors, dtype=pl.String), pl.Series("unparsed", unparsed, dtype=pl.String)
    )


def _flatten(value: object, prefix: str = "") -> dict[str, str | None]:
    """Nested objects become ``parent.child`` columns; lists stay JSON text; scalars become text."""
    out: dict[str, str | None] = {}
    assert isinstance(value, dict)
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(_flatten(item, f"{name}."))
        elif item is None:
            out[name] = None
        elif isinstance(item, bool):
            out[name] = "true" if item else "false"
        elif isinstance(item, list):
            out[name] = json.dumps(item, ensure_ascii=False)
        else:
            out[name] = str(item)
    return out


def _read_parquet(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a structural source error
        raise _fail(source, config, f"cannot read Parquet: {type(exc).__name__}: {exc}") from None
    return _as_text(frame)


def _as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text; structs flattened to ``parent.child``; lists as JSON text."""
    while any(isinstance(dtype, pl.Struct) for dtype in frame.dtypes):
        frame = frame.select(
            pl.col(name).struct.rename_fields([f"{name}.{f.name}" for f in dtype.fields]).struct.unnest()
            if isinstance(dtype, pl.Struct) else pl.col(name)
            for name, dtype in frame.schema.items()
        )
    # List columns are rare in customer sources; JSON text keeps them whole.
    frame = frame.with_columns(
        pl.col(name).map_elements(lambda xs: json.dumps(list(xs), default=str), return_dtype=pl.String)
        if isinstance(dtype, pl.List | pl.Array) else
        pl.col(name).cast(pl.String)
        for name, dtype in frame.schema.items()
    )
    return frame.with_columns(
        pl.lit(None, dtype=pl.String).alias("parse_error"), pl.lit(None, dtype=pl.String).alias("unparsed")
    )


def _database_query(source: Source, quote: Callable[[str], str]) -> str:
    if source.query is not None:
        return source.query
    assert source.table is not None
    return "SELECT * FROM " + ".".join(quote(part) for part in source.table.split("."))


def _ansi_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _read_duckdb(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import duckdb

    path = _existing_file(source, config)
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            frame = con.sql(_database_query(source, _ansi_quote)).pl()
    except duckdb.Error as exc:
        raise _fail(source, config, f"query failed: {exc}") from None
    return _as_text(frame)


def _read_sqlite(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            frame = pl.read_database(_database_query(source, _ansi_quote), con, infer_schema_length=None)
    except sqlite3.Error as exc:
        raise _fail(source, config, f"query failed: {exc}") from None
    return _as_text(frame)


def _read_postgresql(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import psycopg

    try:
        with psycopg.connect(source.resolved_url(), connect_timeout=10) as con:
            frame = pl.read_database(_database_query(source, _ansi_quote), con, infer_schema_length=None)
    except psycopg.OperationalError as exc:
        raise _fail(source, config, f"cannot connect or query: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise _fail(source, config, f"query failed: {_first_line(exc)}") from None
    return _as_text(frame)


def _read_mysql(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import pymysql

    parts = urlsplit(source.resolved_url())
    try:
        con = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=parts.path.lstrip("/") or None,
            charset="utf8mb4",
            connect_timeout=10,
        )
    except pymysql.Error as exc:
        raise _fail(source, config, f"cannot connect: {_first_line(exc)}") from None
    try:
        # Polars has no pymysql executor; the DB-API cursor gives rows and column names.
        with con.cursor() as cursor:
            cursor.execute(_database_query(source, _mysql_quote))
            names = [column[0] for column in cursor.description or ()]
            rows = cursor.fetchall()
        frame = pl.DataFrame(
            {name: [row[i] for row in rows] for i, name in enumerate(names)}, strict=False
        )
    except pymysql.Error as exc:
        raise _fail(source, config, f"query failed: {_first_line(exc)}") from None
    finally:
        con.close()
    return _as_text(frame)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_READERS: dict[str, Callable[[Source, ProjectConfig], pl.DataFrame]] = {
    "csv": _read_csv,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "duckdb": _read_duckdb,
    "sqlite": _read_sqlite,
    "postgresql": _read_postgresql,
    "mysql": _read_mysql,
}


def required_columns(source: Source) -> list[str]:
    """Source columns the config relies on: the id, the mapped ones and per-row type columns."""
    needed = [source.id_column, *source.columns]
    for derived in (source.record_type, source.party_type):
        if isinstance(derived, FromColumn):
            needed.append(derived.column)
    return list(dict.fromkeys(needed))


def _with_lineage(frame: pl.DataFrame, source: Source, location: str, ingested_at: dt.datetime) -> pl.DataFrame:
    own = [c for c in frame.columns if c not in ("parse_error", "unparsed")]
    clash = sorted(set(own) & set(EXTRACT_COLUMNS))
    if clash:
        raise SourceError(f"source {source.name!r} ({location}): column(s) {clash} clash with pipeline lineage columns")
    missing = [c for c in required_columns(source) if c not in own]
    # A JSON source has no header: a key that never occurs may simply be absent in every
    # record, which is only an error when the file has records to look at.
    if missing and not (source.kind == "jsonl" and frame.height == 0):
        raise SourceError(
            f"source {source.name!r} ({location}): mapped column(s) {missing} not found; "
            f"the source has: {', '.join(own) or '(no columns)'}"
        )
    for name in missing:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    return frame.select(
        *own,
        *missing,
        pl.lit(source.name).alias("source_system"),
        pl.col(source.id_column).str.strip_chars().replace("", None).alias("source_record_id"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("source_row_number"),
        pl.lit(ingested_at, dtype=pl.Datetime("us", "UTC")).alias("ingested_at"),
        "parse_error",
        "unparsed",
    )


__all__ = ["EXTRACT_COLUMNS", "SourceError", "extract", "read_rows", "required_columns", "source_location"]
