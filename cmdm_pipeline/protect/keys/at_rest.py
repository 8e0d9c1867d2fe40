"""Encryption at rest of the warehouse's tables: which columns of which table, under whose key.

The warehouse calls :meth:`AtRest.seal` on every frame it is about to store and :meth:`AtRest.open`
on every table it reads, so stages and assets work on plaintext in memory while the DuckDB file
holds AES-256-GCM ciphertext (see :mod:`.crypto`) for:

- every attribute the schema marks ``pii: true``, in every table that has it;
- in ``raw_<source>`` tables, every source column except those mapped to an attribute that is not
  PII (a column nobody mapped may hold anything) and the source's id column, plus ``unparsed``;
- ``source_values`` (the row as read) in standardised and quarantined rows;
- the subject e-mail and phone of consent events and the row as read of quarantined ones.

Which key: rows about a source record use that record's data key (``record/<system>/<id>``), rows
about a master customer that master's (``master/<id>``), a consent event its own
(``consent/<event_id>``): destroying a person's keys shreds every copy (docs/concepts/encryption.md).
Which columns of a stored table are ciphertext, and their plaintext types, is recorded in the
table ``cmdm_encrypted_columns`` in the same transaction as the table.

``golden_customers`` holds each master's current version, which is also the current row of
``golden_customers_history``: both are bound as ``golden_customers_history|<column>|<master id>|<valid_from>``
and hold the same ciphertext, so a version is encrypted once, when it begins (a copy from one table to
the other decrypts only as the same version of the same master). Their version digest (keyed, over
the master id and every value) tells an unchanged version, so no second digest is made for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.keys.crypto import DIGEST_COLUMN, checked_record_ids, decrypt_frame, encrypt_changed, encrypt_frame
from cmdm_pipeline.protect.keys.kek import load_keyring
from cmdm_pipeline.protect.keys.keystore import KeyStore, master_owner, record_owner
from cmdm_pipeline.schema import LINEAGE_COLUMNS
from cmdm_pipeline.stages.history import VERSION_DIGEST
from cmdm_pipeline.warehouse import Warehouse

#: Plaintext types a ciphertext column can be read back as.
PLAINTEXT_TYPES: dict[str, pl.DataType] = {
    "String": pl.String(), "Date": pl.Date(), "Int64": pl.Int64(), "Float64": pl.Float64(),
}

_RECORD_TABLES = ("standardised_customers", "validated_customers", "quarantined_records")
_MASTER_TABLES = ("golden_customers", "golden_customers_history")
_HISTORY = "golden_customers_history"


@dataclass(frozen=True)
class TablePlan:
    """How one table is protected: which columns, each row's key owner and record id."""

    columns: tuple[str, ...]  # encrypted where present; empty: every column not in ``public``
    owner: pl.Expr
    record_id: pl.Expr
    incremental: bool = True  # keep unchanged rows' ciphertext (needs a record id stable across runs)
    public: frozenset[str] = frozenset()
    bound_as: str | None = None  # the table name bound into the associated data, if not its own
    #: A keyed digest the rows already carry that changes whenever the owner or a protected value does
    #: (the golden records' version digest): compared as it is, where present, instead of a ``pii_digest``.
    digest: str | None = None

    def present(self, columns: Sequence[str]) -> list[str]:
        """The protected ones among a table's ``columns``."""
        if self.columns:
            return [c for c in self.columns if c in columns]
        return [c for c in columns if c not in self.public and c != DIGEST_COLUMN]


def _joined(*parts: str) -> pl.Expr:
    return pl.concat_str([pl.col(p).cast(pl.String) for p in parts], separator="|")


def _record_key_owner() -> pl.Expr:
    # A row without an id (quarantined for it) still needs a key of its own: its row number.
    return record_owner(
        "source_system",
        pl.coalesce(pl.col("source_record_id"), pl.lit("#row") + pl.col("source_row_number").cast(pl.String)),
    )


