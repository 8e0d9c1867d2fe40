"""The warehouse tables the assets write: their names, and per table its columns with type and meaning.

One place for both, read by the assets (the table names), by the Dagster definitions (each table asset's
``dagster/table_name`` and ``dagster/column_schema``, so the Catalog shows its columns) and by the docs
(``docs/reference/tables.md``). Column types are those :meth:`Warehouse.read` returns (personal columns are
stored as ciphertext and read back as these types); a test compares them with the tables a run writes. The
published files (each lens, the reports) declare their columns too: :func:`lens_schema`, :func:`reports_schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg
import polars as pl
from polars.datatypes import DataTypeClass

from cmdm_pipeline.config import Lens, ProjectConfig, Source
from cmdm_pipeline.protect.audit import AUDIT, AUDIT_COLUMNS
from cmdm_pipeline.protect.consent.events import QUARANTINE_COLUMNS as CONSENT_QUARANTINE_COLUMNS
from cmdm_pipeline.protect.consent.update import CURRENT_COLUMNS, HISTORY_COLUMNS
from cmdm_pipeline.protect.erasure.requests import QUARANTINE_COLUMNS as ERASURE_QUARANTINE_COLUMNS
from cmdm_pipeline.protect.erasure.subjects import (
    LOG,
    LOG_COLUMNS,
    NOTIFICATION_COLUMNS,
    NOTIFICATIONS,
    QUARANTINE,
    TOMBSTONE_COLUMNS,
    TOMBSTONES,
)
from cmdm_pipeline.protect.lenses.build import CONSENT_CHANNELS, treatments
from cmdm_pipeline.protect.lenses.publication import REPORTS
from cmdm_pipeline.protect.lookup import INDEX_COLUMNS, LOOKUP_INDEX
from cmdm_pipeline.quality.report import REPORT_COLUMNS, SCORE_COLUMNS
from cmdm_pipeline.stages.fields import DTYPES
from cmdm_pipeline.stages.master import LINEAGE_COLUMNS as ID_LINEAGE_COLUMNS
from cmdm_pipeline.stages.master import XREF_COLUMNS
from cmdm_pipeline.stages.reconcile import RECONCILIATION_COLUMNS
from cmdm_pipeline.stages.standardise import standardised_columns
from cmdm_pipeline.stages.survivorship import LINEAGE_COLUMNS as ATTRIBUTE_LINEAGE_COLUMNS
from cmdm_pipeline.stages.validate import QUARANTINE_COLUMNS, validation_columns

STANDARDISED = "standardised_customers"
VALIDATED = "validated_customers"
QUARANTINED = "quarantined_records"
RECONCILIATION = "run_reconciliation"
PAIRS = "match_pairs"
REVIEW = "match_review_queue"
CLUSTERS = "customer_clusters"
MATCH_SUMMARY = "match_summary"
XREF = "customer_xref"
ABSENT = "customer_xref_absent"  # records missing from the latest run, with the master ids they keep
ID_LINEAGE = "master_id_lineage"
ID_SEQUENCE = "master_id_sequence"  # the highest master id issued: ids are never issued twice
GOLDEN = "golden_customers"
ATTRIBUTE_LINEAGE = "golden_attribute_lineage"
HISTORY = "golden_customers_history"
QUALITY_REPORT = "quality_report"
SCORES = "golden_quality_scores"
CONSENT_HISTORY = "consent_history"
CONSENT_CURRENT = "consent_current"
CONSENT_QUARANTINE = "consent_quarantine"

#: The asset groups, in the order the data flows through them.
GROUPS = ("ingest", "standardise", "validate", "match", "master", "govern", "publish")

#: A type the data decides, not the code: written in words. A Mapping (read-only, so covariant): the stages'
#: ``dict[str, pl.DataType]`` column tables are Columns as they are.
Columns = Mapping[str, pl.DataType | str]

UTC = pl.Datetime("us", "UTC")
_KEYS = {"source_system": pl.String(), "source_record_id": pl.String()}
_PAIR_KEYS = {f"{c}_{side}": pl.String() for side in ("l", "r") for c in ("source_system", "source_record_id")}
_LEVELS = "Struct (Int8 per comparison of the model)"

_SIDES = {"l": "left (smaller key)", "r": "right"}
#: What a column means, by name; a table's own meaning of a name is in ``_TABLE_DESCRIPTIONS``.
DESCRIPTIONS: dict[str, str] = {
    "source_system": "Source name (`sources[].name`).",
    "source_record_id": "The record's id in its source system, trimmed.",
    "source_row_number": "Row in the file or query it came from (1 = first data row).",
    "ingested_at": "When the row was read (UTC).",
    "parse_error": "Why the row could not be parsed; null when it could.",
    "unparsed": "What the unparsable line held.",
    "record_type": "lead, contact or customer.",
    "party_type": "person or organisation.",
    "trust_rank": "The source's trust rank (1 = most trusted), used by survivorship.",
    "source_values": "The row as read, JSON.",
    "issues": "Problems found while standardising: rule, attribute, severity, reason.",
    "warnings": "Ids of the `warn` rules the row failed.",
    "rules_broken": "Ids of the rules the row broke.",
    "reason": "Why it was held back, naming row and column, never the value.",
    "run_id": "The Dagster run that wrote the row.",
    "master_id": "Stable master customer id.",
    "link_confidence": "Highest match probability of the record's pairs inside its cluster.",
    "first_seen": "First run that read the record (UTC).",
    "last_seen": "Latest run that read the record (UTC).",
    "rows_read": "Rows the source yielded this run, erased rows included.",
    "rows_validated": "Rows that passed every reject rule.",
    "rows_quarantined": "Rows held back.",
    "rows_erased": "Rows an erasure tombstone dropped at extract.",
    "balanced": "read = validated + quarantined + erased.",
    "reconciled_at": "When the counts were taken (UTC).",
    "match_weight": "log2 odds that the pair matches, with this run's prior.",
    "evidence": "Sum of the comparisons' log2 Bayes factors.",
    "match_probability": "Probability that the pair matches.",
    "blocked": "Found by a blocking rule; false: scored to complete a candidate cluster.",
    "comparison_levels": "Level of each comparison: -1 missing, 0 different, higher is closer.",
    "model_version": "Version of the match model that scored it.",
    "review_type": "pair (two records) or cluster (larger groups).",
    "records": "Records concerned.",
    "merged": "What the model decided: linked or not.",
    "doubt": "How close the decision was (0..1).",
    "records_affected": "Records the decision moves.",
    "priority": "doubt × records affected: most valuable first.",
    "review_reason": "Why a steward should look.",
    "cluster": "Cluster id (the smallest record id in it; not stable across runs).",
    "record_hash": "Hash of the matching features, compared by incremental runs.",
    "run_at": "When the run measured it.",
    "pairs_scored": "Pairs the model scored.",
    "pairs_blocked": "Pairs the blocking rules gave before scoring, when counted (over 5M possible pairs).",
    "pairs_left_out": "Pairs of the largest blocks not compared, over `matching.max_pairs_per_record`.",
    "match_prior": "Share of candidate pairs that match.",
    "link_threshold": "Match probability from which two records link.",
    "estimated_precision": "The model's own estimate of its clusters' precision.",
    "estimated_recall": "The model's own estimate of its clusters' recall.",
    "review_budget": "Share of records the review queue may hold.",
    "queued": "Decisions put in the review queue.",
    "doubtful": "Doubtful decisions found.",
    "decided_automatically": "Doubtful decisions over the budget, left to the model.",
    "event": "merged or split.",
    "related_master_id": "merged: the surviving id; split: the id it split from.",
    "recorded_at": "When the event was recorded (UTC).",
    "organisation_master_id": "The master of the organisation a person belongs to.",
    "nps_latest_score": "Latest survey score.",
    "nps_latest_date": "Date of the latest survey response.",
    "nps_responses": "Survey responses.",
    "record_count": "Source records of the master.",
    "source_count": "Source systems of the master.",
    "source_systems": "Names of those source systems.",
    "version_digest": "Keyed digest of the values: a new digest begins a new version.",
    "valid_from": "Since when this version holds (UTC).",
    "valid_to": "When this version ended (UTC); null: current.",
    "attribute": "Schema attribute.",
    "rule": "Rule id.",
    "kind": "What the value is.",
    "blind_index": "16-byte keyed HMAC of the normalised value.",
    "stage": "standardised, validated, golden or quarantine.",
    "metric": "What is measured (see Quality).",
    "rows_evaluated": "Rows the metric looked at.",
    "rows_failed": "Rows that failed the rule.",
    "pass_rate": "Share of rows that passed (0..1).",
    "value": "The metric's value.",
    "quality_score": "Quality score (0..1).",
    "completeness": "Share of the attributes filled.",
    "rule_pass_rate": "Share of the rules passed.",
    "rules_failed": "Ids of the rules failed.",
    "event_id": "The source's event id, else sha256: and a content hash.",
    "event_hash": "sha256 of the standardised content.",
    "subject_email": "The subject's e-mail address.",
    "subject_phone": "The subject's phone number (E.164).",
    "subject_source_system": "The subject's source system.",
    "subject_source_record_id": "The subject's record id in that system.",
    "purpose": "Consent purpose.",
    "channel": "Consent channel.",
    "action": "What happened.",
    "occurred_at": "When the event happened (UTC).",
    "lawful_basis": "Lawful basis of the processing.",
    "policy_version": "Privacy policy version consented to.",
    "evidence_ref": "Where the evidence of the consent is kept.",
    "resolution": "How the subject was found: source_record, email, phone, ambiguous or unresolved.",
    "candidate_masters": "Masters the identifier found.",
    "granted": "Consent in force.",
    "decided_at": "When the deciding event happened (UTC).",
    "event_channel": "The channel the deciding event named.",
    "audit_id": "Audit row id.",
    "event_time": "When the change happened (UTC).",
    "actor": "pipeline:<run_id>, or a person's organisation e-mail.",
    "detail": "JSON: names, counts and ids, never values.",
    "logged_at": "When the row was appended (UTC).",
    "request_id": "Erasure request id.",
    "origin": "source or cli.",
    "requested_at": "When the erasure was requested (UTC).",
    "processed_at": "When it was processed (UTC).",
    "status": "erased, not_found or ambiguous.",
    "resolved_by": "source_record, master_id, email or phone; null: not found.",
    "masters_erased": "Masters erased.",
    "records_erased": "Source records erased.",
    "rows_removed": "JSON: table → rows removed.",
    "keys_destroyed": "Data keys destroyed.",
    "tombstones_added": "Tombstones added.",
    "file_rebuilt": "The warehouse file was rebuilt so no deleted value stays in its bytes.",
    "notification_id": "request_id|source_system|source_record_id.",
    "erased_at": "When it was erased (UTC).",
    "tombstone": "16-byte keyed digest of a record key, or blind index of an e-mail or phone.",
    "created_at": "When the tombstone was made (UTC).",
    CONSENT_CHANNELS: "The channels the master granted the lens's purpose on.",
    **{f"source_system_{s}": f"Source system of the pair's {side} record." for s, side in _SIDES.items()},
    **{f"source_record_id_{s}": f"Record id of the pair's {side} record." for s, side in _SIDES.items()},
}

_TABLE_DESCRIPTIONS: dict[str, dict[str, str]] = {
    REVIEW: {"records": "system:id list: the cluster made, or both clusters left apart."},
    MATCH_SUMMARY: {"records": "Records matched.", "run_at": "When the run matched (local time, no zone)."},
    ID_LINEAGE: {"master_id": "merged: the retired id; split: the new id of a split-off part.",
                 "records": "Records moved."},
    SCORES: {"run_id": "The run that scored it."},
    QUALITY_REPORT: {"source_system": "Source name; null: all sources.", "attribute": "Null: row or table level.",
                     "rule": "Rule id for metric `rule`."},
    LOOKUP_INDEX: {"kind": "email, phone or national_id."},
    TOMBSTONES: {"kind": "record, email or phone."},
    AUDIT: {"action": "master_created, master_merged, consent_changed, erased, …"},
    CONSENT_HISTORY: {"action": "granted or withdrawn.", "master_id": "The master it resolved to at ingest; null: "
                      "unresolved or ambiguous.", "run_id": "The run that ingested it."},
    CONSENT_QUARANTINE: {"source_row_number": "Row in the consent source."},
    QUARANTINE: {"source_row_number": "Row in the request file."},
}


def raw_table(source: Source) -> str:
    return f"raw_{source.name}"


def raw_columns(source: Source) -> Columns:
    """The source's id and mapped columns as text (any other column it has is kept too, after them), the
    lineage columns, and the parse error."""
    per_row = [t.column for t in (source.record_type, source.party_type) if not isinstance(t, str)]
    own = dict.fromkeys([source.id_column, *source.columns, *per_row], pl.String())
    return {**own, **_KEYS, "source_row_number": pl.Int64(), "ingested_at": UTC,
            "parse_error": pl.String(), "unparsed": pl.String()}


def golden_columns(config: ProjectConfig) -> Columns:
    attributes = {name: DTYPES[a.kind] for name, a in config.customer_schema.attributes.items()}
    return {
        "master_id": pl.String(), "party_type": pl.String(), "record_type": pl.String(), **attributes,
        "organisation_master_id": pl.String(), "nps_latest_score": pl.Float64(), "nps_latest_date": pl.Date(),
        "nps_responses": pl.UInt32(), "record_count": pl.UInt32(), "source_count": pl.UInt32(),
        "source_systems": pl.List(pl.String()), "version_digest": pl.Binary(), "valid_from": UTC,
    }


def table_columns(config: ProjectConfig) -> dict[str, Columns]:
    """Every table asset's columns, in the order the warehouse holds them."""
    schema = config.customer_schema
    tables: dict[str, Columns] = {
        TOMBSTONES: TOMBSTONE_COLUMNS, LOG: LOG_COLUMNS, NOTIFICATIONS: NOTIFICATION_COLUMNS,
        QUARANTINE: ERASURE_QUARANTINE_COLUMNS,
        **{raw_table(s): raw_columns(s) for s in config.sources},
        STANDARDISED: standardised_columns(schema),
        VALIDATED: validation_columns(schema), QUARANTINED: QUARANTINE_COLUMNS,
        RECONCILIATION: RECONCILIATION_COLUMNS,
        PAIRS: {**_PAIR_KEYS, "match_weight": pl.Float64(), "evidence": pl.Float64(), "match_probability": pl.Float64(),
                "blocked": pl.Boolean(), "comparison_levels": _LEVELS, "model_version": pl.Int64()},
        REVIEW: {"review_type": pl.String(), **_PAIR_KEYS, "records": pl.List(pl.String()), "evidence": pl.Float64(),
                 "match_probability": pl.Float64(), "comparison_levels": _LEVELS, "merged": pl.Boolean(),
                 "doubt": pl.Float64(), "records_affected": pl.Int64(), "priority": pl.Float64(),
                 "review_reason": pl.String()},
        CLUSTERS: {**_KEYS, "cluster": pl.Int64(), "link_confidence": pl.Float64(), "record_hash": pl.UInt64()},
        MATCH_SUMMARY: {"run_id": pl.String(), "run_at": pl.Datetime("us"), "model_version": pl.Int64(),
                        "records": pl.Int64(), "pairs_scored": pl.Int64(), "pairs_blocked": pl.Int64(),
                        "pairs_left_out": pl.Int64(), "match_prior": pl.Float64(),
                        "link_threshold": pl.Float64(), "estimated_precision": pl.Float64(),
                        "estimated_recall": pl.Float64(), "review_budget": pl.Float64(), "queued": pl.Int64(),
                        "doubtful": pl.Int64(), "decided_automatically": pl.Int64()},
        XREF: XREF_COLUMNS, ABSENT: XREF_COLUMNS, ID_LINEAGE: ID_LINEAGE_COLUMNS,
        GOLDEN: golden_columns(config), ATTRIBUTE_LINEAGE: ATTRIBUTE_LINEAGE_COLUMNS,
        HISTORY: {**golden_columns(config), "valid_to": UTC, "run_id": pl.String()},
        LOOKUP_INDEX: {c: dtype() if isinstance(dtype, type) else dtype for c, dtype in INDEX_COLUMNS.items()},
        QUALITY_REPORT: REPORT_COLUMNS, SCORES: SCORE_COLUMNS,
        AUDIT: AUDIT_COLUMNS,
    }
    if config.consent:
        tables |= {CONSENT_HISTORY: HISTORY_COLUMNS, CONSENT_CURRENT: CURRENT_COLUMNS,
                   CONSENT_QUARANTINE: CONSENT_QUARANTINE_COLUMNS}
    return tables


