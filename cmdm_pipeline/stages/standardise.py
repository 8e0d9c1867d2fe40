"""Standardise: map a source's columns onto the customer schema and make each value canonical.

Every raw row gives exactly one standardised row. What could not be standardised, and what
the input checks found (unparsable rows, missing or duplicate ids, control or format
characters, oversized or formula-like values, recency dates after the row was read), is
recorded per row in ``issues``; the validation gate decides from their severity whether the
row passes or is quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from cmdm_pipeline.config import FromColumn, ProjectConfig, Source
from cmdm_pipeline.progress import step
from cmdm_pipeline.schema import LINEAGE_COLUMNS, CustomerSchema, Kind, Severity
from cmdm_pipeline.stages.extract import EXTRACT_COLUMNS
from cmdm_pipeline.stages.fields import DTYPES, FORMAT_CHARACTERS, STANDARDISERS
from cmdm_pipeline.stages.survivorship import is_future_recency
from cmdm_pipeline.warehouse import BATCH_ROWS, TableReader

ISSUE_FIELDS = {"rule": pl.String, "attribute": pl.String, "severity": pl.String, "reason": pl.String}
ISSUE_DTYPE = pl.List(pl.Struct(ISSUE_FIELDS))
_ROW = "source_row_number"

# Control characters other than tab, newline and carriage return, which whitespace
# clean-up handles; NUL is the one that breaks downstream tools.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# What spreadsheets run as a formula: a leading = or @, or + / - not starting a number
# or phone ("+44 ...", "-3"), after any whitespace; or a leading tab / carriage return.
_FORMULA = r"^(?:[\t\r]|\s*(?:[=@]|[+\-][^0-9\s(.]))"


def standardised_columns(schema: CustomerSchema) -> dict[str, pl.DataType]:
    """Column name -> type of the standardised table, in order."""
    return {
        "source_system": pl.String(),
        "source_record_id": pl.String(),
        "source_row_number": pl.Int64(),
        "ingested_at": pl.Datetime("us", "UTC"),
        "record_type": pl.String(),
        "party_type": pl.String(),
        "trust_rank": pl.Int64(),
        **{name: DTYPES[attr.kind] for name, attr in schema.attributes.items()},
        "source_values": pl.String(),
        "issues": ISSUE_DTYPE,
    }


def standardise_table(read: TableReader, table: str, source: Source, config: ProjectConfig) -> Iterator[pl.DataFrame]:
    """:func:`standardise` of raw table ``table`` of ``source``, ``BATCH_ROWS`` rows at a time: the table and its
    standardised rows are never whole in memory. Ids shared across batches are found first, from the ids alone."""
    ids = read.read(table, [_ROW, "source_record_id"])
    sharing = ids.filter(pl.col("source_record_id").is_not_null() & pl.col("source_record_id").is_duplicated())
    duplicates = duplicate_id_issues(read.read(table, rows=sharing.select(_ROW)) if sharing.height else None)
    total = ids.height
    del ids, sharing  # the id column of a large source: not kept through the batches
    with step(f"standardise {source.name}", total=total) as advance:
        for batch in read.batches(table, BATCH_ROWS):
            yield standardise(batch, source, config, duplicates)
            advance(batch.height)


def standardise(
    raw: pl.DataFrame, source: Source, config: ProjectConfig, duplicates: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per raw row of ``source``: lineage, types, every schema attribute, source values, issues.

    ``duplicates``: when ``raw`` is one batch of a source, :func:`duplicate_id_issues` of the whole source
    (None: ids shared within ``raw`` are found here).
    """
    schema = config.customer_schema
    own_columns = [c for c in raw.columns if c not in EXTRACT_COLUMNS]
    if duplicates is None:
        duplicates = duplicate_id_issues(raw)
    issues: list[pl.DataFrame] = [
        *_input_issues(raw, source, config),
        *_row_issues(raw),
        *([duplicates.join(raw.select(_ROW), on=_ROW, how="semi")] if duplicates.height else []),
    ]
    record_type, record_type_issues = _derived(raw, source.record_type, "record_type")
    party_type, party_type_issues = _derived(raw, source.party_type, "party_type")
    issues += [record_type_issues, party_type_issues]

    mapped = {attribute: column for column, attribute in source.columns.items()}
    values: dict[str, pl.Series] = {}
    country = _country(raw, source, config, mapped, values, issues)
    for name, attribute in schema.attributes.items():
        if name in values:
            continue
        if name not in mapped:
            values[name] = pl.Series(name, [None] * raw.height, dtype=DTYPES[attribute.kind])
            continue
        result = STANDARDISERS[attribute.kind](
            raw[mapped[name]], country=country, attribute=attribute, formats=source.date_formats
        )
        values[name] = result.value.cast(DTYPES[attribute.kind]).alias(name)
        issues.append(_attribute_issues(raw, result.problem, name, attribute.invalid))
    issues.append(_future_recency_issues(raw, values, config))

    # One query, not five: on the resolve API's one-row frames each query costs more than its work.
    frame = raw.lazy().select(
        *LINEAGE_COLUMNS,
        pl.struct([*own_columns, "unparsed"]).struct.json_encode().alias("source_values"),
    ).with_columns(
        record_type.alias("record_type"),
        party_type.alias("party_type"),
        pl.lit(source.trust_rank, dtype=pl.Int64).alias("trust_rank"),
        *[values[name] for name in schema.attributes],
    )
    found = _collect_issues(issues)
    if found.height:
        frame = frame.join(found.lazy(), on=_ROW, how="left", maintain_order="left")
    return frame.with_columns(
        pl.col("issues").fill_null(pl.lit([], dtype=ISSUE_DTYPE)) if found.height
        else pl.lit([], dtype=ISSUE_DTYPE).alias("issues")
    ).select(list(standardised_columns(schema))).collect()


