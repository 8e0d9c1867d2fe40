"""The right to erasure: find a subject's rows, and keep erased records from coming back.

**Resolution.** A request names its subject by source record, master id, e-mail or phone; they are
tried in that order and the first that finds anyone decides (as consent resolution does). E-mails and
phones are compared as blind indexes, so a request recorded by `cmdm erase` (indexes only) and one read
from a requests source (plaintext, indexed in memory) resolve alike. What is found:

- the subject's **masters**: the master found, plus every id merged into it earlier (``master_id_lineage``);
- their **records**: every source record of those masters (``customer_xref``), plus records found
  directly that have no master (quarantined ones), plus rows without an id whose e-mail or phone is the
  subject's own;
- their **own identifiers**: the e-mails and phones of those records (and of the request) that no record of
  anybody else holds. A household's shared landline is nobody's own, so it neither erases nor blocks the
  household;
- **versions of other masters** that drew on their records (a wrong merge, later split), and masters
  every version of which did (added to their masters): see :mod:`cmdm_pipeline.protect.erasure.history`;
- their **consent events** (by record, by master at ingest, or by an own e-mail or phone) and the rows of
  ``consent_quarantine`` about them: the quarantined row as read is parsed with the consent source's
  mapping and standardised as the consent stage does, and matches by record key, own e-mail or own phone;
  a row too broken to parse still matches when its text contains an own e-mail, or an own phone's national
  number (separators ignored);
- their **steward decisions**: rows of the decisions file (``matching.decisions``) naming one of their
  records. The file is the stewards' own, so it is not edited: each such record is listed in
  ``erasure_notifications`` under the pseudo source system ``match_decisions`` (as ``system:id``) for a
  steward to delete, and the ``steward_decision`` audit rows of those decisions are deleted. Until the
  steward does, the decision is ignored: matching joins decisions to the records read (a tombstoned
  record never is) and the audit logs only decisions whose two records have masters.

An e-mail or phone found on records of several masters is **ambiguous**: nothing is erased, the request is
logged as ``ambiguous`` and a steward re-files it naming a master id or record. A request that finds nobody
is logged ``not_found``. Each request id is processed once.

**Tombstones** (table ``erasure_tombstones``) hold keyed digests of the erased records' keys and the blind
indexes of the subject's own e-mails and phones: no personal data. Every later extract drops source rows
they match before anything is stored (counted as ``rows_erased`` in ``run_reconciliation``), and the consent
stage drops events about them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from cmdm_pipeline.config import ProjectConfig, Source
from cmdm_pipeline.protect.erasure.history import (
    SOURCE_COLUMNS,
    VERSION_COLUMNS,
    VERSION_KEY,
    copied_versions,
    wholly_copied,
)
from cmdm_pipeline.protect.keys.blind_index import blind_index, derive_key, keyed_digests
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.schema import Kind

UTC = pl.Datetime("us", "UTC")
TOMBSTONES = "erasure_tombstones"
LOG = "erasure_log"
NOTIFICATIONS = "erasure_notifications"
QUARANTINE = "erasure_quarantine"
SUPPRESSED = "erasure_suppressed"
#: Tables of the erasure stage itself: they hold ids, digests and counts, never a subject's data.
OWN_TABLES = (TOMBSTONES, LOG, NOTIFICATIONS, QUARANTINE, SUPPRESSED)
#: The pseudo source system of notifications asking stewards to delete decisions naming an erased record.
DECISIONS_SYSTEM = "match_decisions"

TOMBSTONE_COLUMNS: dict[str, pl.DataType] = {
    "tombstone": pl.Binary(),  # keyed digest of a record key, or blind index of an e-mail or phone
    "kind": pl.String(),  # record | email | phone
    "request_id": pl.String(),
    "created_at": UTC,
    "run_id": pl.String(),
}
NOTIFICATION_COLUMNS: dict[str, pl.DataType] = {
    "notification_id": pl.String(),  # request_id|source_system|source_record_id
    "request_id": pl.String(),
    "source_system": pl.String(),
    "source_record_id": pl.String(),
    "erased_at": UTC,
    "run_id": pl.String(),
}
LOG_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "origin": pl.String(),  # source | cli
    "requested_at": UTC,
    "processed_at": UTC,
    "run_id": pl.String(),
    "status": pl.String(),  # erased | not_found | ambiguous
    "resolved_by": pl.String(),  # source_record | master_id | email | phone (null: not found)
    "candidate_masters": pl.Int64(),
    "masters_erased": pl.Int64(),
    "records_erased": pl.Int64(),
    "rows_removed": pl.String(),  # JSON {table: rows}
    "keys_destroyed": pl.Int64(),
    "tombstones_added": pl.Int64(),
    "file_rebuilt": pl.Boolean(),
}
SUPPRESSED_COLUMNS: dict[str, pl.DataType] = {
    "suppression_id": pl.String(),  # run_id|source_system
    "run_id": pl.String(),
    "source_system": pl.String(),
    "rows_erased": pl.Int64(),
    "suppressed_at": UTC,
}

_KEYS = {"source_system": pl.String(), "source_record_id": pl.String()}
_ROWS = {"source_system": pl.String(), "source_row_number": pl.Int64()}
_DECISION_KEYS = {"source_system_l": pl.String(), "source_record_id_l": pl.String(), "source_system_r": pl.String(),
                  "source_record_id_r": pl.String(), "audit_id": pl.String(), "in_store": pl.Boolean()}
_QUARANTINE_SUBJECT = {"subject_source_system": pl.String(), "subject_source_record_id": pl.String(),
                       "email_index": pl.Binary(), "phone_index": pl.Binary()}


@dataclass
class Subject:
    """What one request resolved to. Plaintext e-mails stay in memory (to find rows that mention them)."""

    request_id: str
    status: str  # erased | not_found | ambiguous
    resolved_by: str | None = None
    candidates: int = 0
    masters: list[str] = field(default_factory=list)
    records: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_KEYS))
    unkeyed_rows: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_ROWS))
    own_email_index: list[bytes] = field(default_factory=list)
    own_phone_index: list[bytes] = field(default_factory=list)
    own_emails: list[str] = field(default_factory=list)
    consent_events: list[str] = field(default_factory=list)
    consent_quarantine_rows: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={"run_id": pl.String(), "source_row_number": pl.Int64()}))
    own_phones: list[str] = field(default_factory=list)  # E.164, memory only
    #: Versions of other masters that drew on the subject's records (erasure_history).
    history_versions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=VERSION_KEY))
    decision_records: list[str] = field(default_factory=list)  # "system:id" of their records the decisions name
    decision_audit_ids: list[str] = field(default_factory=list)

    def lens_masters(self) -> list[str]:
        """Masters whose published lens rows may show the subject: theirs, and those with copied versions."""
        return sorted({*self.masters, *self.history_versions["master_id"].to_list()})

    def owners(self) -> list[str]:
        """Every data-key owner of the subject's rows (docs/concepts/encryption.md)."""
        records = [f"record/{s}/{r}" for s, r in self.records.iter_rows()]
        unkeyed = [f"record/{s}/#row{n}" for s, n in self.unkeyed_rows.iter_rows()]
        quarantine = [f"consent-quarantine/{r}|{n}" for r, n in self.consent_quarantine_rows.iter_rows()]
        return [*[f"master/{m}" for m in self.masters], *records, *unkeyed,
                *[f"consent/{e}" for e in self.consent_events], *quarantine]