def type_name(dtype: pl.DataType | DataTypeClass | str) -> str:
    """A column type as the Catalog and the docs show it: ``Datetime(UTC)``, ``List(String)``."""
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, pl.Datetime):
        return f"Datetime({dtype.time_zone or 'no zone'})"
    if isinstance(dtype, pl.List):
        return f"List({type_name(dtype.inner)})"
    if isinstance(dtype, pl.Struct):
        return "Struct(" + ", ".join(f"{f.name}: {type_name(f.dtype)}" for f in dtype.fields) + ")"
    return str(dtype)


def column_description(table: str, column: str, config: ProjectConfig) -> str:
    attribute = config.customer_schema.attributes.get(column)
    if attribute is not None:
        meaning = attribute.description or f"Schema attribute ({attribute.kind.value})."
        return meaning + (" Personal data: stored encrypted." if attribute.pii else "")
    return (_TABLE_DESCRIPTIONS.get(table, {}).get(column) or DESCRIPTIONS.get(column)
            or _source_column_description(table, column, config))


def _source_column_description(table: str, column: str, config: ProjectConfig) -> str:
    source = next((s for s in config.sources if raw_table(s) == table), None)
    if source is None:
        return ""
    if column == source.id_column:
        return "The record's id in the source, as read."
    if column in source.columns:
        return f"As read; standardised into `{source.columns[column]}`."
    return "As read; gives each row its record_type or party_type."