class AtRest:
    """Seal frames before they are stored and open them when read, for one project config."""

    def __init__(self, config: ProjectConfig) -> None:
        self.config = config
        self.pii = tuple(name for name, attribute in config.customer_schema.attributes.items() if attribute.pii)
        self._keys: KeyStore | None = None

    @property
    def keys(self) -> KeyStore:
        """The project's key store, opened (and checked against the warehouse) on first use."""
        if self._keys is None:
            self._keys = KeyStore.for_config(self.config, load_keyring(self.config, create_dev_key=True))
        return self._keys

    def open_keys(self) -> None:
        """Open the key store now: the warehouse does so before its first connection, so a missing or
        different store, or a wrong key, is refused before anything is read or written."""
        self.keys  # noqa: B018 - the property opens and checks the store

    def plan(self, table: str) -> TablePlan | None:
        """The protection of ``table``, or None for tables that hold nothing personal."""
        if table in _RECORD_TABLES:
            columns = (*self.pii, "source_values")
            if table == "validated_customers":
                return TablePlan(columns, _record_key_owner(), _joined("source_system", "source_record_id"))
            return TablePlan(columns, _record_key_owner(), _joined("source_system", "source_row_number"))
        if table in _MASTER_TABLES:
            # A record is one version of a master; golden rows are the current versions of history's.
            return TablePlan(self.pii, master_owner(), _joined("master_id", "valid_from"), bound_as=_HISTORY,
                             digest=VERSION_DIGEST)
        if table == "consent_history":
            owner = pl.lit("consent/") + pl.col("event_id")
            return TablePlan(("subject_email", "subject_phone"), owner, pl.col("event_id"), incremental=False)
        if table == "consent_quarantine":
            owner = pl.concat_str([pl.lit("consent-quarantine/"), _joined("run_id", "source_row_number")])
            return TablePlan(("source_values",), owner, _joined("run_id", "source_row_number"), incremental=False)
        for source in self.config.sources:
            if table == f"raw_{source.name}":
                public = {column for column, attribute in source.columns.items() if attribute not in self.pii}
                kept = {*LINEAGE_COLUMNS, "parse_error", source.id_column, *public}
                return TablePlan((), _record_key_owner(), pl.col("source_row_number").cast(pl.String), public=frozenset(kept))
        return None

    def seal(
        self, table: str, frame: pl.DataFrame, previous: Sequence[pl.DataFrame] = ()
    ) -> tuple[pl.DataFrame, dict[str, str]]:
        """``frame`` with its personal columns encrypted, and those columns' plaintext types.

        ``previous``: the table as stored (ciphertext), and frames just sealed for tables bound the same
        way (:meth:`bound_as`): rows whose values and key owner did not change keep their ciphertext, so
        a quiet night re-encrypts nothing.
        """
        plan = self.plan(table)
        if plan is None:
            return frame, {}
        columns = plan.present(frame.columns)
        if not columns:
            return frame, {}
        types = {c: _type_name(table, c, frame.schema[c]) for c in columns}
        if plan.incremental:
            # Rows written before version digests existed (tests, an old history) get a digest made here.
            given = plan.digest is not None and plan.digest in frame.columns
            digest = plan.digest if given and plan.digest is not None else DIGEST_COLUMN
            sealed = encrypt_changed(frame, previous, columns, table, plan.owner, plan.record_id, self.keys,
                                     digest, bound_as=plan.bound_as, given=given)
            return sealed.frame, types
        return encrypt_frame(frame, columns, table, plan.owner, plan.record_id, self.keys, bound_as=plan.bound_as), types

    def compared_columns(self, table: str, stored: Sequence[str]) -> list[str]:
        """The columns of ``table`` as stored that :meth:`seal` compares with (not the others: less to read)."""
        plan = self.plan(table)
        if plan is None:
            return []
        wanted = {*plan.present(stored), plan.digest, DIGEST_COLUMN, *plan.record_id.meta.root_names()}
        return [c for c in stored if c in wanted]

    def opened_with(self, table: str) -> list[str]:
        """The columns :meth:`open` needs beside the ciphertext: those of ``table``'s record ids."""
        plan = self.plan(table)
        return [] if plan is None else plan.record_id.meta.root_names()

    def check_record_ids(self, table: str, frame: pl.DataFrame) -> None:
        """Refuse ``frame`` (plaintext as read, in parts) if two rows share a record id: each part was checked
        on its own when decrypted, and two rows with one id could have swapped their ciphertext unnoticed."""
        plan = self.plan(table)
        if plan is not None:
            checked_record_ids(frame, plan.record_id)

    def bound_as(self, table: str) -> str | None:
        """The table name ``table``'s ciphertexts are bound to (tables sharing one can share ciphertext);
        None for tables that hold nothing personal."""
        plan = self.plan(table)
        return None if plan is None else plan.bound_as or table

    def open(self, table: str, stored: pl.DataFrame, types: dict[str, str]) -> pl.DataFrame:
        """The plaintext of a stored table whose ``types`` columns are ciphertext."""
        plan = self.plan(table)
        if plan is None:
            raise ProtectionError(f"{table} holds ciphertext but the config does not say whose: was a source renamed?")
        missing = [c for c in plan.record_id.meta.root_names() if c not in stored.columns]
        if missing:
            raise ProtectionError(f"{table} was written by an older cmdm_pipeline (no {', '.join(missing)}): run the pipeline to rewrite it")
        dtypes = {c: PLAINTEXT_TYPES[t] for c, t in types.items()}
        plain = decrypt_frame(stored, list(types), table, plan.record_id, self.keys, dtypes, bound_as=plan.bound_as)
        return plain.drop(DIGEST_COLUMN, strict=False)


def _type_name(table: str, column: str, dtype: pl.DataType) -> str:
    if dtype == pl.Null:
        return "String"
    for name, known in PLAINTEXT_TYPES.items():
        if dtype == known:
            return name
    raise ProtectionError(f"{table}.{column} is {dtype}: only text, dates and numbers are encrypted (mark it pii: false?)")


def plaintext_personal_columns(at_rest: AtRest, stored: dict[str, dict[str, str]], encrypted: dict[str, set[str]]) -> list[str]:
    """``table.column`` of every personal column stored as anything but recorded ciphertext.

    ``stored``: table -> column -> DuckDB type, as in the file; ``encrypted``: table -> columns
    recorded in ``cmdm_encrypted_columns``.
    """
    found = []
    for table, columns in sorted(stored.items()):
        plan = at_rest.plan(table)
        if plan is None:
            continue
        for column in plan.present(list(columns)):
            if columns[column] != "BLOB" or column not in encrypted.get(table, set()):
                found.append(f"{table}.{column}")
    return found


def open_warehouse(config: ProjectConfig, path: Path | None = None) -> Warehouse:
    """The project's warehouse (or the one at ``path``), encrypting personal columns at rest unless
    ``protection.encrypt`` is off."""
    at_rest = AtRest(config) if config.protection.encrypt else None
    return Warehouse(path or config.warehouse_path, at_rest, config.warehouse.memory_limit)


def warehouse_keys(store: Warehouse, config: ProjectConfig) -> KeyStore:
    """The key store of ``store``'s encryption, else (a warehouse opened without it) the project's."""
    return (store.at_rest if isinstance(store.at_rest, AtRest) else AtRest(config)).keys
