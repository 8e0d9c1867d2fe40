"""Typed model of ``cmdm.yaml``: the customer schema, the sources and the project settings.

Every stage reads the same :class:`ProjectConfig`. Loading fails with a :class:`ConfigError`
that names the file, the key path and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from cmdm_pipeline.schema import IDENTIFIER, CustomerSchema, Kind, Model, Severity

CONFIG_ENV_VAR = "CMDM_CONFIG"
DEFAULT_CONFIG_PATH = Path("cmdm.yaml")
#: Overrides ``engine`` in cmdm.yaml (e.g. the same project on a laptop with DuckDB and on a cluster with Spark).
ENGINE_ENV_VAR = "CMDM_ENGINE"

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")



class ConfigError(ValueError):
    """The project configuration is missing or invalid; the message says where and why."""




class RecordType(StrEnum):
    lead = "lead"
    contact = "contact"
    customer = "customer"


class PartyType(StrEnum):
    person = "person"
    organisation = "organisation"


class FromColumn(Model):
    """A per-row value read from a source column and mapped to canonical values."""

    column: str = Field(description="Source column holding the value.")
    values: dict[str, str] = Field(description="Source value -> canonical value.")


SourceKind = Literal["csv", "parquet", "jsonl", "duckdb", "sqlite", "postgresql", "mysql"]
FILE_KINDS = ("csv", "parquet", "jsonl")
DATABASE_KINDS: tuple[SourceKind, ...] = ("duckdb", "sqlite", "postgresql", "mysql")


class Source(Model):
    """One source system: where its records are and how their columns map to the schema."""

    name: str = Field(description="Short lower_snake_case name; becomes `source_system`.")
    kind: SourceKind = Field(description="File format or database type.")
    path: Path | None = Field(default=None, description="File (csv, parquet, jsonl) or database file (duckdb, sqlite).")
    url: str | None = Field(
        default=None, description="postgresql/mysql connection URL; `${VAR}` reads an environment variable."
    )
    table: str | None = Field(default=None, description="Database table to read.")
    query: str | None = Field(default=None, description="Database query to read (instead of `table`).")
    id_column: str = Field(description="Source column holding the record's id in that system.")
    columns: dict[str, str] = Field(description="Source column -> schema attribute.")
    trust_rank: int = Field(ge=1, description="1 is the most trusted source; used by survivorship.")
    record_type: RecordType | FromColumn = Field(description="lead, contact or customer, or read per row.")
    party_type: PartyType | FromColumn = Field(description="person or organisation, or read per row.")
    default_country: str | None = Field(
        default=None, description="ISO alpha-2 country assumed for phones and postcodes when a row has none."
    )
    date_formats: list[str] = Field(
        default_factory=lambda: ["%Y-%m-%d"],
        description="strftime formats tried for dates; a value two formats read differently is ambiguous.",
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: field separator.")
    encoding: str = Field(default="utf-8", description="csv/jsonl: text encoding of the file.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("must be lower_snake_case (letters, digits, underscores)")
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown text encoding {value!r}") from exc
        return value

    @field_validator("default_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        import pycountry

        if value is not None and pycountry.countries.get(alpha_2=value.upper()) is None:
            raise ValueError(f"{value!r} is not an ISO 3166 alpha-2 country code")
        return value.upper() if value else value

    @model_validator(mode="after")
    def _location(self) -> Source:
        needs_path = self.kind in (*FILE_KINDS, "duckdb", "sqlite")
        if needs_path and self.path is None:
            raise ValueError(f"a {self.kind} source needs `path`")
        if self.kind in ("postgresql", "mysql") and self.url is None:
            raise ValueError(f"a {self.kind} source needs `url`")
        if self.kind in DATABASE_KINDS and (self.table is None) == (self.query is None):
            raise ValueError(f"a {self.kind} source needs exactly one of `table` or `query`")
        if self.kind in FILE_KINDS and (self.table or self.query):
            raise ValueError(f"a {self.kind} source reads a file: `table`/`query` do not apply")
        return self

    def resolved_url(self) -> str:
        """The connection URL with `${VAR}` references replaced; a missing variable is an error."""
        assert self.url is not None

        def substitute(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                raise ConfigError(
                    f"source {self.name!r}: environment variable {match.group(1)} used in `url` is not set"
                )
            return value

        return _ENV_REFERENCE.sub(substitute, self.url)


class InputChecks(Model):
    """Checks on raw values that every source gets, before the schema's own rules."""

    max_field_length: int = Field(default=1000, ge=1, description="Longer source values are oversized.")
    oversized: Severity = Field(default=Severity.reject, description="Severity of an oversized value.")
    control_characters: Severity = Field(
        default=Severity.reject, description="Severity of NUL or other control characters in a value."
    )
    formula_like: Severity = Field(
        default=Severity.reject, description="Severity of a value that a spreadsheet would run as a formula."
    )
    format_characters: Severity = Field(
        default=Severity.warn, description="Severity of invisible format characters (bidi, zero-width), which are removed."
    )


#: Matching settings of earlier versions, and why they went.
_REMOVED_MATCHING = {
    "link_evidence": "the link threshold now comes from the model and the data (see docs, \"Matching\")",
    "review_evidence": "the review queue is now the doubtful decisions within `matching.review_budget`",
    "max_cluster_size": "clusters are now resolved by the weight of all their record pairs",
    "min_cluster_density": "clusters are now resolved by the weight of all their record pairs",
    "prior_recall": "the prior is now estimated from the scored pairs",
}


