"""Standardising a whole source: one row out per row in, typed columns, issues per row."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.stages.extract import extract
from cmdm_pipeline.stages.standardise import standardise, standardised_columns
from cmdm_pipeline_tests.conftest import GOOD_CSV, NOW, SCHEMA, csv_source


def test_shape_types_and_lineage(make_project) -> None:
    config = make_project()
    raw = extract(config.sources[0], config, NOW)
    result = standardise(raw, config.sources[0], config)
    assert dict(result.schema) == standardised_columns(config.customer_schema)
    assert result.height == raw.height
    assert result["trust_rank"].to_list() == [1, 1, 1]
    assert result["nps_score"].null_count() == 3  # not mapped by this source
    assert result["issues"].list.len().to_list() == [0, 0, 0]


def test_default_country_reads_national_phones(make_project) -> None:
    content = "Id,First,Phone\n1,A,020 7946 0018\n2,B,+33 1 42 68 53 00\n"
    source = csv_source(columns={"First": "first_name", "Phone": "phone"}, default_country="GB")
    config = make_project(files={"crm.csv": content}, sources=[source])
    result = standardise(extract(config.sources[0], config, NOW), config.sources[0], config)
    assert result["phone"].to_list() == ["+442079460018", "+33142685300"]


def test_issues_name_rule_attribute_severity(make_project) -> None:
    content = GOOD_CSV + "4,X,Y,not-an-email,,,GB,\n"
    config = make_project(files={"crm.csv": content})
    result = standardise(extract(config.sources[0], config, NOW), config.sources[0], config)
    issues = result.filter(pl.col("source_record_id") == "4")["issues"].to_list()[0]
    assert issues == [{"rule": "email.invalid", "attribute": "email", "severity": "warn", "reason": "email: not a valid e-mail address"}]


def test_values_later_stages_cannot_hold_are_issues_with_the_attributes_severity(make_project) -> None:
    # date_of_birth has `invalid: warn` (the default), nps_score `invalid: reject`.
    content = "Id,First,DOB,Score\n1,Ada,01/01/0000,1e400\n2,Alan,05/05/-0001,nan\n3,Grace,10/12/1985,7\n"
    source = csv_source(columns={"First": "first_name", "DOB": "date_of_birth", "Score": "nps_score"})
    config = make_project(files={"crm.csv": content}, sources=[source])
    result = standardise(extract(config.sources[0], config, NOW), config.sources[0], config)
    assert result["date_of_birth"].to_list() == [None, None, dt.date(1985, 12, 10)]
    assert result["nps_score"].to_list() == [None, None, 7.0]
    date_issue = {"rule": "date_of_birth.invalid", "attribute": "date_of_birth", "severity": "warn",
                  "reason": "date_of_birth: date outside the years 1 to 9999"}
    number_issue = {"rule": "nps_score.invalid", "attribute": "nps_score", "severity": "reject",
                    "reason": "nps_score: number is not finite (too large, infinite or NaN)"}
    assert result["issues"].to_list() == [[date_issue, number_issue], [date_issue, number_issue], []]


def issue_rules(result: pl.DataFrame) -> list[list[str]]:
    return result.select(pl.col("issues").list.eval(pl.element().struct.field("rule")))["issues"].to_list()


def standardise_names(make_project, names: list[str], **settings) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """One row per name, read from the First column of a CSV written with the csv module's quoting."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Id", "First", "Last"])
    writer.writerows([str(i), name, "Doe"] for i, name in enumerate(names, start=1))
    source = csv_source(columns={"First": "first_name", "Last": "last_name"})
    config = make_project(files={"crm.csv": buffer.getvalue()}, sources=[source], **settings)
    return standardise(extract(config.sources[0], config, NOW), config.sources[0], config)


FORMULAS = [
    "\uff1dHYPERLINK(\"http://x\",\"y\")",  # full-width = : NFKC makes it =
    "\uff20SUM(1)",                        # full-width @
    "\uff0dcmd|' /C calc'!A0",              # full-width -
    "\ufe62cmd|' /C calc'!A0",              # small form variant of +
    "\u200b=1+1",                           # a zero-width space before =
    "\u202e=1+1",                           # a bidi override before =
    "\u3000=1+1",                           # an ideographic space before =
    "\n=1+1",                               # a newline before =: standardisation trims it away
    "=1+1",
    "\t1",
]


@pytest.mark.parametrize("value", FORMULAS)
def test_a_formula_is_found_in_the_form_standardisation_gives_it(make_project, value: str) -> None:
    result = standardise_names(make_project, [value, "Ada"])
    assert "input.formula_like" in issue_rules(result)[0]
    assert issue_rules(result)[1] == []


