"""Each standardiser on tiny, table-driven cases."""

from __future__ import annotations

import datetime as dt
import importlib

import polars as pl
import pytest

from cmdm_pipeline.schema import Attribute, Kind
from cmdm_pipeline.stages import fields


def s(*values: str | None) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String)


def test_clean_text_normalises_unicode_and_whitespace() -> None:
    # "é" as e + combining accent, a full-width A, a non-breaking space, tabs.
    assert fields.clean_text(s("Jose\u0301", "\uff21nn", " a\u00a0 \tb ", "   ", None)).to_list() == [
        "José", "Ann", "a b", None, None,
    ]


def test_person_name_recases_only_all_upper_or_lower() -> None:
    result = fields.person_name(s("  JOHN  ", "mary-jane", "McDonald", "o'brien", "José"))
    assert result.value.to_list() == ["John", "Mary-Jane", "McDonald", "O'Brien", "José"]
    assert result.problem.null_count() == 5


def test_email_lower_cases_and_flags_bad_syntax() -> None:
    result = fields.email(s("Ada.Lovelace@Example.ORG", "ada@@example.org", "no-at-sign.example.com", None))
    assert result.value.to_list() == ["ada.lovelace@example.org", None, None, None]
    assert result.problem.to_list() == [None, "not a valid e-mail address", "not a valid e-mail address", None]


def test_email_checks_each_domain_once_with_the_library_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    from email_validator import EmailNotValidError, validate_email

    module = importlib.import_module("email_validator.validate_email")
    calls: list[str] = []
    checked = module.validate_email_domain_name

    def counted(domain: str, **options: object) -> object:
        calls.append(domain)
        return checked(domain, **options)

    monkeypatch.setattr(module, "validate_email_domain_name", counted)
    values = ["Ada@Bücher.de", "bob@bücher.de", "cy@bücher.de", "Zed@EXAMPLE.org", "eve@example.org", "fay@example.org",
              "x@-bad-.com", "y@-bad-.com", "a@localhost", "b@localhost"]

    def library(value: str) -> str | None:
        try:
            return validate_email(value, check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            return None

    expected = [library(v) for v in values]
    calls.clear()
    assert fields.email(s(*values)).value.to_list() == expected
    assert expected[:6] == ["ada@bücher.de", "bob@bücher.de", "cy@bücher.de", "zed@example.org", "eve@example.org",
                            "fay@example.org"]
    assert expected[6:] == [None] * 4
    # Valid domains once each (as written); failing ones each time, so each address gets its own verdict.
    assert sorted(calls) == sorted(["Bücher.de", "bücher.de", "EXAMPLE.org", "example.org", "-bad-.com", "-bad-.com",
                                    "localhost", "localhost"])
    assert module.validate_email_domain_name is counted  # put back after the call


def test_phone_to_e164_with_the_record_country() -> None:
    values = s("020 7946 0018", "(202) 555-0143", "447911123456", "+49 30 901820", "n/a", "0301234", None)
    country = s("GB", "US", None, "FR", "GB", None, "GB")
    result = fields.phone(values, country=country)
    assert result.value.to_list() == ["+442079460018", "+12025550143", "+447911123456", "+4930901820", None, None, None]
    problems = result.problem.to_list()
    assert problems[:4] == [None] * 4
    assert problems[4] == "not a valid phone number"
    assert "no country" in problems[5]
    assert problems[6] is None


def test_country_from_codes_and_names_in_several_languages() -> None:
    result = fields.country(s("GB", "gbr", "826", "United Kingdom", "UK", "Deutschland", "Royaume-Uni", "  españa ", "Narnia"))
    assert result.value.to_list() == ["GB", "GB", "GB", "GB", "GB", "DE", "GB", "ES", None]
    assert result.problem.to_list()[-1] == "not a recognised country"


@pytest.mark.parametrize(
    ("value", "country", "expected", "problem"),
    [
        ("sw1a1aa", "GB", "SW1A 1AA", None),
        ("ec1y 8sy", "GB", "EC1Y 8SY", None),
        ("1234ab", "NL", "1234 AB", None),
        ("10115", "DE", "10115", None),
        ("k1a0b1", "CA", "K1A 0B1", None),
        ("XYZ", "DE", "XYZ", "not a valid DE postcode"),
        ("anything", None, "ANYTHING", None),
    ],
)
def test_postcode_per_country(value: str, country: str | None, expected: str, problem: str | None) -> None:
    result = fields.postcode(s(value), country=s(country))
    assert result.value.to_list() == [expected]
    assert result.problem.to_list() == [problem]


def test_date_uses_declared_formats_and_reports_ambiguity() -> None:
    result = fields.date(
        s("03/04/2020", "13/04/2020", "2020-01-02T10:00:00Z", "bad", None),
        formats=["%d/%m/%Y", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%SZ"],
    )
    assert result.value.to_list() == [None, dt.date(2020, 4, 13), dt.date(2020, 1, 2), None, None]
    problems = result.problem.to_list()
    assert problems[0].startswith("ambiguous date")
    assert problems[1:3] == [None, None]
    assert problems[3].startswith("not a date in the source's formats")
    assert problems[4] is None


OUTSIDE = "date outside the years 1 to 9999"


@pytest.mark.parametrize(
    ("value", "formats", "expected", "problem"),
    [
        ("0000-01-01", ["%Y-%m-%d"], None, OUTSIDE),
        ("-0001-05-05", ["%Y-%m-%d"], None, OUTSIDE),
        ("+10000-01-01", ["%Y-%m-%d"], None, OUTSIDE),
        ("01.01.0000", ["%d.%m.%Y", "%Y%m%d"], None, OUTSIDE),
        ("05.05.-0001", ["%d.%m.%Y", "%Y%m%d"], None, OUTSIDE),
        ("00000101", ["%d.%m.%Y", "%Y%m%d"], None, OUTSIDE),
        ("01 Jan 0000", ["%d %b %Y"], None, OUTSIDE),
        ("0000-01-01T10:00:00Z", ["%Y-%m-%dT%H:%M:%SZ"], None, OUTSIDE),
        # The offset moves these across a year boundary: the date in UTC is the one kept.
        ("0001-01-01T00:00:00+05:00", ["%Y-%m-%dT%H:%M:%S%z"], None, OUTSIDE),
        ("9999-12-31T23:00:00-05:00", ["%Y-%m-%dT%H:%M:%S%z"], None, OUTSIDE),
        # Five digits are not %Y: the parser refuses it before any range is looked at.
        ("10000-01-01", ["%Y-%m-%d"], None, "not a date in the source's formats (%Y-%m-%d)"),
        ("0001-01-01", ["%Y-%m-%d"], dt.date(1, 1, 1), None),
        ("99991231", ["%d.%m.%Y", "%Y%m%d"], dt.date(9999, 12, 31), None),
        ("0001-01-01T12:00:00+05:00", ["%Y-%m-%dT%H:%M:%S%z"], dt.date(1, 1, 1), None),
    ],
)
def test_date_python_cannot_hold_is_a_bad_value(
    value: str, formats: list[str], expected: dt.date | None, problem: str | None
) -> None:
    result = fields.date(s(value, None), formats=formats)
    assert result.value.to_list() == [expected, None]  # to_list builds Python dates: it fails on year 0
    assert result.problem.to_list() == [problem, None]


def test_number_and_boolean_flag_wrong_types() -> None:
    number = fields.number(s("7", " 3,5 ", "ten", None))
    assert number.value.to_list() == [7.0, 3.5, None, None]
    assert number.problem.to_list() == [None, None, "not a number", None]
    flag = fields.boolean(s("TRUE", "no", "1", "maybe"))
    assert flag.value.to_list() == [True, False, True, None]
    assert flag.problem.to_list()[-1] == "not a yes/no value"


NOT_FINITE = "number is not finite (too large, infinite or NaN)"
AMBIGUOUS = "ambiguous number: the comma may separate thousands or decimals"


@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        ("1e400", None, NOT_FINITE),
        ("-1e400", None, NOT_FINITE),
        ("inf", None, NOT_FINITE),
        ("-Infinity", None, NOT_FINITE),
        ("nan", None, NOT_FINITE),
        ("NaN", None, NOT_FINITE),
        ("1e308", 1e308, None),
        ("-1,7976931348623157e308", -1.7976931348623157e308, None),
        ("1e-400", 0.0, None),
        ("0x10", None, "not a number"),
        ("1,000", None, AMBIGUOUS),  # a thousand, or one with a decimal comma?
        ("-12,345,678", None, AMBIGUOUS),
        ("1,0000", 1.0, None),  # no grouping of three: a decimal comma
        ("1,23", 1.23, None),
    ],
)
def test_number_too_large_infinite_nan_or_ambiguous_is_a_bad_value(
    value: str, expected: float | None, problem: str | None
) -> None:
    result = fields.number(s(value, None))
    assert result.value.to_list() == [expected, None]
    assert result.problem.to_list() == [problem, None]


