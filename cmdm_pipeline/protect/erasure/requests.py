"""Erasure requests in: the configured requests source and the requests file `cmdm erase` appends to.

Every row read ends in one place: a checked request (processed once, by ``request_id``), or a row of
``erasure_quarantine`` with its rules broken and a reason naming the row and column, never the value.

The requests file holds no e-mail or phone: `cmdm erase` stores their blind indexes (keyed HMAC, see
:mod:`cmdm_pipeline.protect.keys.blind_index`), ids and a time, so nothing personal waits on disk for a run.
A configured source holds what its owner put there (a ticketing system's export): it is read, never written.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cmdm_pipeline.config import ErasureSource, ProjectConfig
from cmdm_pipeline.stages.extract import SourceError, read_mapped_rows
from cmdm_pipeline.stages.fields import clean_text, email, phone

ROW = "source_row_number"
UTC = pl.Datetime("us", "UTC")
DEFAULT_REQUESTS_FILE = Path("erasure/requests.csv")  # relative to the warehouse folder
FILE_COLUMNS = ("request_id", "requested_at", "email_index", "phone_index", "master_id", "source_system",
                "source_record_id")
INDEX_HEX = 32  # a blind index is 16 bytes

#: A checked request, one per valid row. ``email`` and ``phone`` (standardised plaintext) exist in memory only.
REQUEST_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "origin": pl.String(),  # source | cli
    ROW: pl.Int64(),
    "requested_at": UTC,
    "email": pl.String(),
    "phone": pl.String(),  # E.164
    "email_index": pl.Binary(),
    "phone_index": pl.Binary(),
    "master_id": pl.String(),
    "source_system": pl.String(),
    "source_record_id": pl.String(),
}

#: ``erasure_quarantine``: request rows of this run held back; reasons name row and column, never values.
QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "origin": pl.String(),
    ROW: pl.Int64(),
    "request_id": pl.String(),
    "rules_broken": pl.List(pl.String()),
    "reason": pl.String(),
}

_ISSUES = {"origin": pl.String(), ROW: pl.Int64(), "rule": pl.String(), "reason": pl.String()}


class ErasureRequestError(ValueError):
    """A request given on the command line is incomplete or contradicts itself."""


@dataclass(frozen=True)
class Requests:
    valid: pl.DataFrame  # REQUEST_COLUMNS
    issues: pl.DataFrame  # origin, source_row_number, rule, reason: one row per row x problem
    ids: pl.DataFrame  # origin, source_row_number, request_id (as read) of every row, for the quarantine

    def quarantine(self, run_id: str) -> pl.DataFrame:
        """One row per request row held back: every rule it broke and the reasons, joined."""
        grouped = self.issues.group_by("origin", ROW, maintain_order=True).agg(
            pl.col("rule").unique(maintain_order=True).alias("rules_broken"), pl.col("reason").str.join("; ")
        )
        return grouped.join(self.ids, on=["origin", ROW], how="left").with_columns(
            pl.lit(run_id).alias("run_id")
        ).select(list(QUARANTINE_COLUMNS)).cast(QUARANTINE_COLUMNS).sort("origin", ROW)  # type: ignore[arg-type]


def requests_file(config: ProjectConfig) -> Path:
    configured = config.erasure.requests_file
    return config.resolve(configured) if configured else config.warehouse_path.parent / DEFAULT_REQUESTS_FILE


def read_requests(config: ProjectConfig, source_names: list[str]) -> Requests:
    """Every request of the configured source and of the requests file, checked."""
    parts = []
    if config.erasure.source is not None:
        parts.append(parse_source_requests(read_source_requests(config), config.erasure.source, source_names))
    path = requests_file(config)
    if path.exists():
        parts.append(parse_file_requests(read_requests_file(path), source_names))
    if not parts:
        return Requests(pl.DataFrame(schema=REQUEST_COLUMNS), pl.DataFrame(schema=_ISSUES),
                        pl.DataFrame(schema={"origin": pl.String, ROW: pl.Int64, "request_id": pl.String}))
    return Requests(pl.concat([p.valid for p in parts]), pl.concat([p.issues for p in parts]),
                    pl.concat([p.ids for p in parts]))


# --- the configured source ----------------------------------------------------------------------------


def read_source_requests(config: ProjectConfig) -> pl.DataFrame:
    """The requests source's rows as text, with ``source_row_number``; missing columns fail naming them."""
    assert config.erasure.source is not None
    return read_mapped_rows(config.erasure.source, config, "erasure requests source")


