"""Consent events in: read the configured source, type and check every row, and keep what is new.

Every row read ends in exactly one place: appended to ``consent_history``, recognised as
already there (same event id, or same content under another id), or quarantined with its
reasons. Reasons name the row and the source column, never the value, so they are safe in
logs and Dagster metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from cmdm_pipeline.config import ConsentConfig, ProjectConfig
from cmdm_pipeline.protect.keys.digest import sha256_hex
from cmdm_pipeline.stages.extract import read_mapped_rows
from cmdm_pipeline.stages.fields import clean_text, email, phone

ROW = "source_row_number"
UTC = pl.Datetime("us", "UTC")

#: A checked consent event, one per valid source row.
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String(),  # the source's id, else "sha256:" + content hash
    "event_hash": pl.String(),  # sha256 of the standardised content (not the id)
    "subject_email": pl.String(),
    "subject_phone": pl.String(),  # E.164
    "subject_source_system": pl.String(),
    "subject_source_record_id": pl.String(),
    "purpose": pl.String(),
    "channel": pl.String(),
    "action": pl.String(),  # granted | withdrawn
    "occurred_at": UTC,
    "lawful_basis": pl.String(),
    "policy_version": pl.String(),
    "evidence_ref": pl.String(),
    ROW: pl.Int64(),
}

QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    ROW: pl.Int64(),
    "rules_broken": pl.List(pl.String()),
    "reason": pl.String(),
    "source_values": pl.String(),  # the row as read, JSON
}

_ISSUES = {ROW: pl.Int64(), "rule": pl.String(), "reason": pl.String()}


@dataclass(frozen=True)
class ParsedEvents:
    valid: pl.DataFrame  # EVENT_COLUMNS
    issues: pl.DataFrame  # one row per row × problem: source_row_number, rule, reason
    raw: pl.DataFrame  # the rows as read, with source_row_number


def read_consent_events(config: ProjectConfig) -> pl.DataFrame:
    """The consent source's rows as text, with ``source_row_number``; missing columns fail naming them."""
    assert config.consent is not None
    return read_mapped_rows(config.consent.source, config, "consent source")


def _issue(rows: pl.DataFrame, rule: str, reason: pl.Expr) -> pl.DataFrame:
    return rows.select(ROW, pl.lit(rule).alias("rule"), (pl.format("row {}, ", pl.col(ROW)) + reason).alias("reason"))


def parse_consent_events(raw: pl.DataFrame, consent: ConsentConfig, source_names: list[str]) -> ParsedEvents:
    """Type and check each row; ``valid`` holds rows without problems, ``issues`` says what is wrong with the rest."""
    column: dict[str, str] = {field: col for col, field in consent.source.columns.items()}
    typed = _typed(raw, consent, column)
    parsed = typed.filter(pl.col("__parse_error").is_null())
    issues = [
        _issue(typed.filter(pl.col("__parse_error").is_not_null()), "input.unparsable_row",
               pl.lit("could not be parsed: ") + pl.col("__parse_error")),
        *_value_issues(parsed, consent, column, source_names),
        *_subject_issues(parsed, column),
    ]
    checked = _collect(issues)
    valid = parsed.join(checked, on=ROW, how="anti").select([c for c in EVENT_COLUMNS if c != "event_hash"])
    valid = _with_identity(valid)
    duplicates = _duplicate_issues(valid, column)
    valid = valid.join(duplicates, on=ROW, how="anti")
    return ParsedEvents(valid.select(list(EVENT_COLUMNS)), _collect([checked, duplicates]), raw)