EngineName = Literal["duckdb", "spark"]
ENGINE_NAMES: tuple[EngineName, ...] = ("duckdb", "spark")
#: A Spark master URL: local (local, local[N], local[*], local[N,F]) or a cluster manager's.
_SPARK_MASTER = re.compile(r"^(local(\[(\d+|\*)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+|mesos://\S+)$")
#: Settings that make Spark fetch packages when it starts: nothing may download at run time.
_DOWNLOADING_SPARK_CONF = ("spark.jars.packages", "spark.jars.repositories", "spark.jars.ivy", "spark.jars.ivySettings")


class SparkConfig(Model):
    """The Spark session of ``engine: spark``: built once per process, with Splink's similarity functions."""

    master: str = Field(
        default="local[2]",
        description="Spark master URL: local[N] (N cores of this machine), local[*], spark://host:port, yarn or k8s://...",
    )
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Spark configuration pairs (spark.driver.memory: 4g, ...), set when the session is built. "
        "Settings that download packages (spark.jars.packages, spark.jars.repositories) are refused.",
    )
    warehouse: str | None = Field(
        default=None,
        description="Spark's warehouse location (spark.sql.warehouse.dir): a folder or any Hadoop-compatible URI; "
        "default: <warehouse folder>/spark.",
    )
    checkpoint_dir: str | None = Field(
        default=None,
        description="Where Splink writes its intermediate tables (a Hadoop-compatible URI every executor reaches); "
        "default: a private temporary folder, which only a local master can use.",
    )

    @field_validator("master")
    @classmethod
    def _master(cls, value: str) -> str:
        if not _SPARK_MASTER.match(value.strip()):
            raise ValueError(f"{value!r} is not a Spark master URL (local[2], local[*], spark://host:port, yarn, k8s://...)")
        return value.strip()

    @field_validator("conf")
    @classmethod
    def _conf(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not key.startswith("spark."):
                raise ValueError(f"{key!r}: Spark configuration keys start with `spark.`")
            if key in _DOWNLOADING_SPARK_CONF:
                raise ValueError(f"{key!r} would download packages when Spark starts; nothing may download at run time "
                                 "(put jars on the machine and name them in spark.jars)")
        return value

    @model_validator(mode="after")
    def _checkpoints(self) -> SparkConfig:
        if not self.is_local and self.checkpoint_dir is None:
            raise ValueError(f"master {self.master!r} runs executors on other machines: set `checkpoint_dir` to a "
                             "location they all reach (hdfs://, s3a://, ...)")
        return self

    @property
    def is_local(self) -> bool:
        """The driver and executors are this process's JVM: its temporary folder serves them all."""
        return self.master.startswith("local")


class EngineConfig(Model):
    """The engine the match model trains and scores on, as cmdm.yaml chose it (``engine`` and ``spark``)."""

    name: EngineName = Field(default="duckdb", description="duckdb or spark.")
    spark: SparkConfig = Field(default_factory=SparkConfig, description="The Spark session, when `name` is spark.")


class MatchingConfig(Model):
    """How records are matched and clustered. Thresholds and the prior come from the model and the data."""

    review_budget: float = Field(
        default=0.01, ge=0, le=1,
        description="Records the review queue may show per run, as a share of all records (0.01: 1 in 100). "
        "The doubtful decisions that change the most records are queued; the model decides the rest.",
    )
    deterministic_rules: list[list[str]] = Field(
        default_factory=list,
        description="Attribute sets that, all equal, link two records whatever the model says, like a steward's "
        "`same` (e.g. [[national_id]]); a value shared by more than 25 records links nothing.",
    )
    blocking_rules: list[str] | None = Field(
        default=None, description="SQL blocking rules (l./r. columns); default: generated from the schema."
    )
    max_pairs_per_record: int | None = Field(
        # The generator's 1M records give 31.5 per record; scoring ~30M pairs takes a few minutes on 2 cores.
        default=50, gt=0,
        description="Record pairs the blocking rules may give together, per record (never fewer than 5M in all): "
        "beyond it the largest blocks are not compared. null: no bound.",
    )
    comparisons: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Splink comparisons in Splink's settings format (`comparison_levels`, each with "
        "`sql_condition`, `label_for_charts`, optional `is_null_level`, `tf_adjustment_column`), keyed by "
        "output column name; each replaces the generated comparison of that name, or adds one.",
    )
    memory_limit: str = Field(
        # 2GB, not 3GB: at 1M records training and scoring took as long (72 s, 82-85 s) and peaked 0.35-0.7 GB lower.
        # 1GB, not 2GB: the matching steps run beside frames of every record, and what Splink holds past 1GB
        # spills. At 1M records (with the warehouse's own memory changes) match_records peaked 3.58 GB, match_model
        # 2.95 GB, and the accuracy was the same to four decimals.
        default="1GB", description="DuckDB memory limit of Splink's scratch database; beyond it, pairs spill to disk."
    )
    u_max_pairs: float = Field(default=2e6, gt=0, description="Record pairs sampled to estimate u.")
    em_max_pairs: float | None = Field(
        # At 1M records 5M pairs gave the same match weights (within 0.15 bits) and took training from
        # 105-107 s to 78-88 s. 2M was faster still, but fitted a rare level's m to ~0.
        default=5e6, gt=0, description="Blocked pairs sampled per EM training rule (Splink's max_pairs); null: every pair."
    )
    seed: int = Field(default=42, description="Seed of the u sampling, so training is repeatable.")
    retrain: bool = Field(default=False, description="Train a new model on the next run even if one exists.")
    full_rebuild: bool = Field(
        default=False, description="Score every record again instead of only new or changed ones (also: run tag cmdm/full_rebuild=true)."
    )
    decisions: Path | None = Field(
        default=Path("data/decisions/match_decisions.csv"),
        description="Steward decisions (CSV): source records judged `same` or `different`.",
    )
    # Not a key of `matching:`: the project's top-level `engine` and `spark`, copied here when the config is
    # built, so that every function given the matching settings runs on the chosen engine.
    engine: EngineConfig = Field(default_factory=EngineConfig, exclude=True, description="Set from `engine` and `spark`.")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            gone = [f"matching.{key} was removed: {why}" for key, why in _REMOVED_MATCHING.items() if key in data]
            if gone:
                raise ValueError("; ".join(gone))
        return data

    @model_validator(mode="after")
    def _comparisons(self) -> MatchingConfig:
        for name, comparison in self.comparisons.items():
            levels = comparison.get("comparison_levels")
            if not isinstance(levels, list) or not levels or not all(
                isinstance(level, dict) and "sql_condition" in level for level in levels
            ):
                raise ValueError(f"comparisons.{name}: needs `comparison_levels`, a list of levels with `sql_condition`")
        return self


