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


def _per_distinct(values: pl.Series, fn, dtype: pl.DataType) -> pl.Series:
    """``fn`` (a per-string library call) of each value, called once per distinct value: names repeat.
    Where every value is distinct (as in the resolve API's one record) there is nothing to save, and a
    look-up would cost more than the calls."""
    distinct = values.drop_nulls().unique()
    if distinct.len() == values.len() - values.null_count():
        return pl.Series(values.name, [None if v is None else fn(v) for v in values.to_list()], dtype=dtype)
    mapping = {v: fn(v) for v in distinct.to_list()}
    return values.replace_strict(mapping, default=None, return_dtype=dtype)


def _fold_series(values: pl.Series, anyascii) -> pl.Series:
    return _per_distinct(values, anyascii, pl.String())


@cache
def _nicknamer():
    from nicknames import NickNamer

    return NickNamer()


def name_variants(names: pl.Series) -> pl.Series:
    """Per folded given name: itself plus the formal names it can be a nickname of."""
    namer = _nicknamer()
    return _per_distinct(names, lambda n: sorted({n, *namer.canonicals_of(n)}), pl.List(pl.String))


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
        phones = pl.concat_list(phone_columns).list.drop_nulls().list.unique().list.sort()
        columns.append(pl.when(phones.list.len() > 0).then(phones).alias(PHONES))
    frame = records.select(columns)
    # Appended, not computed by a query: on the resolve API's one row each query costs more than its work.
    return frame.hstack([name_variants(frame[name]).alias(f"{name}_variants") for name in given_name_attributes(schema)])


def given_name_attributes(schema: CustomerSchema) -> list[str]:
    return [n for n, a in schema.attributes.items() if a.kind is Kind.person_name and a.name_part == "given"]


def family_name_attributes(schema: CustomerSchema) -> list[str]:
    return [n for n, a in schema.attributes.items() if a.kind is Kind.person_name and a.name_part == "family"]