def column_schema(table: str, columns: Columns, config: ProjectConfig) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(name, type_name(dtype), description=column_description(table, name, config) or None)
        for name, dtype in columns.items()
    ])


#: What a lens does to a column, after the column's meaning.
_TREATED = {"reveal": "", "mask": " Masked: a readable hint, never the value (a date: its year).",
            "tokenise": " Tokenised: 32 hex characters, equal for equal values in this lens, run after run."}


def lens_columns(lens: Lens, config: ProjectConfig) -> Columns:
    """The columns of a lens's files, in their order: its golden columns treated, then the consent channels."""
    golden = golden_columns(config)

    def treated(column: str, treatment: str) -> pl.DataType | str:
        if treatment == "mask" and golden[column] == pl.Date():
            return pl.Int32()  # a masked date is its year
        return pl.String() if treatment in ("mask", "tokenise") else golden[column]

    channels = {CONSENT_CHANNELS: pl.List(pl.String())} if lens.purpose is not None and lens.channel is None else {}
    return {c: treated(c, t) for c, t in treatments(lens).items()} | channels


def lens_schema(lens: Lens, config: ProjectConfig) -> dg.TableSchema:
    how = treatments(lens)
    attributes = config.customer_schema.attributes

    def meaning(column: str) -> str:
        if column in attributes:
            return attributes[column].description or f"Schema attribute ({attributes[column].kind.value})."
        return DESCRIPTIONS[column]

    return dg.TableSchema(columns=[
        dg.TableColumn(c, type_name(dtype), description=meaning(c) + _TREATED[how.get(c, "reveal")])
        for c, dtype in lens_columns(lens, config).items()
    ])