def parse_source_requests(raw: pl.DataFrame, spec: ErasureSource, source_names: list[str]) -> Requests:
    """Type and check each row of the requests source."""
    column: dict[str, str] = {field: col for col, field in spec.columns.items()}

    def text(field: str) -> pl.Series:
        if field not in column:
            return pl.Series(field, [None] * raw.height, dtype=pl.String)
        return clean_text(raw[column[field]]).alias(field)

    country = pl.Series("country", [spec.default_country] * raw.height, dtype=pl.String)
    mail, tel = email(text("email")), phone(text("phone"), country=country)
    record = raw[column["source_record_id"]].str.strip_chars().replace("", None) if "source_record_id" in column \
        else text("source_record_id")
    typed = pl.DataFrame({
        ROW: raw[ROW],
        "__parse_error": raw["parse_error"],
        "request_id": text("request_id"),
        "requested_at": _timestamps(text("requested_at"), spec.timestamp_formats),
        "__requested_text": text("requested_at"),
        "email": mail.value,
        "__email_problem": mail.problem,
        "phone": tel.value,
        "__phone_problem": tel.problem,
        "master_id": text("master_id"),
        "source_system": text("source_system").str.to_lowercase(),
        "source_record_id": record,
    }).with_columns(pl.lit("source").alias("origin"))

    def col(field: str) -> str:
        return repr(column.get(field, field))

    issues = [
        _issue(typed.filter(pl.col("__parse_error").is_not_null()), "input.unparsable_row",
               pl.lit("could not be parsed: ") + pl.col("__parse_error")),
    ]
    parsed = typed.filter(pl.col("__parse_error").is_null())
    issues += [
        _issue(parsed.filter(pl.col("request_id").is_null()), "request_id.missing", pl.lit(f"column {col('request_id')}: no value")),
        _issue(parsed.filter(pl.col("__requested_text").is_not_null() & pl.col("requested_at").is_null()),
               "requested_at.invalid", pl.lit(f"column {col('requested_at')}: not a timestamp in the formats {spec.timestamp_formats}")),
        _issue(parsed.filter(pl.col("__email_problem").is_not_null()), "email.invalid",
               pl.format(f"column {col('email')}: {{}}", pl.col("__email_problem"))),
        _issue(parsed.filter(pl.col("__phone_problem").is_not_null()), "phone.invalid",
               pl.format(f"column {col('phone')}: {{}}", pl.col("__phone_problem"))),
        *_subject_issues(parsed, source_names, [column[f] for f in ("email", "phone", "master_id", "source_record_id") if f in column],
                         col("source_system"), col("source_record_id")),
    ]
    typed = typed.with_columns(pl.lit(None, dtype=pl.Binary).alias("email_index"), pl.lit(None, dtype=pl.Binary).alias("phone_index"))
    return _finish(typed, issues)