SurvivorshipRule = Literal["trust_rank", "most_recent", "most_frequent", "most_complete", "customer_provided"]


class SurvivorshipConfig(Model):
    """Which record's value each golden-record attribute takes."""

    default: SurvivorshipRule = Field(default="trust_rank", description="Rule for attributes not listed.")
    attributes: dict[str, SurvivorshipRule] = Field(default_factory=dict, description="Rule per attribute.")
    recency_attribute: str | None = Field(
        default=None, description="Date attribute that says how recent a record is (else its ingestion time)."
    )
    customer_provided_sources: list[str] = Field(
        default_factory=list, description="Sources the customer fills in themselves (self-service)."
    )
    survey_score_attribute: str | None = Field(
        default=None, description="Number attribute holding a survey (NPS) score; golden records get the latest."
    )
    survey_date_attribute: str | None = Field(default=None, description="Date attribute saying when the score was given.")


class WarehouseConfig(Model):
    path: Path = Field(default=Path("data/warehouse/cmdm.duckdb"), description="The warehouse DuckDB file.")
    memory_limit: str = Field(
        # 512MB, not 2GB: DuckDB keeps its buffers up to the limit while the frames it returned or was handed are
        # in memory too (reads now decrypt while the connection is open); its own statements spill beyond it.
        default="512MB", description="DuckDB memory of the warehouse connections (DuckDB's own default is 80% of RAM); "
        "large writes spill to the file instead."
    )


class QualityConfig(Model):
    """Limits of the blocking quality checks: a run that breaks one stops before it publishes."""

    max_quarantine_rate: float = Field(
        default=0.5, ge=0, le=1,
        description="Largest share of a source's rows that may be quarantined in one run; above it the run "
        "stops before matching (a source whose format changed should not empty the master).",
    )
    quarantine_rate_by_source: dict[str, float] = Field(
        default_factory=dict, description="Limits per source that replace `max_quarantine_rate`, e.g. {survey: 0.2}."
    )
    max_shrink: float = Field(
        default=0.3, ge=0, le=1,
        description="Largest share by which a source's rows read may fall since the last good run (the last "
        "that assigned master ids); above it, or at 0 rows, the run stops before matching, naming the source "
        "and both counts (`cmdm run --accept-shrink SOURCE`, or run tag cmdm/accept_shrink=SOURCE, accepts it).",
    )
    max_match_rate_drift: float = Field(
        default=0.1, ge=0, le=1,
        description="Largest change of the match rate (share of records linked to another record) since the "
        "previous run; above it the run stops before mastering (run tag cmdm/accept_drift=true accepts it).",
    )
    max_cluster_size_drift: float = Field(
        default=0.1, ge=0, le=1,
        description="Largest change of the cluster-size distribution since the previous run, as total variation "
        "distance (0 same, 1 disjoint); above it the run stops before mastering.",
    )

    @field_validator("quarantine_rate_by_source")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        wrong = sorted(name for name, rate in value.items() if not 0 <= rate <= 1)
        if wrong:
            raise ValueError(f"rates must be between 0 and 1; not so for: {', '.join(wrong)}")
        return value


class ProtectionConfig(Model):
    """Where the encryption keys live (docs/concepts/encryption.md). Key material never goes in cmdm.yaml."""

    key_file: Path | None = Field(
        default=None,
        description="JSON file of key-encryption keys, mode 0600, outside the repository; used when CMDM_KEK "
        "is not set. Default: <warehouse folder>/keys/dev.kek.json, a development key created by "
        "`cmdm keys init` or the first run. Set explicitly, a missing file is an error, never created.",
    )
    keystore: Path | None = Field(
        default=None, description="DuckDB file of the wrapped data keys. Default: <warehouse folder>/keys/keystore.duckdb "
        "with the development key file; with CMDM_KEK or protection.key_file, <warehouse folder>-keys/keystore.duckdb, "
        "outside the warehouse folder, so a copy of that folder holds no keys."
    )
    encrypt: bool = Field(
        default=True,
        description="Store every `pii: true` attribute encrypted in every table the pipeline writes. Turn off "
        "only for a control run (the canary test does) or to compare speed: the warehouse then holds plaintext.",
    )


# Five cron fields of the characters cron allows; Dagster checks ranges when it builds the schedule.
_CRON = re.compile(r"^\s*[0-9A-Za-z*/,?#-]+(\s+[0-9A-Za-z*/,?#-]+){4}\s*$")