def _typed(raw: pl.DataFrame, consent: ConsentConfig, column: dict[str, str]) -> pl.DataFrame:
    """EVENT_COLUMNS standardised (the project's own e-mail and phone standardisers), plus what checks need."""
    spec = consent.source

    def text(field: str) -> pl.Series:
        if field not in column:
            return pl.Series(field, [None] * raw.height, dtype=pl.String)
        return clean_text(raw[column[field]]).alias(field)

    country = pl.Series("country", [spec.as_source().default_country] * raw.height, dtype=pl.String)
    mail, tel = email(text("email")), phone(text("phone"), country=country)
    lowered = {f: text(f).str.to_lowercase() for f in ("purpose", "channel", "action", "lawful_basis", "source_system")}
    actions = {k.casefold(): v for k, v in spec.action_values.items()}
    return pl.DataFrame(
        {
            ROW: raw[ROW],
            "__parse_error": raw["parse_error"],
            "event_id": text("event_id"),
            "subject_email": mail.value,
            "__email_problem": mail.problem,
            "subject_phone": tel.value,
            "__phone_problem": tel.problem,
            "subject_source_system": lowered["source_system"],
            # Trimmed only, as extract trims customer record ids, so the two compare equal.
            "subject_source_record_id": raw[column["source_record_id"]].str.strip_chars().replace("", None)
            if "source_record_id" in column else text("source_record_id"),
            "purpose": lowered["purpose"],
            "channel": lowered["channel"],
            "action": lowered["action"].replace_strict(actions, default=None, return_dtype=pl.String),
            "__action_text": lowered["action"],
            "occurred_at": _timestamps(text("occurred_at"), spec.timestamp_formats),
            "__occurred_text": text("occurred_at"),
            "lawful_basis": lowered["lawful_basis"].str.replace_all(r"[\s-]+", "_"),
            "policy_version": text("policy_version"),
            "evidence_ref": text("evidence_ref"),
        }
    )


def _value_issues(
    parsed: pl.DataFrame, consent: ConsentConfig, column: dict[str, str], source_names: list[str]
) -> list[pl.DataFrame]:
    """Missing required values, values outside the declared vocabulary, unreadable times, e-mails and phones."""
    issues = []
    required = {"purpose": "purpose", "channel": "channel", "action": "__action_text", "occurred_at": "__occurred_text"}
    for field, text_column in required.items():
        issues.append(_issue(parsed.filter(pl.col(text_column).is_null()), f"{field}.missing",
                             pl.lit(f"column {column[field]!r}: no value")))
    channels = [*consent.channels, *([consent.all_channels] if consent.all_channels else [])]
    vocabulary = [
        ("purpose", "purpose", consent.purposes, "not a declared purpose"),
        ("channel", "channel", channels, "not a declared channel"),
        ("lawful_basis", "lawful_basis", consent.lawful_bases, "not an accepted lawful basis"),
        ("source_system", "subject_source_system", source_names, "not a configured source"),
    ]
    for field, col, allowed, message in vocabulary:
        if field in column:
            bad = parsed.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(allowed))
            issues.append(_issue(bad, f"{field}.unknown", pl.lit(f"column {column[field]!r}: {message} ({', '.join(allowed)})")))
    spec = consent.source
    bad = parsed.filter(pl.col("__action_text").is_not_null() & pl.col("action").is_null())
    issues.append(_issue(bad, "action.unknown", pl.lit(
        f"column {column['action']!r}: not a known action ({', '.join(sorted(k.casefold() for k in spec.action_values))})")))
    bad = parsed.filter(pl.col("__occurred_text").is_not_null() & pl.col("occurred_at").is_null())
    issues.append(_issue(bad, "occurred_at.invalid", pl.lit(
        f"column {column['occurred_at']!r}: not a timestamp in the formats {spec.timestamp_formats}")))
    for field, problem in (("email", "__email_problem"), ("phone", "__phone_problem")):
        if field in column:
            issues.append(_issue(parsed.filter(pl.col(problem).is_not_null()), f"{field}.invalid",
                                 pl.format(f"column {column[field]!r}: {{}}", pl.col(problem))))
    return issues


