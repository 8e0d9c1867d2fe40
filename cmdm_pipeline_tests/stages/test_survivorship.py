"""Golden records: each rule picks its value, ties are stable, lineage names the winner."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.config import SurvivorshipConfig
from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline.stages.survivorship import build_golden_records

SCHEMA = CustomerSchema.model_validate({"attributes": {
    "email": {"kind": "email"}, "phone": {"kind": "phone"}, "city": {"kind": "city"},
    "last_name": {"kind": "person_name"}, "seen_on": {"kind": "date"},
}})
AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def records() -> pl.DataFrame:
    rows = [
        # source, id, trust, type, email, phone, city, last_name, seen_on
        ("erp", "1", 1, "customer", "old@x.org", None, "Leeds", "Smith", dt.date(2020, 1, 1)),
        ("shop", "7", 3, "customer", "new@x.org", "+441", "York", "Smith", dt.date(2025, 1, 1)),
        ("crm", "3", 2, "lead", None, "+442", "York", "Smyth", dt.date(2023, 1, 1)),
    ]
    frame = pl.DataFrame(rows, orient="row", schema=["source_system", "source_record_id", "trust_rank", "record_type",
                                                       "email", "phone", "city", "last_name", "seen_on"])
    return frame.with_columns(pl.lit("M1").alias("master_id"), pl.lit("person").alias("party_type"),
                              pl.lit(AT).alias("ingested_at"))


def test_each_rule_picks_its_winner() -> None:
    rules = SurvivorshipConfig(
        default="trust_rank", recency_attribute="seen_on", customer_provided_sources=["shop"],
        attributes={"email": "customer_provided", "phone": "most_recent", "city": "most_frequent"},
    )
    golden, lineage = build_golden_records(records(), SCHEMA, rules)
    row = golden.row(0, named=True)
    assert (row["email"], row["phone"], row["city"], row["last_name"]) == ("new@x.org", "+441", "York", "Smith")
    assert row["record_type"] == "customer" and row["record_count"] == 3 and row["source_count"] == 3
    assert lineage.filter(pl.col("attribute") == "phone").select("source_system", "rule").row(0) == ("shop", "most_recent")
    assert lineage.filter(pl.col("attribute") == "last_name").select("source_system", "rule").row(0) == ("erp", "trust_rank")


def test_most_complete_prefers_the_fullest_record() -> None:
    golden, _ = build_golden_records(records(), SCHEMA, SurvivorshipConfig(default="most_complete"))
    # Only shop fills all five attributes; erp lacks a phone, crm an e-mail.
    assert golden["email"].to_list() == ["new@x.org"]


def test_lead_becomes_customer_without_new_master() -> None:
    frame = records().filter(pl.col("source_system") == "crm")
    golden, _ = build_golden_records(frame, SCHEMA, SurvivorshipConfig())
    assert golden["record_type"].to_list() == ["lead"]
    golden, _ = build_golden_records(records(), SCHEMA, SurvivorshipConfig())
    assert golden["record_type"].to_list() == ["customer"] and golden["master_id"].to_list() == ["M1"]


def test_people_point_to_their_organisation_and_surveys_attach() -> None:
    schema = CustomerSchema.model_validate({"attributes": {
        "last_name": {"kind": "person_name"}, "organisation_name": {"kind": "organisation_name"},
        "nps_score": {"kind": "number"}, "responded_on": {"kind": "date"},
    }})
    rows = [
        ("M1", "person", "crm", "1", "Smith", "Acme Ltd", None, None),
        ("M1", "person", "survey", "9", "Smith", None, 3.0, dt.date(2026, 1, 1)),
        ("M1", "person", "survey", "8", "Smith", None, 9.0, dt.date(2026, 3, 1)),
        ("M2", "organisation", "erp", "5", None, "ACME LTD", None, None),
    ]
    frame = pl.DataFrame(rows, orient="row", schema=["master_id", "party_type", "source_system", "source_record_id",
                                                      "last_name", "organisation_name", "nps_score", "responded_on"])
    frame = frame.with_columns(pl.lit(1).alias("trust_rank"), pl.lit("customer").alias("record_type"), pl.lit(AT).alias("ingested_at"))
    rules = SurvivorshipConfig(survey_score_attribute="nps_score", survey_date_attribute="responded_on")
    golden, _ = build_golden_records(frame, schema, rules)
    person = golden.filter(pl.col("master_id") == "M1").row(0, named=True)
    assert person["organisation_master_id"] == "M2"
    assert (person["nps_latest_score"], person["nps_latest_date"], person["nps_responses"]) == (9.0, dt.date(2026, 3, 1), 2)
    assert golden.filter(pl.col("master_id") == "M2")["organisation_master_id"].to_list() == [None]


# Records were read at AT (2026-01-01 00:00 UTC); a source east of UTC may already be on 2026-01-02.
@pytest.mark.parametrize(
    ("shop_seen_on", "phone"),
    [
        (dt.date(2025, 1, 1), "+441"),   # the latest believable date wins
        (dt.date(2026, 1, 2), "+441"),   # a day ahead of UTC: still believable
        (dt.date(2026, 1, 3), "+442"),   # later than the day it was read: ranks last
        (dt.date(2090, 1, 1), "+442"),
    ],
)
def test_a_recency_date_after_the_day_it_was_read_never_wins_most_recent(shop_seen_on: dt.date, phone: str) -> None:
    frame = records().with_columns(
        pl.when(pl.col("source_system") == "shop").then(pl.lit(shop_seen_on)).otherwise("seen_on").alias("seen_on"))
    rules = SurvivorshipConfig(recency_attribute="seen_on", attributes={"phone": "most_recent", "seen_on": "most_recent"})
    golden, _ = build_golden_records(frame, SCHEMA, rules)
    assert golden["phone"].to_list() == [phone]
    # The date itself is kept: with no believable date beside it, it is still the record's value.
    alone, _ = build_golden_records(frame.filter(pl.col("source_system") == "shop"), SCHEMA, rules)
    assert alone["seen_on"].to_list() == [shop_seen_on]


def test_a_future_dated_survey_answer_is_not_the_latest() -> None:
    schema = CustomerSchema.model_validate({"attributes": {"nps_score": {"kind": "number"}, "seen_on": {"kind": "date"}}})
    frame = pl.DataFrame({
        "master_id": ["M1", "M1"], "party_type": ["person"] * 2, "source_system": ["survey"] * 2,
        "source_record_id": ["1", "2"], "nps_score": [9.0, 3.0], "seen_on": [dt.date(2090, 1, 1), dt.date(2025, 6, 1)],
    }).with_columns(pl.lit(1).alias("trust_rank"), pl.lit("customer").alias("record_type"), pl.lit(AT).alias("ingested_at"))
    rules = SurvivorshipConfig(recency_attribute="seen_on", survey_score_attribute="nps_score")
    golden, _ = build_golden_records(frame, schema, rules)
    assert golden["nps_latest_score"].to_list() == [3.0]