def test_category_maps_declared_spellings() -> None:
    attribute = Attribute(kind=Kind.category, values={"F": "female", "m": "male"})
    assert fields.category(s(" f ", "M", "Other"), attribute=attribute).value.to_list() == ["female", "male", "other"]


def test_identifier_compacts_and_checks_with_stdnum() -> None:
    attribute = Attribute(kind=Kind.identifier, validator="iban")
    result = fields.identifier(s("gb82 west 1234 5698 7654 32", "GB00WEST12345698765432"), attribute=attribute)
    assert result.value.to_list() == ["GB82WEST12345698765432", "GB00WEST12345698765432"]
    assert result.problem.to_list() == [None, "fails the iban check"]


def test_every_kind_has_a_standardiser_and_a_type() -> None:
    assert set(fields.STANDARDISERS) == set(Kind) == set(fields.DTYPES)


@pytest.mark.parametrize(
    ("standardiser", "written", "expected"),
    [
        (fields.email, "ada\u200b@example.org", "ada@example.org"),     # zero-width space
        (fields.email, "\ufeffada@example.org", "ada@example.org"),     # a byte-order mark
        (fields.person_name, "Ad\u202ea", "Ada"),                       # right-to-left override
        (fields.person_name, "\u2067Ada\u2069", "Ada"),                 # right-to-left isolate
        (fields.free_text, "great\u2060 service\u200d", "great service"),  # word joiner, zero-width joiner
        (fields.plain_text, "Acme\u00ad Ltd\u200e", "Acme Ltd"),        # soft hyphen, left-to-right mark
    ],
)
def test_format_characters_are_removed_so_equal_looking_values_are_equal(
    standardiser: object, written: str, expected: str
) -> None:
    result = standardiser(s(written, expected))  # type: ignore[operator]
    assert result.value.to_list() == [expected, expected]
    assert result.problem.to_list() == [None, None]