def _country(
    raw: pl.DataFrame,
    source: Source,
    config: ProjectConfig,
    mapped: dict[str, str],
    values: dict[str, pl.Series],
    issues: list[pl.DataFrame],
) -> pl.Series:
    """Standardise country attributes first: phones and postcodes are read with the row's country."""
    schema = config.customer_schema
    row_country: pl.Series | None = None
    for name in schema.of_kind(Kind.country):
        if name not in mapped:
            continue
        result = STANDARDISERS[Kind.country](raw[mapped[name]])
        values[name] = result.value.alias(name)
        issues.append(_attribute_issues(raw, result.problem, name, schema.attributes[name].invalid))
        row_country = row_country if row_country is not None else result.value
    if source.default_country is not None:
        fallback = pl.lit(source.default_country)
        if row_country is None:
            row_country = pl.select(fallback.repeat_by(raw.height).explode()).to_series()
        else:
            row_country = row_country.fill_null(source.default_country)
    if row_country is None:
        row_country = pl.Series([None] * raw.height, dtype=pl.String)
    return row_country.alias("country")


def _issue_frame(rows: pl.Series, rule: str, attribute: str, severity: Severity, reason: str) -> pl.DataFrame:
    return pl.DataFrame({_ROW: rows}).select(
        _ROW,
        pl.lit(rule).alias("rule"),
        pl.lit(attribute).alias("attribute"),
        pl.lit(severity.value).alias("severity"),
        pl.lit(reason).alias("reason"),
    )


def _attribute_issues(raw: pl.DataFrame, problem: pl.Series, attribute: str, severity: Severity) -> pl.DataFrame:
    if problem.null_count() == problem.len():  # the usual case, known without a query
        return pl.DataFrame()
    frame = pl.DataFrame({_ROW: raw[_ROW], "problem": problem}).filter(pl.col("problem").is_not_null())
    return frame.select(
        _ROW,
        pl.lit(f"{attribute}.invalid").alias("rule"),
        pl.lit(attribute).alias("attribute"),
        pl.lit(severity.value).alias("severity"),
        (pl.lit(f"{attribute}: ") + pl.col("problem")).alias("reason"),
    )


def _future_recency_issues(raw: pl.DataFrame, values: dict[str, pl.Series], config: ProjectConfig) -> pl.DataFrame:
    """Recency dates later than the day the row was read: kept, warned, and not ranked by ``most_recent``."""
    name = config.survivorship.recency_attribute
    if name is None:
        return pl.DataFrame()
    if values[name].null_count() == raw.height:
        return pl.DataFrame()
    rows = raw.select(_ROW, "ingested_at", values[name]).filter(is_future_recency(pl.col(name)).fill_null(False))
    return _issue_frame(rows[_ROW], f"{name}.future", name, Severity.warn,
                        f"{name}: recency date later than the day the row was read")


def _as_standardised(column: pl.Expr) -> pl.Expr:
    """What the formula check reads: the value as standardisation will see it (NFKC folds a full-width
    ``＝`` into ``=``; format characters go), so no variant slips past the check into the tables."""
    return column.str.normalize("NFKC").str.replace_all(FORMAT_CHARACTERS, "")


def _input_issues(raw: pl.DataFrame, source: Source, config: ProjectConfig) -> list[pl.DataFrame]:
    """Control and format characters, oversized and formula-like values in the columns the config reads."""
    checks = config.input_checks
    columns = {source.id_column: "source_record_id", **source.columns}
    found: list[pl.DataFrame] = []
    tests = [
        ("input.control_characters", checks.control_characters,
         lambda c: c.str.contains(_CONTROL), "contains control characters (e.g. NUL)"),
        # Format characters (bidi controls, zero-width) are stripped from the value whatever the severity:
        # unlike NUL they break no tool, and like surplus whitespace they carry no meaning.
        ("input.format_characters", checks.format_characters,
         lambda c: c.str.contains(FORMAT_CHARACTERS),
         "contains invisible format characters (bidi controls, zero-width characters)"),
        ("input.oversized", checks.oversized,
         lambda c: c.str.len_chars() > checks.max_field_length,
         f"longer than {checks.max_field_length} characters"),
        ("input.formula_like", checks.formula_like,
         lambda c: _as_standardised(c).str.contains(_FORMULA),
         "looks like a spreadsheet formula"),
    ]
    names = list(columns)
    # Every test of every column in one pass (one select, which Polars runs in parallel; a test is one
    # expression over all columns, as building 40 expressions costs a one-row resolve request more than
    # running them); the rows of the few that hit are picked out after.
    hit = raw.select(test(pl.col(names)).fill_null(False).any().name.suffix(f"\x1f{t}")
                     for t, (_, _, test, _) in enumerate(tests)).row(0)
    for j, (column, attribute) in enumerate(columns.items()):
        for t, (rule, severity, test, reason) in enumerate(tests):
            if hit[t * len(names) + j]:
                rows = raw.filter(test(pl.col(column)).fill_null(False))[_ROW]
                found.append(_issue_frame(rows, rule, attribute, severity, f"{attribute}: {reason}"))
    return found