def subject_of_owners(owners: list[str]) -> Subject:
    """The rows a list of data-key owners (:meth:`Subject.owners`) names, as a subject to delete."""
    records, rows, masters, events, quarantine = [], [], [], [], []
    for owner in owners:
        kind, _, rest = owner.partition("/")
        if kind == "master":
            masters.append(rest)
        elif kind == "record":
            system, _, record = rest.partition("/")
            if record.startswith("#row") and record[4:].isdigit():
                rows.append((system, int(record[4:])))
            else:
                records.append((system, record))
        elif kind == "consent":
            events.append(rest)
        elif kind == "consent-quarantine":
            run, _, number = rest.rpartition("|")
            quarantine.append((run, int(number)))
    return Subject(
        "interrupted", "erased", masters=sorted(masters),
        records=pl.DataFrame(records, schema=_KEYS, orient="row"),
        unkeyed_rows=pl.DataFrame(rows, schema=_ROWS, orient="row"), consent_events=sorted(events),
        consent_quarantine_rows=pl.DataFrame(quarantine, schema={"run_id": pl.String(), "source_row_number": pl.Int64()},
                                             orient="row"),
    )


# --- indexes ----------------------------------------------------------------------------------------


def record_digest_key(keys: KeyStore) -> bytes:
    return derive_key(keys.index_key(), "erasure tombstone|record")


