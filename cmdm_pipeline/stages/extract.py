"""Extract: read one source system's records, keep every row, add lineage columns.

Every column arrives as text (the standardiser types it), so nothing is lost to a reader's
type guess. Rows a reader cannot parse are kept too, with ``parse_error`` saying why and
``unparsed`` holding what was there; the validation gate quarantines them. Problems with the
file, table or columns as a whole raise :class:`SourceError`, naming source, location and column.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import itertools
import json
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar
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
        raise _columns_missing(f"{what} ({source_location(source, config)})", source, missing, list(spec.columns), own)
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


def _columns_missing(where: str, source: Source, missing: list[str], wanted: list[str], own: list[str]) -> SourceError:
    if source.kind == "csv" and len(missing) == len(wanted):
        # Not one mapped column in line 1: it may be a data row, whose values must not reach a message.
        found = f"none of them is in line 1 ({len(own)} fields): does the file lack its header?"
    else:
        found = f"the source has: {', '.join(own) or '(no columns)'}"
    return SourceError(f"{where}: mapped column(s) {missing} not found; {found}")


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
    encoding = _stream_encoding(path, encoding)
    # Read as a stream, twice when a record spans lines (the fast path finds that out only at the end).
    masked = _Masking()
    try:
        try:
            frame = _csv_frame(_records_one_per_line(path, encoding, source.delimiter, masked), source, config, masked)
        except _NotOnePerLine:
            masked = _Masking()
            frame = _csv_frame(_records_line_by_line(path, encoding, source.delimiter, masked), source, config, masked)
    except UnicodeDecodeError as exc:
        line, reason = _undecodable(path, encoding, exc)
        raise _fail(
            source, config,
            f"bytes at or after line {line} are not valid {source.encoding} ({reason}); set `encoding` for this source",
        ) from None
    if masked.found:
        header = [c for c in frame.columns if c not in ("parse_error", "unparsed")]
        frame = frame.with_columns(pl.col(*header, "unparsed").str.replace_all(_CR, "\r", literal=True))
    return frame


class _Masking:
    """Whether a bare CR was masked in the lines read so far."""

    found = False


#: Stands in for a bare CR while the csv module reads (a Unicode noncharacter: no text carries it).
_CR = "\ufdd0"
_BARE_CR = re.compile(r"\r(?!\n)")
_CSV_CHUNK = 8192  # records read before they become columns: a whole file as Python lists held ~10x its size

Record = tuple[int, list[str], str | None]  # line number, fields, parse error
_T = TypeVar("_T")


def _csv_frame(records: Iterator[Record], source: Source, config: ProjectConfig, masked: _Masking) -> pl.DataFrame:
    """The records as text columns (the header names them), a chunk at a time, with each broken row's
    error and its fields as read."""
    first = next(records, None)
    if first is None:
        raise _fail(source, config, "the header row is empty")
    number, header, error = first
    if error is not None:
        raise _fail(source, config, f"line {number}, the header: {error}")
    if masked.found and any(_CR in name for name in header):
        raise _fail(source, config, "line 1 (the header) holds a carriage return: are lines ended by CR alone? "
                                    "Save the file with LF or CRLF line ends")
    _check_header(header, source, config)
    chunks = [_csv_chunk(chunk, header) for chunk in _batched(records, _CSV_CHUNK)]
    if not chunks:
        return _csv_chunk([], header)
    return pl.concat(chunks, rechunk=False)


def _csv_chunk(records: list[Record], header: list[str]) -> pl.DataFrame:
    width = len(header)
    rows = [fields for _, fields, _ in records]
    parse_errors: list[str | None] = [None] * len(rows)
    unparsed: list[str | None] = [None] * len(rows)
    # Why Python here: a length test per row is cheap, and only broken rows (rare) go further.
    for i, (number, fields, error) in enumerate(records):
        if error is None and len(fields) != width:
            error = f"row has {len(fields)} fields, the header has {width}"
        if error is not None:
            parse_errors[i] = f"line {number}: {error}"
            unparsed[i] = json.dumps(fields, ensure_ascii=False)
            rows[i] = (fields + [""] * width)[:width]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return pl.DataFrame([
        *(pl.Series(name, column, dtype=pl.String) for name, column in zip(header, columns, strict=True)),
        pl.Series("parse_error", parse_errors, dtype=pl.String),
        pl.Series("unparsed", unparsed, dtype=pl.String),
    ])


def _batched(items: Iterator[_T], size: int) -> Iterator[list[_T]]:
    """itertools.batched (Python 3.12) as lists."""
    while batch := list(itertools.islice(items, size)):
        yield batch


class _NotOnePerLine(Exception):
    """The file has a record spanning lines, or one the strict reader rejects: read it line by line."""


def _records_one_per_line(path: Path, encoding: str, delimiter: str, masked: _Masking) -> Iterator[Record]:
    """The common case, read in C: every record is one line, so its position is its line number (blank
    lines skipped). Raises :class:`_NotOnePerLine`, after the last record, when that does not hold.

    An unclosed quote swallows the lines after it, records and all, up to the next quote. The record
    it makes is rejected by the strict reader or, spanning several lines, has the wrong field count:
    such a file is read again by :func:`_records_line_by_line`, so each line is a record of its own and
    only the broken one is flagged.
    """
    count = 0
    lines = _Lines(_masked_lines(path, encoding, masked))
    try:
        for count, fields in enumerate(csv.reader(lines, delimiter=delimiter, strict=True), 1):
            lines.record.clear()
            if fields:
                yield count, fields, None
    except csv.Error:
        raise _NotOnePerLine from None
    if count != lines.number:
        raise _NotOnePerLine


def _records_line_by_line(path: Path, encoding: str, delimiter: str, masked: _Masking) -> Iterator[Record]:
    """The slow path of :func:`_records_one_per_line`: record by record, knowing the lines of each."""
    lines = _Lines(_masked_lines(path, encoding, masked))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    width: int | None = None
    while True:
        lines.record = []
        first = lines.number + 1
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            return
        except csv.Error:
            fields = None
        records: list[Record]
        if fields is not None and (len(lines.record) == 1 or width is None or len(fields) == width):
            records = [(first, fields, None)]
        else:
            records = [(first + i, *_read_line(line, delimiter)) for i, line in enumerate(lines.record)]
        for record in records:
            if record[1]:  # a blank line reads as no fields
                width = len(record[1]) if width is None else width
                yield record


def _masked_lines(path: Path, encoding: str, masked: _Masking) -> Iterator[str]:
    """The file's lines, each with its LF. Only LF (or CRLF) ends a line: a bare CR is data, masked while the
    csv module (which would end the record there) reads it."""
    with path.open(encoding=encoding, newline="\n") as handle:
        for line in handle:
            if "\r" in line and _BARE_CR.search(line):
                masked.found = True
                line = _BARE_CR.sub(_CR, line)
            yield line


class _Lines:
    """A file's lines, counted; keeps those of the record being read."""

    def __init__(self, handle: Iterable[str]) -> None:
        self._handle = iter(handle)
        self.number = 0  # lines read so far
        self.record: list[str] = []  # lines read since the caller last emptied it

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = next(self._handle)
        self.number += 1
        self.record.append(line)
        return line