class NightlySchedule(Model):
    """The `nightly_consolidation` schedule of `cmdm_job` (needs the Dagster daemon)."""

    cron: str = Field(default="0 2 * * *", description="Cron expression (5 fields) of when the job runs.")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in, e.g. Europe/Berlin.")
    running: bool = Field(
        default=False, description="Start as RUNNING when the daemon first sees it; else turn it on in the UI."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not _CRON.match(value):
            raise ValueError(f"{value!r} is not a 5-field cron expression such as '0 2 * * *'")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone such as 'UTC' or 'Europe/Berlin'") from exc
        return value


class LandingSensor(Model):
    """The `landing_files` sensor: start `cmdm_job` when files in a landing folder are new or changed."""

    folder: Path | None = Field(default=None, description="Folder to watch; unset: the sensor skips, saying so.")
    pattern: str = Field(default="*", description="Glob on file names in the folder, e.g. '*.csv'.")
    settle_seconds: int = Field(
        default=30, ge=0, description="Wait until no file changed for this long, so a batch still being copied is one run."
    )
    interval_seconds: int = Field(default=60, ge=5, description="Seconds between two looks at the folder.")
    running: bool = Field(
        default=False, description="Start as RUNNING when the daemon first sees it; else turn it on in the UI."
    )


class ExtractRetry(Model):
    """Retries of the extract step of flaky sources (a database restarting, a file locked by a writer)."""

    max_retries: int = Field(default=2, ge=0, description="Attempts after the first one; 0 turns retries off.")
    delay_seconds: float = Field(default=5.0, ge=0, description="Wait before the first retry.")
    backoff: Literal["constant", "linear", "exponential"] = Field(
        default="exponential", description="How the wait grows between retries."
    )
    source_kinds: list[SourceKind] = Field(
        default_factory=lambda: list(DATABASE_KINDS),
        description="Source kinds that are retried; files are not by default (a missing file stays missing).",
    )


class ScheduleConfig(Model):
    """When the pipeline runs on its own, and how its extract steps retry."""

    nightly: NightlySchedule = Field(default_factory=NightlySchedule, description="The nightly schedule.")
    landing: LandingSensor = Field(default_factory=LandingSensor, description="The landing-folder sensor.")
    extract_retry: ExtractRetry = Field(default_factory=ExtractRetry, description="Retry policy of extracts.")


ConsentField = Literal[
    "event_id", "email", "phone", "source_system", "source_record_id", "purpose", "channel", "action",
    "occurred_at", "lawful_basis", "policy_version", "evidence_ref",
]
CONSENT_SUBJECT_FIELDS = ("email", "phone", "source_record_id")
#: The lawful bases of GDPR Article 6(1).
GDPR_LAWFUL_BASES = (
    "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests",
)


class MappedSource(Model):
    """A source that is not customers (consent events, erasure requests): where it is, read by the customer
    readers, and how its columns map to the fields of what it holds."""

    kind: SourceKind = Field(description="File format or database type, as for customer sources.")
    path: Path | None = Field(default=None, description="File (csv, parquet, jsonl) or database file (duckdb, sqlite).")
    url: str | None = Field(default=None, description="postgresql/mysql connection URL; `${VAR}` reads an environment variable.")
    table: str | None = Field(default=None, description="Database table to read.")
    query: str | None = Field(default=None, description="Database query to read (instead of `table`).")
    columns: dict[str, str]
    timestamp_formats: list[str] = Field(
        min_length=1,
        default_factory=lambda: ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z",
                                 "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"],
        description="strftime formats tried in order for timestamps; a trailing Z means UTC, a time without "
        "offset is read as UTC.",
    )
    default_country: str | None = Field(
        default=None, description="ISO alpha-2 country used to read phone numbers written without a + country code."
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: field separator.")
    encoding: str = Field(default="utf-8", description="csv/jsonl: text encoding of the file.")

    #: The name of this source in messages and in ``Source.name``, and the field used as its id column.
    source_name: ClassVar[str]
    id_field: ClassVar[str]

    def _check_mapping(
        self, required: Sequence[str], subjects: Sequence[str], subject_help: str, required_why: str = ""
    ) -> None:
        mapped = list(self.columns.values())
        twice = sorted({f for f in mapped if mapped.count(f) > 1})
        if twice:
            raise ValueError(f"several columns map to: {', '.join(twice)}")
        missing = [f for f in required if f not in mapped]
        if missing:
            raise ValueError(f"columns must map {', '.join(missing)}{required_why}")
        if not any(f in mapped for f in subjects):
            raise ValueError(f"columns must map a subject: {subject_help}")
        if ("source_system" in mapped) != ("source_record_id" in mapped):
            raise ValueError("source_system and source_record_id identify a record together: map both or neither")
        self.as_source()  # the location rules and value checks of a customer source apply as they are

    def as_source(self) -> Source:
        """This location as a customer :class:`Source`, so the extract readers (and their errors) are reused."""
        columns = {column: column for column in self.columns}
        id_column = next(c for c, f in self.columns.items() if f == self.id_field)
        return Source(
            name=self.source_name, kind=self.kind, path=self.path, url=self.url, table=self.table, query=self.query,
            id_column=id_column, columns=columns, trust_rank=1, record_type=RecordType.contact,
            party_type=PartyType.person, default_country=self.default_country, delimiter=self.delimiter,
            encoding=self.encoding,
        )


def _action_spellings() -> dict[str, Literal["granted", "withdrawn"]]:
    return {"granted": "granted", "grant": "granted", "opt-in": "granted",
            "withdrawn": "withdrawn", "withdraw": "withdrawn", "opt-out": "withdrawn"}


class ConsentSource(MappedSource):
    """Where consent events are read from (any source kind), and how their columns map to consent fields."""

    source_name: ClassVar[str] = "consent_events"
    id_field: ClassVar[str] = "occurred_at"
    columns: dict[str, ConsentField] = Field(  # type: ignore[assignment]
        description="Source column -> consent field. Needs purpose, channel, action, occurred_at and a subject: "
        "email, phone, or source_system + source_record_id."
    )
    action_values: dict[str, Literal["granted", "withdrawn"]] = Field(
        default_factory=_action_spellings,
        description="Source spelling of an action (case-insensitive) -> granted | withdrawn; others are quarantined.",
    )

    @model_validator(mode="after")
    def _fields(self) -> ConsentSource:
        self._check_mapping(("purpose", "channel", "action", "occurred_at"), CONSENT_SUBJECT_FIELDS,
                            "email, phone, or source_system + source_record_id")
        return self


class ConsentConfig(Model):
    """Consent per purpose and channel: the events source and the vocabulary events must use."""

    source: ConsentSource = Field(description="The consent-events source.")
    purposes: list[str] = Field(
        default_factory=lambda: ["marketing", "profiling", "sharing"],
        description="Purposes consent is asked for; events naming another purpose are quarantined.",
    )
    channels: list[str] = Field(
        default_factory=lambda: ["email", "sms", "phone", "post"],
        description="Channels consent is given for; events naming another channel are quarantined.",
    )
    all_channels: str | None = Field(
        default="any", description="Channel value meaning every channel of `channels` (null: no such value)."
    )
    lawful_bases: list[str] = Field(
        default_factory=lambda: list(GDPR_LAWFUL_BASES),
        description="Accepted lawful bases (default: GDPR Art. 6); another value is quarantined, none is allowed.",
    )

    @model_validator(mode="after")
    def _vocabulary(self) -> ConsentConfig:
        for name in ("purposes", "channels", "lawful_bases"):
            values: list[str] = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must not be empty")
            wrong = [v for v in values if not IDENTIFIER.match(v)]
            if wrong:
                raise ValueError(f"{name} must be lower_snake_case; not so: {wrong}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeats a value")
        if self.all_channels is not None and self.all_channels in self.channels:
            raise ValueError(f"all_channels {self.all_channels!r} must not also be one of `channels`")
        return self


LensTreatment = Literal["reveal", "mask", "tokenise"]
LensFormat = Literal["duckdb", "parquet", "csv"]
#: Columns of golden_customers a lens may show besides the schema's attributes (none of them personal data).
LENS_GOLDEN_COLUMNS = (
    "master_id", "party_type", "record_type", "organisation_master_id", "nps_latest_score", "nps_latest_date",
    "nps_responses", "record_count", "source_count", "source_systems",
)
#: Golden columns a row filter may name besides non-personal attributes, and the values they take.
LENS_FILTER_VALUES: dict[str, tuple[str, ...]] = {
    "party_type": tuple(PartyType), "record_type": tuple(RecordType),
}


class Lens(Model):
    """A purpose lens: what one business area sees of the golden records (docs/concepts/lenses.md)."""

    name: str = Field(description="lower_snake_case; names the files, the PostgreSQL schema and role.")
    description: str = Field(min_length=1, description="Who uses this lens, and for what.")
    purpose: str | None = Field(
        description="Consent purpose (one of consent.purposes) a master must have granted to be shown; null: the "
        "lens needs no consent (e.g. finance under contract). Required, so that null is a decision."
    )
    channel: str | None = Field(
        default=None, description="Consent channel the grant must cover (one of consent.channels); null: any channel, and "
        "the lens gets a column `consent_channels` listing the channels granted."
    )
    columns: dict[str, LensTreatment] = Field(
        min_length=1,
        description="Golden-record column -> reveal | mask | tokenise. `master_id` is always shown (reveal unless "
        "listed with another treatment).",
    )
    where: dict[str, list[str | bool]] = Field(
        default_factory=dict,
        description="Row filters as data: column -> allowed values, all must hold, e.g. {country: [DE, AT], "
        "party_type: [person]}. Only party_type, record_type and non-personal attributes that are not numbers or dates.",
    )
    formats: list[LensFormat] | None = Field(
        default=None, description="Files to publish: duckdb, parquet, csv. Default: [duckdb, parquet], or [parquet] "
        "(encrypted with the lens's key) for a lens that reveals personal data, which allows only parquet."
    )

    @field_validator("name")
    @classmethod
    def _lens_name(cls, value: str) -> str:
        if not IDENTIFIER.match(value) or len(value) > 40:
            raise ValueError("must be lower_snake_case (letters, digits, underscores), at most 40 characters")
        return value

    @model_validator(mode="after")
    def _lens_shape(self) -> Lens:
        if self.channel is not None and self.purpose is None:
            raise ValueError("`channel` needs a `purpose`: consent is granted per purpose and channel")
        if self.formats is not None and (not self.formats or len(set(self.formats)) != len(self.formats)):
            raise ValueError("formats must list each of duckdb, parquet, csv at most once, and at least one")
        for column, values in self.where.items():
            if not values:
                raise ValueError(f"where.{column}: list at least one allowed value")
        return self


class LensesTarget(Model):
    """A PostgreSQL database each lens is also published into: one schema and one login role per lens."""

    url: str = Field(description="postgresql:// URL of a user that may create schemas and roles; `${VAR}` reads "
                     "an environment variable. Never a password in cmdm.yaml.")
    schema_prefix: str = Field(default="lens_", description="Each lens's schema is <schema_prefix><lens>.")
    role_prefix: str = Field(default="cmdm_lens_", description="Each lens's role is <role_prefix><lens> (LOGIN; set its "
                             "password or other authentication once, as a database administrator).")

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("schema_prefix", "role_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9_]{0,20}$", value):
            raise ValueError("must be lower_snake_case, at most 21 characters")
        return value

    def resolved_url(self) -> str:
        """The URL with `${VAR}` references replaced; a missing variable is an error (naming it, not its value)."""

        def substitute(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                raise ConfigError(f"lenses_target: environment variable {match.group(1)} used in `url` is not set")
            return value

        return _ENV_REFERENCE.sub(substitute, self.url)


ErasureField = Literal["request_id", "email", "phone", "master_id", "source_system", "source_record_id", "requested_at"]
ERASURE_SUBJECT_FIELDS = ("email", "phone", "master_id", "source_record_id")


class ErasureSource(MappedSource):
    """Where erasure requests are read from (any source kind), and how their columns map to request fields."""

    source_name: ClassVar[str] = "erasure_requests"
    id_field: ClassVar[str] = "request_id"
    columns: dict[str, ErasureField] = Field(  # type: ignore[assignment]
        description="Source column -> request field. Needs request_id and a subject: email, phone, master_id, "
        "or source_system + source_record_id; requested_at is optional."
    )
    timestamp_formats: list[str] = Field(
        min_length=1,
        default_factory=lambda: ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z",
                                 "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"],
        description="strftime formats tried in order for requested_at; a trailing Z means UTC, no offset is UTC.",
    )

    @model_validator(mode="after")
    def _fields(self) -> ErasureSource:
        self._check_mapping(("request_id",), ERASURE_SUBJECT_FIELDS,
                            "email, phone, master_id, or source_system + source_record_id",
                            " (requests are processed once each, by id)")
        return self


class ErasureConfig(Model):
    """The right to erasure: where requests come from, and what stops erased records coming back (docs/concepts/erasure.md)."""

    source: ErasureSource | None = Field(
        default=None, description="An erasure-requests source read every run; null: only requests recorded by `cmdm erase`."
    )
    requests_file: Path | None = Field(
        default=None, description="CSV file `cmdm erase` appends requests to (blind indexes and ids, never e-mails or phones). "
        "Default: <warehouse folder>/erasure/requests.csv."
    )
    tombstone_contacts: bool = Field(
        default=True, description="Besides the erased source records, tombstone the subject's own e-mails and phones (blind "
        "indexes; only those no other customer's record holds), so a source that re-keys them cannot bring them back.",
    )


WebRole = Literal["steward", "viewer", "api"]


class WebUser(Model):
    """A person (or a system) who may use `cmdm serve`; secrets are stored as hashes only."""

    name: str = Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$", description="Login name; audited as `web:<name>`.")
    role: WebRole = Field(description="steward: works the review queue and masters; viewer: reads them; api: the "
                          "HTTP API by bearer token.")
    password_hash: str | None = Field(
        default=None, description="argon2 hash of the password (`cmdm serve --hash-password` prints one); people log in with it.")
    token_hash: str | None = Field(
        default=None, description="SHA-256 (hex) of an API client's bearer token (`cmdm serve --new-token` prints both).")

    @model_validator(mode="after")
    def _secret(self) -> WebUser:
        if self.password_hash is None and self.token_hash is None:
            raise ValueError(f"web.users({self.name}): needs password_hash (a person) or token_hash (an API client)")
        return self


class WebConfig(Model):
    """The steward workbench and resolve API (`cmdm serve`, docs/operations/workbench.md)."""

    users: list[WebUser] = Field(default_factory=list, description="Who may log in or call the API, with their role.")
    role_lenses: dict[WebRole, str] = Field(
        default_factory=dict,
        description="Role -> the lens whose column treatments (reveal, mask, tokenise) that role sees personal values "
        "through; a role without a lens sees no personal value.")
    trusted_user_header: str | None = Field(
        default=None, description="Header a trusted reverse proxy sets to the logged-in user's name (e.g. X-Forwarded-User); "
        "null: users log in with their password.")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Where `cmdm serve` is reached; the Dagster UI links "
                          "Data Docs and match charts there.")
    session_minutes: int = Field(default=480, ge=1, description="A login expires after this many minutes.")
    decision_store: Path | None = Field(
        default=None, description="SQLite file the workbench keeps decisions and reveals in (the next run reads it). "
        "Default: <warehouse folder>/steward/decisions.sqlite.")