def record_digests(systems: pl.Series, records: pl.Series, key: bytes) -> pl.Series:
    """Keyed digest of each source record key (null where the record has no id)."""
    joined = pl.select(pl.concat_str([systems, pl.lit("\x1f"), records])).to_series()
    return keyed_digests(joined, key)


def contact_frame(records: pl.DataFrame, config: ProjectConfig, keys: KeyStore) -> pl.DataFrame:
    """One row per record × e-mail or phone attribute with a value: its blind index and plaintext (memory only).

    ``records``: source_system, source_record_id, source_row_number and the schema's e-mail and phone columns.
    """
    schema = config.customer_schema
    parts = []
    for kind, attributes in (("email", schema.of_kind(Kind.email)), ("phone", schema.of_kind(Kind.phone))):
        for attribute in attributes:
            if attribute not in records.columns:
                continue
            part = records.select("source_system", "source_record_id", "source_row_number",
                                  pl.col(attribute).cast(pl.String).alias("value")).filter(pl.col("value").is_not_null())
            index = blind_index(part["value"], kind, keys)  # type: ignore[arg-type]
            parts.append(part.with_columns(pl.lit(kind).alias("kind"), index.alias("index")))
    schema_out = {**_KEYS, "source_row_number": pl.Int64(), "value": pl.String(), "kind": pl.String(), "index": pl.Binary()}
    if not parts:
        return pl.DataFrame(schema=schema_out)
    return pl.concat(parts).select(list(schema_out)).cast(schema_out).filter(pl.col("index").is_not_null())  # type: ignore[arg-type]


def index_requests(requests: pl.DataFrame, keys: KeyStore) -> pl.DataFrame:
    """Requests with ``email_index`` / ``phone_index`` filled from their plaintext where they came as text."""
    return requests.with_columns(
        pl.coalesce("email_index", blind_index(requests["email"], "email", keys)).alias("email_index"),
        pl.coalesce("phone_index", blind_index(requests["phone"], "phone", keys)).alias("phone_index"),
    )


# --- resolution -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """The previous run's tables, as erasure needs them."""

    contacts: pl.DataFrame  # contact_frame of standardised_customers
    rows: pl.DataFrame  # source_system, source_record_id, source_row_number of every standardised row
    xref: pl.DataFrame  # source_system, source_record_id, master_id (first_seen: for the lineage fallback)
    lineage: pl.DataFrame  # event, master_id, related_master_id (recorded_at: for the lineage fallback)
    consent: pl.DataFrame  # event_id, email_index, phone_index, subject_source_system, subject_source_record_id, master_id
    #: run_id, source_row_number, source_values (the row as read, JSON), and its subject as consent_subjects gives
    consent_quarantine: pl.DataFrame
    history_sources: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=SOURCE_COLUMNS))
    versions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=VERSION_COLUMNS))
    #: steward decisions as matching reads them (pair keys), with each one's steward_decision ``audit_id``
    decisions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_DECISION_KEYS))


