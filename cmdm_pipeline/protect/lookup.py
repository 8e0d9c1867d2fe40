"""Finding a customer by e-mail, phone or national id without decrypting anything.

``customer_lookup_index`` holds, for every validated record, the blind index (keyed HMAC, see
:mod:`.keys.blind_index`) of each of its e-mails, phones and personal identifiers, with its master id.
A lookup computes the blind index of the value asked for and compares bytes: no stored value is
decrypted, and the index reveals nothing without the key.
"""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.protect.keys.blind_index import IndexKind, blind_index
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.schema import CustomerSchema, Kind

LOOKUP_INDEX = "customer_lookup_index"
INDEX_COLUMNS = {
    "kind": pl.String, "attribute": pl.String, "blind_index": pl.Binary,
    "master_id": pl.String, "source_system": pl.String, "source_record_id": pl.String,
}

#: The stored index's row order (a lookup reads it by kind and blind index).
INDEX_ORDER = ["kind", "blind_index", "master_id"]


def indexed_attributes(schema: CustomerSchema) -> dict[str, IndexKind]:
    """Attribute -> blind-index kind: every e-mail and phone, and identifiers marked ``pii``."""
    kinds: dict[str, IndexKind] = {}
    for name, attribute in schema.attributes.items():
        if attribute.kind == Kind.email:
            kinds[name] = "email"
        elif attribute.kind == Kind.phone:
            kinds[name] = "phone"
        elif attribute.kind == Kind.identifier and attribute.pii:
            kinds[name] = "national_id"
    return kinds


def lookup_index(records: pl.DataFrame, schema: CustomerSchema, keys: KeyStore) -> pl.DataFrame:
    """One row per record and indexed value it holds (``records``: validated rows with ``master_id``), unsorted:
    the table is built from several parts and sorted once (:data:`INDEX_ORDER`)."""
    parts = []
    for attribute, kind in indexed_attributes(schema).items():
        held = records.filter(pl.col(attribute).is_not_null())
        parts.append(
            held.select(
                pl.lit(kind).alias("kind"),
                pl.lit(attribute).alias("attribute"),
                blind_index(held[attribute], kind, keys, country=held["country"] if "country" in held.columns else None)
                .alias("blind_index"),
                "master_id", "source_system", "source_record_id",
            )
        )
    if not parts:
        return pl.DataFrame(schema=INDEX_COLUMNS)
    index = pl.concat(parts).drop_nulls("blind_index")
    return index.cast(INDEX_COLUMNS)  # type: ignore[arg-type]


def probe(value: str, kind: IndexKind, keys: KeyStore, country: str | None = None) -> bytes | None:
    """The blind index of one value typed by a person; None when it normalises to nothing."""
    return blind_index(pl.Series("value", [value], dtype=pl.String), kind, keys, country=country)[0]


def find_masters(store, kind: IndexKind, value: str, keys: KeyStore, country: str | None = None) -> pl.Series | None:
    """Master ids holding ``value`` in any of their records (sorted); None when it normalises to nothing."""
    from cmdm_pipeline.sql import statement

    index = probe(value, kind, keys, country=country)
    if index is None:
        return None
    found = store.query(statement("lookup/select_masters", table=LOOKUP_INDEX), {"kind": kind, "blind_index": index})
    return found["master_id"]