def _timestamps(text: pl.Series, formats: list[str]) -> pl.Series:
    """The first format that reads a value wins; 'Z' is UTC and a value without an offset is read as UTC."""
    normalised = text.str.replace(r"(?i)z$", "+00:00")
    readings = [normalised.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us") for fmt in formats]
    return pl.select(pl.coalesce(readings).alias("occurred_at")).to_series()


def _subject_issues(parsed: pl.DataFrame, column: dict[str, str]) -> list[pl.DataFrame]:
    subject = [column[f] for f in ("email", "phone", "source_record_id") if f in column]
    raw_present = pl.any_horizontal(
        pl.col(c).is_not_null() for c in ("subject_email", "__email_problem", "subject_phone", "__phone_problem",
                                          "subject_source_record_id")
    )
    found = [_issue(parsed.filter(~raw_present), "subject.missing",
                    pl.lit(f"no subject: columns {subject} are all empty"))]
    if "source_record_id" in column:
        half = parsed.filter(pl.col("subject_source_record_id").is_null() != pl.col("subject_source_system").is_null())
        found.append(_issue(half, "subject.incomplete", pl.lit(
            f"columns {column['source_system']!r} and {column['source_record_id']!r} identify a record only together")))
    return found


def _with_identity(valid: pl.DataFrame) -> pl.DataFrame:
    """``event_hash`` (sha256 of the standardised content) and ``event_id`` (the source's id, else the hash)."""
    content = [c for c in EVENT_COLUMNS if c not in ("event_id", "event_hash", ROW)]
    payload = valid.select(
        pl.struct(pl.col(content).exclude("occurred_at"), pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
        .struct.json_encode().alias("payload")
    )
    return valid.with_columns(sha256_hex(payload["payload"]).alias("event_hash")).with_columns(
        pl.col("event_id").fill_null(pl.lit("sha256:") + pl.col("event_hash").str.slice(0, 32))
    )


def _duplicate_issues(valid: pl.DataFrame, column: dict[str, str]) -> pl.DataFrame:
    """A row with the content of an earlier row is a copy; rows sharing an id with different content conflict."""
    marked = valid.with_columns(pl.col(ROW).min().over("event_hash").alias("__first"))
    copies = _issue(marked.filter(pl.col(ROW) != pl.col("__first")), "event.duplicate",
                    pl.format("same event as row {}", pl.col("__first")))
    # Ids are judged over every row, copies included: an id that names two different events names neither.
    shared = valid.filter(pl.col("event_hash").n_unique().over("event_id") > 1).with_columns(
        pl.col(ROW).sort().head(5).cast(pl.String).implode().over("event_id").list.join(", ").alias("__rows"))
    label = repr(column["event_id"]) if "event_id" in column else "event id"
    conflicts = _issue(shared, "event_id.conflict",
                       pl.format(f"column {label}: the same id as rows {{}} with different content", pl.col("__rows")))
    return pl.concat([copies.select(list(_ISSUES)), conflicts.select(list(_ISSUES))])


def _collect(issues: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f.select(list(_ISSUES)).cast(_ISSUES) for f in issues if f.height]  # type: ignore[arg-type]
    return pl.concat(frames) if frames else pl.DataFrame(schema=_ISSUES)


@dataclass(frozen=True)
class Ingest:
    new: pl.DataFrame  # EVENT_COLUMNS: events not in the history yet
    already: int  # valid rows the history holds already
    quarantined: pl.DataFrame  # QUARANTINE_COLUMNS


def ingest(parsed: ParsedEvents, history: pl.DataFrame, run_id: str) -> Ingest:
    """Split valid events into new ones and ones the history has; an id it holds with other content is quarantined."""
    known = parsed.valid.join(history.select("event_hash"), on="event_hash", how="semi")
    rest = parsed.valid.join(known, on=ROW, how="anti")
    clash = rest.join(history.select("event_id"), on="event_id", how="semi")
    conflicts = _issue(clash, "event_id.conflict", pl.lit(
        "event id already in consent_history with different content (the history is append-only)"))
    new = rest.join(clash, on=ROW, how="anti")
    issues = _collect([parsed.issues, conflicts])
    reasons = issues.sort(ROW, "rule").group_by(ROW, maintain_order=True).agg(
        pl.col("rule").unique(maintain_order=True).alias("rules_broken"), pl.col("reason").str.join("; "))
    own = [c for c in parsed.raw.columns if c not in ("parse_error", ROW)]
    quarantined = parsed.raw.join(reasons, on=ROW, how="inner").select(
        pl.lit(run_id).alias("run_id"), ROW, "rules_broken", "reason",
        pl.struct(own).struct.json_encode().alias("source_values"),
    ).sort(ROW)
    total = new.height + known.height + quarantined.height
    if total != parsed.raw.height:  # every row is new, known or quarantined: anything else is a bug
        raise RuntimeError(f"consent events do not reconcile: {parsed.raw.height} read, {total} accounted for")
    return Ingest(new, known.height, quarantined.cast(QUARANTINE_COLUMNS))  # type: ignore[arg-type]