def resolve_request(request: dict[str, object], known: Known) -> Subject:
    """The subject of one (indexed) request, see the module docstring."""
    request_id = str(request["request_id"])
    masters_of = known.xref.select("source_system", "source_record_id", "master_id")
    live = set(masters_of["master_id"].drop_nulls())
    hits: pl.DataFrame | None = None
    masters: set[str] = set()
    resolved_by = None
    for how in ("source_record", "master_id", "email", "phone"):
        if how == "source_record" and request["source_record_id"] is not None:
            key = pl.DataFrame({"source_system": [request["source_system"]], "source_record_id": [request["source_record_id"]]},
                               schema=_KEYS)
            found = pl.concat([known.rows.select(*_KEYS).join(key, on=list(_KEYS), how="semi"),
                               masters_of.select(*_KEYS).join(key, on=list(_KEYS), how="semi")]).unique()
        elif how == "master_id" and request["master_id"] is not None:
            survivor = follow_merges(str(request["master_id"]), known.lineage)
            found = masters_of.filter(pl.col("master_id") == survivor).select(*_KEYS) if survivor in live \
                else pl.DataFrame(schema=_KEYS)
        elif how in ("email", "phone") and request[f"{how}_index"] is not None:
            match = known.contacts.filter((pl.col("kind") == how) & (pl.col("index") == request[f"{how}_index"]))
            found = match.filter(pl.col("source_record_id").is_not_null()).select(*_KEYS).unique()
            if match.filter(pl.col("source_record_id").is_null()).height and not found.height:
                found = pl.DataFrame(schema=_KEYS)  # only rows without an id: handled as unkeyed rows below
                hits = found
                resolved_by = how
                break
        else:
            continue
        if found.height:
            hits, resolved_by = found, how
            break
    if hits is None:
        return Subject(request_id, "not_found")
    masters = set(hits.join(masters_of, on=list(_KEYS), how="inner")["master_id"].drop_nulls())
    if len(masters) > 1:
        return Subject(request_id, "ambiguous", resolved_by, len(masters))
    family = ancestors(masters, known.lineage)
    records = pl.concat([masters_of.filter(pl.col("master_id").is_in(list(masters))).select(*_KEYS), hits]).unique()
    records = records.filter(pl.col("source_record_id").is_not_null()).sort(list(_KEYS))
    own = _own_identifiers(records, known.contacts, request)
    unkeyed = known.contacts.filter(
        pl.col("source_record_id").is_null() & pl.col("index").is_in(own["index"].to_list())
    ).select("source_system", "source_row_number").unique().sort(list(_ROWS))
    emails = own.filter(pl.col("kind") == "email")
    own_emails = sorted({*emails["value"].drop_nulls().to_list(), *([request["email"]] if request.get("email") else [])})
    phones = own.filter(pl.col("kind") == "phone")
    requested_phone = request.get("phone")
    subject = Subject(
        request_id, "erased", resolved_by, len(masters), sorted(family), records, unkeyed,
        emails["index"].unique().to_list(), phones["index"].unique().to_list(),
        [str(e).lower() for e in own_emails],
        own_phones=sorted({*phones["value"].drop_nulls().to_list(),
                           *([requested_phone] if isinstance(requested_phone, str) and requested_phone else [])}),
    )
    return _with_copies(subject, known)


def _with_copies(subject: Subject, known: Known) -> Subject:
    """The subject with what names or copies them beyond their own rows: consent events and quarantined
    ones, other masters' versions, steward decisions."""
    copied = copied_versions(subject.records, subject.masters, known.history_sources, known.versions,
                             known.lineage, known.xref)
    whole = wholly_copied(copied, known.versions)
    subject.masters = sorted({*subject.masters, *whole})
    subject.history_versions = copied.filter(~pl.col("master_id").is_in(whole))
    subject.consent_events = consent_events_of(subject, known.consent)
    subject.consent_quarantine_rows = quarantine_rows_of(subject, known.consent_quarantine)
    subject.decision_records, subject.decision_audit_ids = decisions_of(subject.records, known.decisions)
    return subject