def _timestamps(text: pl.Series, formats: list[str]) -> pl.Series:
    """The first format that reads a value wins; 'Z' is UTC and a value without an offset is read as UTC."""
    normalised = text.str.replace(r"(?i)z$", "+00:00")
    readings = []
    for fmt in formats:
        if "%H" in fmt:
            readings.append(normalised.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us"))
        else:
            readings.append(normalised.str.to_date(fmt, strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return pl.select(pl.coalesce(readings).alias("requested_at")).to_series()


# --- the requests file (cmdm erase) -----------------------------------------------------------------


def read_requests_file(path: Path) -> pl.DataFrame:
    """The requests file as text, with ``source_row_number``."""
    frame = pl.read_csv(path, infer_schema=False) if path.stat().st_size else \
        pl.DataFrame(schema=dict.fromkeys(FILE_COLUMNS, pl.String))
    missing = [c for c in FILE_COLUMNS if c not in frame.columns]
    if missing:
        raise SourceError(f"erasure requests file {path}: column(s) {missing} not found; it has: {', '.join(frame.columns)}")
    return frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(ROW))


def parse_file_requests(raw: pl.DataFrame, source_names: list[str]) -> Requests:
    """Check the rows `cmdm erase` wrote (or someone edited)."""
    def hex_index(name: str) -> tuple[pl.Series, pl.Series]:
        text = raw[name].str.strip_chars().replace("", None)
        ok = text.str.contains(f"^[0-9a-f]{{{INDEX_HEX}}}$").fill_null(True)
        return pl.select(pl.when(ok).then(text).str.decode("hex")).to_series().alias(name), ~ok

    email_index, bad_email = hex_index("email_index")
    phone_index, bad_phone = hex_index("phone_index")
    requested = raw["requested_at"].str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
    typed = pl.DataFrame({
        ROW: raw[ROW],
        "request_id": clean_text(raw["request_id"]),
        "requested_at": requested,
        "email": pl.Series([None] * raw.height, dtype=pl.String),
        "phone": pl.Series([None] * raw.height, dtype=pl.String),
        "email_index": email_index,
        "phone_index": phone_index,
        "master_id": clean_text(raw["master_id"]),
        "source_system": clean_text(raw["source_system"]).str.to_lowercase(),
        "source_record_id": raw["source_record_id"].str.strip_chars().replace("", None),
        "__bad_email": bad_email,
        "__bad_phone": bad_phone,
        "__bad_time": raw["requested_at"].is_not_null() & requested.is_null(),
    }).with_columns(pl.lit("cli").alias("origin"))
    issues = [
        _issue(typed.filter(pl.col("request_id").is_null()), "request_id.missing", pl.lit("column 'request_id': no value")),
        _issue(typed.filter("__bad_email"), "email_index.invalid", pl.lit("column 'email_index': not 32 hex digits")),
        _issue(typed.filter("__bad_phone"), "phone_index.invalid", pl.lit("column 'phone_index': not 32 hex digits")),
        _issue(typed.filter("__bad_time"), "requested_at.invalid", pl.lit("column 'requested_at': not an ISO timestamp")),
        *_subject_issues(typed, source_names, ["email_index", "phone_index", "master_id", "source_record_id"],
                         "'source_system'", "'source_record_id'"),
    ]
    return _finish(typed, issues)


def record_request(
    config: ProjectConfig, *, request_id: str | None = None, email_index: bytes | None = None,
    phone_index: bytes | None = None, master_id: str | None = None, record: tuple[str, str] | None = None,
    now: dt.datetime | None = None,
) -> str:
    """Append one request to the requests file (created 0600 in a 0700 folder); returns its id."""
    if not (email_index or phone_index or master_id or record):
        raise ErasureRequestError("name the subject: --email, --phone, --master-id or --record SYSTEM:ID")
    if record is not None and record[0] not in [s.name for s in config.sources]:
        raise ErasureRequestError(
            f"--record: {record[0]!r} is not a configured source ({', '.join(s.name for s in config.sources)})")
    now = now or dt.datetime.now(dt.UTC)
    request_id = request_id or f"cli-{now:%Y%m%d%H%M%S}-{secrets.token_hex(4)}"
    path = requests_file(config)
    from cmdm_pipeline.protect.keys.kek import private_folder

    private_folder(path.parent)
    if path.exists() and request_id in set(read_requests_file(path)["request_id"].drop_nulls()):
        raise ErasureRequestError(f"request id {request_id!r} is already in {path}")
    new = not path.exists() or path.stat().st_size == 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(FILE_COLUMNS)
        writer.writerow([
            request_id, now.isoformat(timespec="seconds"), email_index.hex() if email_index else "",
            phone_index.hex() if phone_index else "", master_id or "", record[0] if record else "",
            record[1] if record else "",
        ])
        handle.flush()
        os.fsync(handle.fileno())
    return request_id


# --- shared checks --------------------------------------------------------------------------------


def _issue(rows: pl.DataFrame, rule: str, reason: pl.Expr) -> pl.DataFrame:
    return rows.select("origin", ROW, pl.lit(rule).alias("rule"), (pl.format("row {}, ", pl.col(ROW)) + reason).alias("reason"))


def _subject_issues(parsed: pl.DataFrame, source_names: list[str], subject_columns: list[str],
                    system_label: str, record_label: str) -> list[pl.DataFrame]:
    present = pl.any_horizontal(pl.col(c).is_not_null() for c in (
        "email", "phone", "email_index", "phone_index", "master_id", "source_record_id", "source_system",
        "__email_problem", "__phone_problem") if c in parsed.columns)
    problem = [c for c in ("__email_problem", "__phone_problem") if c in parsed.columns]
    bad = [c for c in ("__bad_email", "__bad_phone") if c in parsed.columns]
    flagged = pl.any_horizontal([pl.col(c).is_not_null() for c in problem] + [pl.col(c) for c in bad]) \
        if problem or bad else pl.lit(False)
    return [
        _issue(parsed.filter(~present & ~flagged), "subject.missing",
               pl.lit(f"no subject: columns {subject_columns} are all empty")),
        _issue(parsed.filter(pl.col("source_record_id").is_null() != pl.col("source_system").is_null()),
               "subject.incomplete", pl.lit(f"columns {system_label} and {record_label} identify a record only together")),
        _issue(parsed.filter(pl.col("source_system").is_not_null() & ~pl.col("source_system").is_in(source_names)),
               "source_system.unknown", pl.lit(f"column {system_label}: not a configured source ({', '.join(source_names)})")),
    ]


def _finish(typed: pl.DataFrame, issues: list[pl.DataFrame]) -> Requests:
    found = [f.select(list(_ISSUES)).cast(_ISSUES) for f in issues if f.height]  # type: ignore[arg-type]
    checked = pl.concat(found) if found else pl.DataFrame(schema=_ISSUES)
    valid = typed.join(checked, on=["origin", ROW], how="anti")
    # One id, one request: a later row with an id already used is held back, whatever it says.
    first = valid.with_columns(pl.col(ROW).min().over("request_id").alias("__first"))
    repeated = _issue(first.filter(pl.col(ROW) != pl.col("__first")), "request_id.duplicate",
                      pl.format("the same request id as row {}", pl.col("__first")))
    valid = valid.join(repeated, on=["origin", ROW], how="anti")
    issues_all = pl.concat([checked, repeated.select(list(_ISSUES)).cast(_ISSUES)])  # type: ignore[arg-type]
    ids = typed.select("origin", ROW, "request_id")
    return Requests(valid.select(list(REQUEST_COLUMNS)).cast(REQUEST_COLUMNS), issues_all, ids)  # type: ignore[arg-type]
