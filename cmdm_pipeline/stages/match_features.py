"""Matching features: the comparable form of each attribute, derived from its kind.

Values are folded to ASCII lower case (anyascii) so "José Müller" meets "JOSE MULLER";
given names carry the set of names they may stand for (the `nicknames` dataset: Bob ->
Robert); e-mails add their local part; all phone attributes of a record are pooled, so a
mobile in one source meets the same number filed as "phone" in another.
"""

from __future__ import annotations

from functools import cache

import polars as pl

from cmdm_pipeline.schema import Attribute, CustomerSchema, Kind

KEY = ["source_system", "source_record_id"]
PHONES = "phones"


def fold(column: pl.Expr) -> pl.Expr:
    """ASCII, lower case, letters/digits/spaces only, single spaces; empty -> null."""
    from anyascii import anyascii

    return (
        column.map_batches(lambda s: _fold_series(s, anyascii), return_dtype=pl.String)
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9 ]+", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
        .replace("", None)
    )


def _fold_series(values: pl.Series, anyascii) -> pl.Series:
    # Transliteration is a per-string library call: do it once per distinct value.
    distinct = values.drop_nulls().unique()
    mapping = {v: anyascii(v) for v in distinct.to_list()}
    return values.replace_strict(mapping, default=None, return_dtype=pl.String)


@cache
def _nicknamer():
    from nicknames import NickNamer

    return NickNamer()


def name_variants(names: pl.Series) -> pl.Series:
    """Per folded given name: itself plus the formal names it can be a nickname of."""
    namer = _nicknamer()
    distinct = names.drop_nulls().unique().to_list()
    variants = {n: sorted({n, *namer.canonicals_of(n)}) for n in distinct}
    return names.replace_strict(variants, default=None, return_dtype=pl.List(pl.String))


def feature_inputs(schema: CustomerSchema) -> list[str]:
    """The validated columns :func:`matching_frame` reads (fewer columns to decrypt and hold)."""
    def used(attribute: Attribute) -> bool:
        if attribute.kind in (Kind.category, Kind.number, Kind.boolean):
            return attribute.use_in_matching
        return True

    return [*KEY, "party_type", *(n for n, a in schema.attributes.items() if used(a))]


def matching_frame(records: pl.DataFrame, schema: CustomerSchema) -> pl.DataFrame:
    """One row per record: ``unique_id`` (row number), the key, ``party_type``, and features."""
    columns: list[pl.Expr] = [
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("unique_id"),
        *[pl.col(k) for k in KEY],
        pl.col("party_type"),
    ]
    phone_columns = schema.of_kind(Kind.phone)
    for name, attribute in schema.attributes.items():
        kind = attribute.kind
        if kind in (Kind.person_name, Kind.organisation_name, Kind.address_line, Kind.city, Kind.region, Kind.text):
            columns.append(fold(pl.col(name)).alias(name))
            if kind is Kind.address_line:
                # House, flat and building numbers: neighbours share the street, not the number.
                columns.append(pl.col(name).str.extract_all(r"\d+").alias(f"{name}_numbers"))
        elif kind is Kind.email:
            columns.append(pl.col(name))
        elif kind is Kind.postcode:
            columns.append(pl.col(name).str.replace_all(" ", "").alias(name))
        elif kind in (Kind.category, Kind.number, Kind.boolean):
            if attribute.use_in_matching:  # compared exactly (match: true); otherwise not a feature
                columns.append(pl.col(name))
        elif kind is Kind.phone:
            continue
        else:
            columns.append(pl.col(name))
    if phone_columns:
        columns.append(
            pl.concat_list(phone_columns).list.drop_nulls().list.unique().list.sort().alias(PHONES)
        )
    frame = records.select(columns)
    if PHONES in frame.columns:
        frame = frame.with_columns(
            pl.when(pl.col(PHONES).list.len() > 0).then(pl.col(PHONES)).alias(PHONES)
        )
    for name in given_name_attributes(schema):
        frame = frame.with_columns(name_variants(frame[name]).alias(f"{name}_variants"))
    return frame


def given_name_attributes(schema: CustomerSchema) -> list[str]:
    return [n for n, a in schema.attributes.items() if a.kind is Kind.person_name and a.name_part == "given"]


def family_name_attributes(schema: CustomerSchema) -> list[str]:
    return [n for n, a in schema.attributes.items() if a.kind is Kind.person_name and a.name_part == "family"]