def _own_identifiers(records: pl.DataFrame, contacts: pl.DataFrame, request: dict[str, object]) -> pl.DataFrame:
    """Indexes (kind, index, value) held by the subject's records, or named by the request, and by nobody else."""
    keyed = contacts.filter(pl.col("source_record_id").is_not_null())
    theirs = keyed.join(records, on=list(_KEYS), how="semi")
    others = keyed.join(records, on=list(_KEYS), how="anti").select("kind", "index").unique()
    named = pl.DataFrame(
        {"kind": ["email", "phone"], "index": [request["email_index"], request["phone_index"]],
         "value": [request.get("email"), request.get("phone")]},
        schema={"kind": pl.String(), "index": pl.Binary(), "value": pl.String()},
    ).filter(pl.col("index").is_not_null())
    candidates = pl.concat([theirs.select("kind", "index", "value"), named])
    return candidates.join(others, on=["kind", "index"], how="anti").unique(["kind", "index", "value"]).sort("kind", "value")


def follow_merges(master_id: str, lineage: pl.DataFrame) -> str:
    """The id a retired master lives on as (A merged into B merged into C: C)."""
    merged = dict(lineage.filter(pl.col("event") == "merged").select("master_id", "related_master_id").iter_rows())
    seen = {master_id}
    while master_id in merged and merged[master_id] not in seen:
        master_id = merged[master_id]
        seen.add(master_id)
    return master_id


def ancestors(masters: set[str], lineage: pl.DataFrame) -> set[str]:
    """``masters`` and every id merged into them, directly or through other merges."""
    merged = lineage.filter(pl.col("event") == "merged").select("master_id", "related_master_id").rows()
    family = set(masters)
    grown = True
    while grown:
        before = len(family)
        family |= {retired for retired, survivor in merged if survivor in family}
        grown = len(family) > before
    return family


def consent_events_of(subject: Subject, consent: pl.DataFrame) -> list[str]:
    """Consent events about the subject: by record, by master at ingest, or by an own e-mail or phone."""
    if consent.is_empty():
        return []
    keys = subject.records.rename({"source_system": "subject_source_system", "source_record_id": "subject_source_record_id"})
    by_record = consent.join(keys, on=["subject_source_system", "subject_source_record_id"], how="semi")
    other = consent.filter(
        pl.col("master_id").is_in(subject.masters)
        | pl.col("email_index").is_in(subject.own_email_index)
        | pl.col("phone_index").is_in(subject.own_phone_index)
    )
    return sorted(set(by_record["event_id"]) | set(other["event_id"]))


def quarantine_rows_of(subject: Subject, quarantine: pl.DataFrame) -> pl.DataFrame:
    """(run_id, source_row_number) of ``consent_quarantine`` rows about the subject (module docstring):
    by record key, own e-mail or phone index, or the row's text naming an own e-mail or phone."""
    empty = pl.DataFrame(schema={"run_id": pl.String(), "source_row_number": pl.Int64()})
    if quarantine.is_empty():
        return empty
    keys = subject.records.rename({"source_system": "subject_source_system", "source_record_id": "subject_source_record_id"})
    by_record = quarantine.join(keys, on=["subject_source_system", "subject_source_record_id"], how="semi")
    by_index = quarantine.filter(pl.col("email_index").is_in(subject.own_email_index)
                                 | pl.col("phone_index").is_in(subject.own_phone_index))
    by_text = quarantine.filter(text_mentions(quarantine["source_values"], subject.own_emails, subject.own_phones))
    found = pl.concat([f.select("run_id", "source_row_number") for f in (by_record, by_index, by_text)]).unique()
    return found.sort("run_id", "source_row_number").cast(empty.schema)