class ProjectConfig(Model):
    """The whole of ``cmdm.yaml``."""

    engine: EngineName = Field(
        default="duckdb",
        description="What the match model trains and scores on: duckdb (one machine) or spark (Splink's Spark "
        f"backend, see `spark`); the environment variable {ENGINE_ENV_VAR} overrides it.",
    )
    spark: SparkConfig = Field(default_factory=SparkConfig, description="The Spark session of `engine: spark`.")
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig, description="Where outputs land.")
    input_checks: InputChecks = Field(default_factory=InputChecks, description="Checks on raw values.")
    customer_schema: CustomerSchema = Field(alias="schema", description="The customer schema.")
    sources: list[Source] = Field(min_length=1, description="The source systems to read.")
    retired_sources: list[str] = Field(
        default_factory=list,
        description="Names of sources removed from `sources` on purpose: the next run masters without them "
        "instead of stopping (a source that disappears unlisted stops the run, see quality.max_shrink).",
    )
    matching: MatchingConfig = Field(default_factory=MatchingConfig, description="Matching and clustering.")
    survivorship: SurvivorshipConfig = Field(
        default_factory=SurvivorshipConfig, description="How golden records pick their values."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="Nightly schedule, landing-folder sensor, extract retries."
    )
    quality: QualityConfig = Field(
        default_factory=QualityConfig, description="Limits of the blocking quality checks."
    )
    consent: ConsentConfig | None = Field(
        default=None, description="Consent events and their vocabulary; without it no consent tables are built."
    )
    protection: ProtectionConfig = Field(
        default_factory=ProtectionConfig, description="Key file and key store of the encryption at rest."
    )
    erasure: ErasureConfig = Field(
        default_factory=ErasureConfig, description="Erasure requests and tombstones (docs/concepts/erasure.md)."
    )
    lenses: list[Lens] = Field(
        default_factory=list, description="Purpose lenses published each run for BI tools (docs/concepts/lenses.md)."
    )
    lenses_target: LensesTarget | None = Field(
        default=None, description="PostgreSQL database each lens is also published into, one schema and role per lens."
    )
    web: WebConfig = Field(default_factory=WebConfig, description="The steward workbench and resolve API (`cmdm serve`).")
    base_dir: Path = Field(default=Path("."), exclude=True, description="Folder relative paths are read from.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _engine_is_top_level(cls, data: Any) -> Any:
        matching = data.get("matching") if isinstance(data, dict) else None
        if isinstance(matching, dict) and "engine" in matching:
            raise ValueError("matching.engine: the engine is chosen by the top-level `engine` (and `spark`) keys")
        return data

    @model_validator(mode="after")
    def _engine_for_matching(self) -> ProjectConfig:
        spark = self.spark
        if spark.warehouse is None:
            spark = spark.model_copy(update={"warehouse": str(self.warehouse_path.parent / "spark")})
        elif "://" not in spark.warehouse:  # a local folder, relative to the config's
            spark = spark.model_copy(update={"warehouse": str(self.resolve(Path(spark.warehouse)))})
        engine = EngineConfig(name=self.engine, spark=spark)
        # The model is frozen; this runs once, while it is being built, before anyone reads it.
        object.__setattr__(self, "matching", self.matching.model_copy(update={"engine": engine}))
        return self

    @model_validator(mode="after")
    def _web_checks(self) -> ProjectConfig:
        names = [user.name for user in self.web.users]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"web.users: names must be unique; repeated: {', '.join(twice)}")
        lenses = {lens.name for lens in self.lenses}
        for role, lens in self.web.role_lenses.items():
            if lens not in lenses:
                raise ValueError(f"web.role_lenses.{role}: no lens named {lens!r} (lenses: {', '.join(sorted(lenses))})")
        return self

    @model_validator(mode="after")
    def _lens_checks(self) -> ProjectConfig:
        """Lenses against the schema and the consent vocabulary; messages name the lens's key path."""
        from cmdm_pipeline.schema import Kind

        names = [lens.name for lens in self.lenses]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"lenses: names must be unique; repeated: {', '.join(twice)}")
        attributes = self.customer_schema.attributes
        unmaskable = (Kind.number, Kind.boolean)
        for i, lens in enumerate(self.lenses):
            at = f"lenses[{i}]({lens.name})"
            for column, treatment in lens.columns.items():
                if column not in attributes and column not in LENS_GOLDEN_COLUMNS:
                    raise ValueError(f"{at}.columns.{column}: unknown attribute (schema attributes, or one of "
                                     f"{', '.join(LENS_GOLDEN_COLUMNS)})")
                numeric = column in attributes and attributes[column].kind in unmaskable or column in (
                    "nps_latest_score", "nps_responses", "record_count", "source_count", "source_systems")
                if treatment == "mask" and numeric:
                    raise ValueError(f"{at}.columns.{column}: cannot be masked (a number, flag or list); "
                                     "reveal it, tokenise it or leave it out")
            if lens.purpose is not None:
                if self.consent is None:
                    raise ValueError(f"{at}.purpose: {lens.purpose!r} needs a `consent:` section (or purpose: null)")
                if lens.purpose not in self.consent.purposes:
                    raise ValueError(f"{at}.purpose: {lens.purpose!r} is not one of consent.purposes "
                                     f"({', '.join(self.consent.purposes)})")
                if lens.channel is not None and lens.channel not in self.consent.channels:
                    raise ValueError(f"{at}.channel: {lens.channel!r} is not one of consent.channels "
                                     f"({', '.join(self.consent.channels)})")
            for column, values in lens.where.items():
                if column in LENS_FILTER_VALUES:
                    wrong = [v for v in values if v not in LENS_FILTER_VALUES[column]]
                    if wrong:
                        raise ValueError(f"{at}.where.{column}: {wrong} not among {list(LENS_FILTER_VALUES[column])}")
                elif column not in attributes:
                    raise ValueError(f"{at}.where.{column}: unknown attribute")
                elif attributes[column].pii:
                    raise ValueError(f"{at}.where.{column}: filters on personal data would put personal data in "
                                     "cmdm.yaml; filter on a non-personal attribute")
                elif attributes[column].kind in (Kind.number, Kind.date):
                    raise ValueError(f"{at}.where.{column}: numbers and dates cannot be filtered by a list of values")
                elif attributes[column].kind == Kind.country and not all(
                        isinstance(v, str) and re.match(r"^[A-Z]{2}$", v) for v in values):
                    raise ValueError(f"{at}.where.{column}: countries are ISO 3166-1 alpha-2 codes such as DE")
            reveals = [c for c, t in lens.columns.items() if t == "reveal" and c in attributes and attributes[c].pii]
            plain = sorted(set(lens.formats or ()) - {"parquet"})
            if reveals and plain:
                raise ValueError(f"{at}.formats: {', '.join(plain)} cannot be encrypted, and the lens reveals personal "
                                 f"data ({', '.join(reveals)}): publish it as parquet (encrypted), or mask/tokenise")
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> ProjectConfig:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        attributes = self.customer_schema.attributes
        for source in self.sources:
            for column, attribute in source.columns.items():
                if attribute not in attributes:
                    raise ValueError(
                        f"source {source.name!r} maps column {column!r} to unknown attribute {attribute!r}"
                    )
            mapped = list(source.columns.values())
            twice = sorted({a for a in mapped if mapped.count(a) > 1})
            if twice:
                raise ValueError(f"source {source.name!r} maps several columns to: {', '.join(twice)}")
        rules = self.survivorship
        named = [rules.recency_attribute, rules.survey_score_attribute, rules.survey_date_attribute]
        for attribute in [*rules.attributes, *[a for a in named if a]]:
            if attribute not in attributes:
                raise ValueError(f"survivorship names unknown attribute {attribute!r}")
        unknown = sorted(set(rules.customer_provided_sources) - set(names))
        if unknown:
            raise ValueError(f"survivorship.customer_provided_sources names unknown source(s) {unknown}")
        both = sorted(set(self.retired_sources) & set(names))
        if both:
            raise ValueError(f"retired_sources names source(s) still in `sources`: {', '.join(both)}")
        unknown = sorted(set(self.quality.quarantine_rate_by_source) - set(names))
        if unknown:
            raise ValueError(f"quality.quarantine_rate_by_source names unknown source(s) {unknown}")
        _check_matching_sql(self.matching, self.customer_schema)
        for i, rule in enumerate(self.matching.deterministic_rules):
            for attribute in rule:
                at = f"matching.deterministic_rules[{i}]"
                if attribute not in attributes:
                    raise ValueError(f"{at} names unknown attribute {attribute!r}")
                if attributes[attribute].kind is Kind.phone:
                    raise ValueError(f"{at}: {attribute!r} is a phone; a record's phones are pooled and compared "
                                     "together (the `home` comparison), not by a deterministic rule")
                if not attributes[attribute].use_in_matching:
                    raise ValueError(f"{at}: {attribute!r} is not compared (set `match: true` on it)")
        return self

    def resolve(self, path: Path) -> Path:
        """A config path made absolute against the config file's folder."""
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def warehouse_path(self) -> Path:
        return self.resolve(self.warehouse.path)

    @property
    def decision_store_path(self) -> Path:
        """The workbench's decision store (``web.decision_store``, default beside the warehouse)."""
        configured = self.web.decision_store
        return self.resolve(configured) if configured else self.warehouse_path.parent / "steward" / "decisions.sqlite"

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