def _row_issues(raw: pl.DataFrame) -> list[pl.DataFrame]:
    """Unparsable rows and missing ids."""
    # Each check is skipped when the column's counts show it cannot hit, as on the resolve API's one row.
    found = []
    if raw["parse_error"].null_count() < raw.height:
        found.append(raw.filter(pl.col("parse_error").is_not_null()).select(
            _ROW,
            pl.lit("input.unparsable_row").alias("rule"),
            pl.lit(None, dtype=pl.String).alias("attribute"),
            pl.lit(Severity.reject.value).alias("severity"),
            ("row could not be parsed: " + pl.col("parse_error")).alias("reason"),
        ))
    if raw["source_record_id"].null_count():
        found.append(_issue_frame(
            raw.filter(pl.col("source_record_id").is_null() & pl.col("parse_error").is_null())[_ROW],
            "input.missing_id", "source_record_id", Severity.reject, "source_record_id: the row has no id",
        ))
    return found


def duplicate_id_issues(raw: pl.DataFrame | None) -> pl.DataFrame:
    """``input.duplicate_id`` of the rows of ``raw`` whose id another row shares (one issue row each, as
    :func:`_collect_issues` reads them). ``raw`` holds every row of the source that shares an id, or is None."""
    schema = {_ROW: pl.Int64, **ISSUE_FIELDS}
    if raw is None or raw.height - raw["source_record_id"].null_count() < 2:
        return pl.DataFrame(schema=schema)
    own_columns = [c for c in raw.columns if c not in EXTRACT_COLUMNS]
    ids = raw.filter(pl.col("source_record_id").is_not_null()).select(
        _ROW, "source_record_id", pl.struct(own_columns).hash().alias("content")
    )
    shared = ids.with_columns(
        pl.len().over("source_record_id").alias("copies"),
        pl.col("content").n_unique().over("source_record_id").alias("versions"),
        pl.col(_ROW).min().over("source_record_id").alias("first_row"),
        pl.col(_ROW).sort().head(5).implode().over("source_record_id").alias("rows"),
    ).filter(pl.col("copies") > 1)
    exact = shared.filter((pl.col("versions") == 1) & (pl.col(_ROW) != pl.col("first_row")))
    conflicting = shared.filter(pl.col("versions") > 1)
    common = [pl.lit("input.duplicate_id").alias("rule"), pl.lit("source_record_id").alias("attribute"),
              pl.lit(Severity.reject.value).alias("severity")]
    return pl.concat([
        exact.select(
            _ROW, *common,
            pl.format("source_record_id: exact duplicate of row {}", pl.col("first_row")).alias("reason"),
        ),
        conflicting.select(
            _ROW, *common,
            pl.format(
                "source_record_id: shared by {} rows with different values (rows {})",
                pl.col("copies"), pl.col("rows").cast(pl.List(pl.String)).list.join(", "),
            ).alias("reason"),
        ),
    ]).cast(schema)  # type: ignore[arg-type]


def _derived(raw: pl.DataFrame, spec: object, name: str) -> tuple[pl.Series, pl.DataFrame]:
    """record_type / party_type: a literal for the whole source, or read per row and mapped."""
    if not isinstance(spec, FromColumn):
        return pl.Series(name, [str(spec.value)] * raw.height, dtype=pl.String), pl.DataFrame()  # type: ignore[attr-defined]
    text = raw[spec.column].str.strip_chars()
    value = text.replace_strict(spec.values, default=None, return_dtype=pl.String).alias(name)
    unmapped = raw.filter(value.is_null() & pl.col("parse_error").is_null())[_ROW]
    reason = f"{name}: value of column {spec.column!r} is not one of {sorted(spec.values)}"
    return value, _issue_frame(unmapped, f"input.{name}", name, Severity.reject, reason)


def _collect_issues(issues: list[pl.DataFrame]) -> pl.DataFrame:
    schema = {_ROW: pl.Int64, **ISSUE_FIELDS}
    frames = [f.select(list(schema)).cast(schema) for f in issues if f.height]  # type: ignore[arg-type]
    if not frames:
        return pl.DataFrame(schema={_ROW: pl.Int64, "issues": ISSUE_DTYPE})
    long = pl.concat(frames)
    return long.group_by(_ROW, maintain_order=True).agg(
        pl.struct(list(ISSUE_FIELDS)).alias("issues")
    )