def text_mentions(text: pl.Series, emails: list[str], phones: list[str]) -> pl.Series:
    """Per text: does it contain one of ``emails`` (any case) or the national number of one of ``phones``
    (E.164), with spaces, dashes, dots, slashes and brackets between the digits ignored?"""
    needles = national_numbers(phones)
    hit = pl.Series([False] * text.len(), dtype=pl.Boolean)
    if emails:
        hit = hit | text.str.to_lowercase().str.contains_any(emails).fill_null(False)
    if needles:
        hit = hit | text.str.replace_all(r"[\s\-./()]", "").str.contains_any(needles).fill_null(False)
    return hit


def national_numbers(phones: list[str]) -> list[str]:
    """The national significant numbers of E.164 phones: what a row typed in any national or international form contains."""
    import phonenumbers

    found = set()
    for number in phones:
        try:
            found.add(str(phonenumbers.parse(number).national_number))
        except phonenumbers.NumberParseException:
            continue  # not E.164: nothing the rows could be compared with
    return sorted(found)


def consent_subjects(raw: pl.DataFrame, config: ProjectConfig, keys: KeyStore) -> pl.DataFrame:
    """Per consent-source row as read (source column names): its subject's record key and the blind indexes
    of its e-mail and phone, standardised as the consent stage standardises them; null where absent."""
    from cmdm_pipeline.stages.fields import clean_text, email, phone

    assert config.consent is not None
    column = {f: c for c, f in config.consent.source.columns.items()}
    nothing = pl.Series([None] * raw.height, dtype=pl.String)

    def text(field: str) -> pl.Series:
        return clean_text(raw[column[field]]) if field in column else nothing

    country = pl.Series([config.consent.source.default_country] * raw.height, dtype=pl.String)
    record = raw[column["source_record_id"]].str.strip_chars().replace("", None) if "source_record_id" in column \
        else nothing
    return pl.DataFrame({
        "subject_source_system": text("source_system").str.to_lowercase(),
        "subject_source_record_id": record,
        "email_index": blind_index(email(text("email")).value, "email", keys),
        "phone_index": blind_index(phone(text("phone"), country=country).value, "phone", keys),
    }, schema=_QUARANTINE_SUBJECT)


def quarantine_subjects(quarantine: pl.DataFrame, config: ProjectConfig, keys: KeyStore) -> pl.DataFrame:
    """``consent_quarantine`` rows (run_id, source_row_number, source_values) with their subject columns
    (:func:`consent_subjects` of the row as read)."""
    if quarantine.is_empty() or config.consent is None:
        return quarantine.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in _QUARANTINE_SUBJECT.items())
    columns = list(config.consent.source.columns)
    raw = quarantine["source_values"].str.json_decode(pl.Struct(dict.fromkeys(columns, pl.String()))).struct.unnest()
    return pl.concat([quarantine, consent_subjects(raw, config, keys)], how="horizontal")


def decisions_of(records: pl.DataFrame, decisions: pl.DataFrame) -> tuple[list[str], list[str]]:
    """("system:id" of the subject's records the decisions file names, for a steward to delete there; the audit
    ids of every decision naming them, the workbench's too: the workbench's store is purged by erasure itself)."""
    if decisions.is_empty() or records.is_empty():
        return [], []
    named = []
    for side in ("l", "r"):
        keys = records.rename({"source_system": f"source_system_{side}", "source_record_id": f"source_record_id_{side}"})
        named.append(decisions.join(keys, on=list(keys.columns), how="inner").select(
            pl.concat_str(keys.columns, separator=":").alias("record"), "audit_id", "in_store"))
    found = pl.concat(named)
    return sorted(set(found.filter(~pl.col("in_store"))["record"])), sorted(set(found["audit_id"]))


# --- tombstones -------------------------------------------------------------------------------------