def _check_matching_sql(matching: MatchingConfig, schema: CustomerSchema) -> None:
    """Blocking rules name l./r. columns of the matching features; they and comparison conditions are plain
    expressions (no subquery, file or host function): Splink runs them in DuckDB."""
    import polars as pl

    from cmdm_pipeline.sql_checks import SqlCheckError, check_expression
    from cmdm_pipeline.stages.match_features import KEY, matching_frame

    empty = pl.DataFrame(schema={c: pl.String for c in [*KEY, "party_type", *schema.attributes]})
    features = matching_frame(empty, schema).columns
    for i, rule in enumerate(matching.blocking_rules or []):
        try:
            check_expression(rule, features, prefixes=("l", "r"))
        except SqlCheckError as exc:
            raise ValueError(f"matching.blocking_rules[{i}] {exc}") from None
    for name, comparison in matching.comparisons.items():
        for j, level in enumerate(comparison["comparison_levels"]):
            if str(level["sql_condition"]).strip().upper() == "ELSE":  # Splink's catch-all level
                continue
            try:
                # Columns are Splink's (name_l, name_r, tf_...): only the shape and functions are checked.
                check_expression(str(level["sql_condition"]), None)
            except SqlCheckError as exc:
                raise ValueError(f"matching.comparisons.{name}.comparison_levels[{j}].sql_condition {exc}") from None