@pytest.mark.parametrize("value", ["+44 20 7946 0018", "\uff0b44 20 7946 0018", "-3", "\uff0d3", "Jean-Luc", "a=b"])
def test_numbers_phones_and_inner_signs_are_not_formulas(make_project, value: str) -> None:
    assert "input.formula_like" not in issue_rules(standardise_names(make_project, [value]))[0]


FORMAT_CHARACTERS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
                     "\u200e", "\u200f", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


@pytest.mark.parametrize("character", FORMAT_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in FORMAT_CHARACTERS])
def test_format_characters_are_removed_and_flagged_as_a_warning(make_project, character: str) -> None:
    result = standardise_names(make_project, [f"A{character}da", "Ada"])
    assert result["first_name"].to_list() == ["Ada", "Ada"]
    flagged = result["issues"].to_list()[0]
    assert flagged == [{"rule": "input.format_characters", "attribute": "first_name", "severity": "warn",
                        "reason": "first_name: contains invisible format characters (bidi controls, zero-width characters)"}]
    assert result["issues"].to_list()[1] == []
    assert character in result["source_values"][0]  # the row as read keeps them (JSON text, not escaped)


def test_a_recency_date_after_the_day_the_row_was_read_is_kept_and_warned(make_project) -> None:
    schema = {**SCHEMA, "attributes": {**SCHEMA["attributes"], "customer_since": {"kind": "date"}}}
    # NOW is 2026-06-30; a source a time zone east of UTC may already be on the next day.
    content = "Id,First,Since\n1,Ada,01/01/2090\n2,Alan,01/07/2026\n3,Grace,02/07/2026\n4,Linus,30/06/2026\n5,Zed,\n"
    source = csv_source(columns={"First": "first_name", "Since": "customer_since"})
    config = make_project(files={"crm.csv": content}, sources=[source], schema=schema,
                          survivorship={"recency_attribute": "customer_since"})
    result = standardise(extract(config.sources[0], config, NOW), config.sources[0], config)
    assert result["customer_since"].to_list() == [dt.date(2090, 1, 1), dt.date(2026, 7, 1), dt.date(2026, 7, 2),
                                                  dt.date(2026, 6, 30), None]
    future = {"rule": "customer_since.future", "attribute": "customer_since", "severity": "warn",
              "reason": "customer_since: recency date later than the day the row was read"}
    assert result["issues"].to_list() == [[future], [], [future], [], []]


def test_a_future_date_of_an_attribute_that_is_not_the_recency_is_not_judged_here(make_project) -> None:
    schema = {**SCHEMA, "attributes": {**SCHEMA["attributes"], "customer_since": {"kind": "date"}}}
    source = csv_source(columns={"First": "first_name", "Since": "customer_since"})
    config = make_project(files={"crm.csv": "Id,First,Since\n1,Ada,01/01/2090\n"}, sources=[source], schema=schema)
    result = standardise(extract(config.sources[0], config, NOW), config.sources[0], config)
    assert result["issues"].to_list() == [[]]


def test_a_table_standardised_in_batches_gives_the_rows_of_the_whole(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse
    from cmdm_pipeline.stages import standardise as stage
    from cmdm_pipeline.tables import raw_table

    lines = GOOD_CSV.splitlines()
    # Ids shared across batches of two: row 4 repeats row 1 exactly, rows 2 and 7 disagree; row 6 has no id.
    content = "\n".join([*lines, lines[1], "4,Kay,X,k@example.org,,,GB,", ",No,Id,,,,GB,",
                         lines[2].replace("Alan", "Alana")]) + "\n"
    config = make_project(files={"crm.csv": content})
    source = config.sources[0]
    raw = extract(source, config, NOW)
    whole = standardise(raw, source, config)
    store = open_warehouse(config)
    store.replace({raw_table(source): raw})
    monkeypatch.setattr(stage, "BATCH_ROWS", 2)
    batches: list[pl.DataFrame] = []

    def parts(read):  # type: ignore[no-untyped-def]
        for batch in stage.standardise_table(read, raw_table(source), source, config):
            batches.append(batch)
            yield {"standardised_customers": batch}

    store.replace_in_parts(parts)
    assert [b.height for b in batches] == [2, 2, 2, 1]
    assert pl.concat(batches).equals(whole)
    rules = dict(zip(whole["source_row_number"], whole["issues"].list.eval(pl.element().struct.field("rule")), strict=True))
    assert [rules[row].to_list() for row in (1, 2, 4, 6, 7)] == [
        [], ["input.duplicate_id"], ["input.duplicate_id"], ["input.missing_id"], ["input.duplicate_id"]]