def tombstones_of(subject: Subject, keys: KeyStore, contacts: bool, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """Record-key digests of the subject's records and (``contacts``) blind indexes of their own e-mails and phones."""
    records = record_digests(subject.records["source_system"], subject.records["source_record_id"], record_digest_key(keys))
    parts = [pl.DataFrame({"tombstone": records, "kind": "record"}, schema={"tombstone": pl.Binary(), "kind": pl.String()})]
    if contacts:
        for kind, indexes in (("email", subject.own_email_index), ("phone", subject.own_phone_index)):
            parts.append(pl.DataFrame({"tombstone": indexes, "kind": [kind] * len(indexes)},
                                      schema={"tombstone": pl.Binary(), "kind": pl.String()}))
    return pl.concat(parts).unique("tombstone", maintain_order=True).with_columns(
        pl.lit(subject.request_id).alias("request_id"), pl.lit(now, dtype=UTC).alias("created_at"), pl.lit(run_id).alias("run_id"),
    ).select(list(TOMBSTONE_COLUMNS)).cast(TOMBSTONE_COLUMNS)  # type: ignore[arg-type]


def erased_rows(frame: pl.DataFrame, source: Source, config: ProjectConfig, tombstones: pl.DataFrame,
                keys: KeyStore) -> pl.Series:
    """Per raw row of ``source``: does a tombstone match it (its record key, or an own e-mail or phone)?"""
    if tombstones.is_empty() or frame.is_empty():
        return pl.Series("erased", [False] * frame.height, dtype=pl.Boolean)
    records = tombstones.filter(pl.col("kind") == "record")["tombstone"]
    digests = record_digests(pl.Series([source.name] * frame.height, dtype=pl.String), frame["source_record_id"],
                             record_digest_key(keys))
    erased = digests.is_in(records.to_list()).fill_null(False)
    contacts = tombstones.filter(pl.col("kind") != "record")
    if contacts.height:
        from cmdm_pipeline.stages.standardise import standardise

        schema = config.customer_schema
        wanted = {Kind.email, Kind.phone, Kind.country}
        columns = {c: a for c, a in source.columns.items() if schema.attributes[a].kind in wanted}
        if any(schema.attributes[a].kind != Kind.country for a in columns.values()):
            # The customer standardiser itself, on the contact columns only: the same values the tables would hold.
            typed = standardise(frame, source.model_copy(update={"columns": columns}), config)
            found = contact_frame(typed, config, keys)
            hit_rows = found.filter(pl.col("index").is_in(contacts["tombstone"].to_list()))["source_row_number"]
            erased = erased | frame["source_row_number"].is_in(hit_rows.to_list())
    return erased.alias("erased")


def suppressed_row(source_system: str, count: int, run_id: str, now: dt.datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {"suppression_id": [f"{run_id}|{source_system}"], "run_id": [run_id], "source_system": [source_system],
         "rows_erased": [count], "suppressed_at": [now]}, schema=SUPPRESSED_COLUMNS)


def erased_events(raw: pl.DataFrame, config: ProjectConfig, tombstones: pl.DataFrame, keys: KeyStore) -> pl.Series:
    """Per consent-source row (as read): is it about an erased subject (record, own e-mail or phone)?"""
    assert config.consent is not None
    if tombstones.is_empty() or raw.is_empty():
        return pl.Series("erased", [False] * raw.height, dtype=pl.Boolean)
    subjects = consent_subjects(raw, config, keys)
    digests = record_digests(subjects["subject_source_system"], subjects["subject_source_record_id"], record_digest_key(keys))

    def stones(kind: str) -> list[bytes]:
        return tombstones.filter(pl.col("kind") == kind)["tombstone"].to_list()

    hit = digests.is_in(stones("record")) | subjects["email_index"].is_in(stones("email")) \
        | subjects["phone_index"].is_in(stones("phone"))
    return hit.fill_null(False).alias("erased")