def _read_line(line: str, delimiter: str) -> tuple[list[str], str | None]:
    """One line as one record, read leniently; a quote left open is the error."""
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True), []), None
    except csv.Error as exc:
        fields = next(csv.reader([line], delimiter=delimiter, strict=False), [])
        return fields, "a quote opened in this row is never closed" if "end of data" in str(exc) else None


def _check_header(header: list[str], source: Source, config: ProjectConfig) -> None:
    if not any(name.strip() for name in header):
        raise _fail(source, config, "the header row is empty")
    blank = [i + 1 for i, name in enumerate(header) if not name.strip()]
    if blank:
        raise _fail(source, config, f"header has unnamed column(s) at position {blank}")
    # Positions, not names: a file without its header has a data row here.
    repeated = [i + 1 for i, name in enumerate(header) if header.count(name) > 1]
    if repeated:
        raise _fail(source, config, f"header repeats a column name at position(s) {repeated}")
    _check_reader_columns(header, source, config)


def _check_reader_columns(names: Iterable[str], source: Source, config: ProjectConfig) -> None:
    """A source column may not take the name of a column the reader adds: one would overwrite the other."""
    clash = sorted(set(names) & {"parse_error", "unparsed"})
    if clash:
        raise _fail(source, config, f"column(s) {clash} clash with pipeline lineage columns")


