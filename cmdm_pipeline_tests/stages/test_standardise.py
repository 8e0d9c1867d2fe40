"""Standardising a whole source: one row out per row in, typed columns, issues per row."""

from __future__ import annotations

import datetime as dt

import polars as pl

from cmdm_pipeline.stages.extract import extract
from cmdm_pipeline.stages.standardise import standardise, standardised_columns
from cmdm_pipeline_tests.conftest import GOOD_CSV, NOW, csv_source


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