def reports_schema(config: ProjectConfig) -> dg.TableSchema:
    """The columns of the report files, one Parquet file per table, as ``<table>.<column>``."""
    tables = table_columns(config)
    return dg.TableSchema(columns=[
        dg.TableColumn(f"{table}.{c}", type_name(dtype), description=column_description(table, c, config) or None)
        for table in REPORTS for c, dtype in tables[table].items()
    ])


def with_table_metadata(assets: Iterable[dg.AssetsDefinition], config: ProjectConfig) -> list[dg.AssetsDefinition]:
    """``assets`` with ``dagster/table_name`` and ``dagster/column_schema`` on every table asset's spec."""
    tables = table_columns(config)

    def describe(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if name not in tables:
            return spec  # the match model, the lenses and the reports are files, not tables
        return spec.merge_attributes(metadata={
            "dagster/table_name": name, "dagster/column_schema": column_schema(name, tables[name], config)})

    return [asset.map_asset_specs(describe) for asset in assets]


def tables_reference(specs: Iterable[dg.AssetSpec]) -> str:
    """Markdown: per table asset, in group order then by name, its description and its columns."""
    tables = [s for s in specs if "dagster/column_schema" in s.metadata]
    tables.sort(key=lambda s: (GROUPS.index(s.group_name) if s.group_name in GROUPS else len(GROUPS), s.key.to_user_string()))
    out: list[str] = []
    for spec in tables:
        out += [f"### `{spec.key.to_user_string()}`", "", f"Group `{spec.group_name}`. {spec.description or ''}", "",
                "| column | type | description |", "|---|---|---|"]
        out += [f"| `{c.name}` | {_cell(c.type)} | {_cell(c.description or '')} |"
                for c in spec.metadata["dagster/column_schema"].columns]
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")  # a pipe would end the cell, even inside backticks