def _read_jsonl(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    # Why Python per line: one malformed line must be quarantined, not fail the whole file,
    # and no vectorised JSON reader reports which line broke. The file is read as a stream and
    # its records become columns a chunk at a time: one dict per line for a whole file held 10 GB
    # at 10M lines. newline="\n" splits on LF only, as JSON lines are: str.splitlines() would also
    # split on characters a JSON string may hold as they are (U+2028, U+0085, a bare CR).
    try:
        with path.open(encoding=_stream_encoding(path, source.encoding), newline="\n") as handle:
            lines = ((number, line.removesuffix("\n")) for number, line in enumerate(handle, start=1) if line.strip())
            chunks = [_jsonl_chunk(batch, source, config) for batch in _batched(lines, _JSONL_CHUNK)]
    except UnicodeDecodeError as exc:
        line, reason = _undecodable(path, source.encoding, exc)
        raise _fail(source, config, f"bytes on line {line} are not valid {source.encoding} ({reason}); set `encoding`") from None
    if not chunks:
        return pl.DataFrame(schema={"parse_error": pl.String, "unparsed": pl.String})
    # Diagonal: a key first seen in a later chunk becomes a column, null in earlier rows.
    frame = pl.concat(chunks, how="diagonal")
    return frame.select(pl.exclude("parse_error", "unparsed"), "parse_error", "unparsed")


_JSONL_CHUNK = 8192  # lines parsed before they become columns


def _jsonl_chunk(lines: list[tuple[int, str]], source: Source, config: ProjectConfig) -> pl.DataFrame:
    """Numbered non-empty lines as text columns."""
    records: list[dict[str, str | None]] = []
    errors: list[str | None] = []
    unparsed: list[str | None] = []
    for number, line in lines:
        record, error = _json_record(line, source.id_column)
        records.append(record)
        errors.append(None if error is None else f"line {number}: {error}")
        unparsed.append(None if error is None else line)
    names = list(dict.fromkeys(key for record in records for key in record))
    _check_reader_columns(names, source, config)
    columns = [pl.Series(name, [r.get(name) for r in records], dtype=pl.String) for name in names]
    # One constructor, not with_columns: a chunk of only bad lines has no other column to set the height.
    return pl.DataFrame(
        [*columns, pl.Series("parse_error", errors, dtype=pl.String), pl.Series("unparsed", unparsed, dtype=pl.String)]
    )


def _stream_encoding(path: Path, encoding: str) -> str:
    """The codec that reads the file as a stream as ``bytes.decode(encoding)`` reads it whole: UTF-16 and UTF-32
    without a byte-order mark are this machine's byte order there, where a stream decoder refuses them."""
    name = codecs.lookup(encoding).name
    if name not in ("utf-16", "utf-32"):
        return encoding
    boms = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) if name == "utf-16" else (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    with path.open("rb") as handle:
        head = handle.read(4)
    return encoding if head.startswith(boms) else f"{name}-{'le' if sys.byteorder == 'little' else 'be'}"


def _undecodable(path: Path, encoding: str, exc: UnicodeDecodeError) -> tuple[int, str]:
    """The line holding the bytes a stream could not decode (the stream's offset is its buffer's), and why."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as whole:
        exc = whole
    return data[: exc.start].count(b"\n") + 1, exc.reason


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
# A \u escape in the surrogate range: json.loads accepts a lone one, which no encoder can write.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Above 2**53 a float no longer holds every whole number: 1e20 as an id may not be the id written.
_EXACT_FLOAT = 2.0**53


def _json_record(line: str, id_column: str) -> tuple[dict[str, str | None], str | None]:
    """One JSON line as text columns, or no columns and why the line cannot be a record."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"invalid JSON at character {exc.pos + 1}: {exc.msg}"
    except ValueError:  # the only other one json raises: an integer past Python's 4,300-digit limit
        return {}, "holds a number too long to read"
    except RecursionError:
        return {}, "nested too deeply to read"
    if not isinstance(value, dict):
        return {}, f"a JSON {_JSON_TYPES.get(type(value), 'null')}, not an object"
    if _SURROGATE_ESCAPE.search(line) and not _encodable(value):
        return {}, "a \\u escape is half of a surrogate pair, not a character"
    flat = _flatten(value, keep=id_column)
    problem = _id_problem(flat.get(id_column))
    if problem is not None:
        return {}, f"id column {id_column!r} {problem}"
    return {name: _as_json_text(item) for name, item in flat.items()}, None


def _encodable(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id_problem(value: object) -> str | None:
    """Why a JSON value cannot be a record id (its text would silently be another key), or None."""
    if isinstance(value, dict | list):
        return f"holds a JSON {_JSON_TYPES[type(value)]}, not a single value"
    if isinstance(value, bool):
        return "holds a JSON boolean, not an id"
    if isinstance(value, float) and not (value.is_integer() and abs(value) <= _EXACT_FLOAT):
        return "holds a number that is not a whole number (or too large to be exact)"
    return None


def _flatten(value: dict[str, object], prefix: str = "", keep: str = "") -> dict[str, object]:
    """Nested objects become ``parent.child`` entries, except at ``keep`` (the id column), which stays whole."""
    out: dict[str, object] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and name != keep:
            out.update(_flatten(item, f"{name}.", keep))
        else:
            out[name] = item
    return out


def _as_json_text(item: object) -> str | None:
    """Scalars as text (a whole float as an integer: ``1004.0`` is the number 1004); lists as JSON text."""
    if item is None:
        return None
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, list):
        return json.dumps(item, ensure_ascii=False)
    if isinstance(item, float) and item.is_integer() and abs(item) <= _EXACT_FLOAT:
        return str(int(item))
    return str(item)


def _read_parquet(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a structural source error
        raise _fail(source, config, f"cannot read Parquet: {type(exc).__name__}: {exc}") from None
    return _as_text(frame, source, config)


def _as_text(frame: pl.DataFrame, source: Source, config: ProjectConfig) -> pl.DataFrame:
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
    _check_reader_columns(frame.columns, source, config)
    return frame.with_columns(
        pl.lit(None, dtype=pl.String).alias("parse_error"), pl.lit(None, dtype=pl.String).alias("unparsed")
    )


def _database_query(source: Source, config: ProjectConfig, quote: Callable[[str], str]) -> str:
    if source.query is not None:
        problem = _not_one_read(source.query, source.kind)
        if problem is not None:
            raise _fail(source, config, f"`query` must be one SELECT statement that only reads: {problem}")
        return source.query
    assert source.table is not None
    return "SELECT * FROM " + ".".join(quote(part) for part in source.table.split("."))  # noqa: S608 - identifiers are constants or quoted, values bound


_SQL_DIALECTS = {"duckdb": "duckdb", "sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}


def _not_one_read(query: str, kind: str) -> str | None:
    """Why ``query`` is not a single reading statement, or None. A first, clear refusal; the readers
    also open each database so it cannot write (read-only connection or transaction, no file access)."""
    import sqlglot
    from sqlglot.tokens import TokenType

    try:
        read = sqlglot.tokenize(query, read=_SQL_DIALECTS[kind])
    except sqlglot.errors.TokenError:
        return "it cannot be read as SQL (an unclosed quote or comment?)"  # the error quotes the query
    tokens = [t.token_type for t in read]
    while tokens and tokens[-1] == TokenType.SEMICOLON:
        tokens.pop()
    if TokenType.SEMICOLON in tokens:
        return "it holds more than one statement"
    if not tokens or tokens[0] not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN, TokenType.VALUES):
        return "it does not start with SELECT or WITH"
    writes = sorted(t.name for t in {TokenType.INTO, TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE,
                                     TokenType.MERGE} & set(tokens))
    if writes:
        return f"it uses {', '.join(writes)}"
    called = sorted({
        token.text.lower() for token, after in itertools.pairwise(read)
        if after.token_type == TokenType.L_PAREN and token.text.lower() in _SERVER_FILE_FUNCTIONS
    })
    if called:
        return f"it calls {', '.join(called)}, which reach the server's files or other servers"
    return None


#: Functions a SELECT may call that read or write files on the server (or another server), which a read-only
#: transaction allows: PostgreSQL's for superusers and pg_read_server_files, MySQL's with the FILE privilege.
#: DuckDB and SQLite are sandboxed instead (no external access; an authoriser that allows reading only).
_SERVER_FILE_FUNCTIONS = frozenset({
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_file_write", "pg_file_rename", "pg_file_unlink",
    "lo_import", "lo_export", "dblink", "dblink_exec", "load_file",
})


def _ansi_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _read_duckdb(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import duckdb

    path = _existing_file(source, config)
    query = _database_query(source, config, _ansi_quote)
    # Config SQL runs sandboxed: no file but the database itself (COPY ... TO, read_csv, ATTACH and
    # extensions fail), and the query cannot switch that back on.
    sandbox: dict[str, str | bool | int | float | list[str]] = {"enable_external_access": False, "lock_configuration": True}
    try:
        with duckdb.connect(str(path), read_only=True, config=sandbox) as con:
            frame = con.sql(query).pl()
    except duckdb.Error as exc:
        raise _fail(source, config, f"query failed: {_query_error(exc)}") from None
    return _as_text(frame, source, config)


def _read_sqlite(source: Source, config: ProjectConfig) -> pl.DataFrame:
    path = _existing_file(source, config)
    query = _database_query(source, config, _ansi_quote)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            # Read-only is not enough: ATTACH and VACUUM INTO reach other files. Only reading is authorised.
            con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            con.set_authorizer(_sqlite_reads_only)
            frame = pl.read_database(query, con, infer_schema_length=None)
    except sqlite3.Error as exc:
        raise _fail(source, config, f"query failed: {_query_error(exc)}") from None
    return _as_text(frame, source, config)


def _read_postgresql(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import psycopg

    query = _database_query(source, config, _ansi_quote)
    try:
        with psycopg.connect(source.resolved_url(), connect_timeout=10) as con:
            con.read_only = True  # the server refuses any write the query attempts
            frame = pl.read_database(query, con, infer_schema_length=None)
    except psycopg.OperationalError as exc:
        raise _fail(source, config, f"cannot connect or query: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise _fail(source, config, f"query failed: {_query_error(exc)}") from None
    return _as_text(frame, source, config)


def _read_mysql(source: Source, config: ProjectConfig) -> pl.DataFrame:
    import pymysql

    query = _database_query(source, config, _mysql_quote)
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
            cursor.execute("START TRANSACTION READ ONLY")  # the server refuses any write the query attempts
            cursor.execute(query)
            names = [column[0] for column in cursor.description or ()]
            rows = cursor.fetchall()
        frame = pl.DataFrame(
            {name: [row[i] for row in rows] for i, name in enumerate(names)}, strict=False
        )
    except pymysql.Error as exc:
        raise _fail(source, config, f"query failed: {_query_error(exc)}") from None
    finally:
        con.close()
    return _as_text(frame, source, config)


_SQLITE_READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})


def _sqlite_reads_only(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


#: MySQL/MariaDB error numbers of a value that does not fit its type (the message quotes the value).
_MYSQL_VALUE_ERRORS = {1264, 1265, 1292, 1366, 1406, 1411}


def _query_error(exc: Exception) -> str:
    """The database's message, unless the error is about a value: servers quote the offending value
    (``invalid input syntax for type integer: "<value>"``), and source values never go into error text."""
    import duckdb

    value_error = (
        str(getattr(exc, "sqlstate", None) or "").startswith("22")  # PostgreSQL's class 22, data exception
        or isinstance(exc, (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.OutOfRangeException,
                            sqlite3.DataError))
        or (type(exc).__module__.startswith("pymysql") and bool(exc.args) and exc.args[0] in _MYSQL_VALUE_ERRORS)
    )
    if value_error:
        return f"a value in the result does not fit its type ({type(exc).__name__}; the value is not shown)"
    return _first_line(exc)


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
        raise _columns_missing(f"source {source.name!r} ({location})", source, missing, required_columns(source), own)
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