def config_path_from_env(explicit: str | Path | None = None) -> Path:
    """The config path: explicit argument, else ``$CMDM_CONFIG``, else ``cmdm.yaml``."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> ProjectConfig:
    """Read and validate ``cmdm.yaml``; raise :class:`ConfigError` naming file, key path and problem."""
    config_path = config_path_from_env(path).resolve()
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: config file not found (set --config or {CONFIG_ENV_VAR})")
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path}: not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{config_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path}: expected a mapping at the top level, got {type(data).__name__}")
    engine = os.environ.get(ENGINE_ENV_VAR, "").strip()
    if engine:
        if engine.lower() not in ENGINE_NAMES:
            raise ConfigError(f"{ENGINE_ENV_VAR}: expected one of {', '.join(ENGINE_NAMES)}, got {engine[:40]!r}")
        data = {**data, "engine": engine.lower()}
    try:
        return ProjectConfig.model_validate({**data, "base_dir": config_path.parent})
    except ValidationError as exc:
        raise ConfigError(_describe(config_path, exc, data)) from None


def _describe(path: Path, exc: ValidationError, data: dict[str, Any]) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the config"]
    for error in exc.errors():
        where = _key_path(error["loc"], data)
        lines.append(f"  at {where or '(top level)'}: {error['msg']}")
    return "\n".join(lines)


def _key_path(loc: tuple[int | str, ...], data: Any) -> str:
    """A YAML key path like ``sources[2].columns``; list items use the item's `name` when it has one."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            node = node[key]
            label = node.get("name") if isinstance(node, dict) else None
            parts.append(f"[{key}]" + (f"({label})" if label else ""))
        elif isinstance(node, dict) and key in node:
            node = node[key]
            parts.append(f".{key}")
        elif isinstance(key, str) and not key.startswith(("function-", "union[", "literal[")):
            parts.append(f".{key}")
            node = None
    return "".join(parts).lstrip(".")
