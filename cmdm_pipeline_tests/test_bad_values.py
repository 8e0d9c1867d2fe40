"""Dates and numbers the later stages cannot hold, through the real job: caught at standardise, not at quality.

Issue 18, item 7: a year-0 birth date passed standardise and validate and failed the quality step
(Python's ``datetime.date`` holds years 1 to 9999 only); on a small file the same value made the
Pandera gate reject the whole table as structural.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline_tests.conftest import SCHEMA, csv_source

pytestmark = pytest.mark.integration

# date_of_birth keeps the default `invalid: warn` (as cmdm.yaml ships it); customer_since and nps_score reject.
BAD_VALUE_SCHEMA = {
    **SCHEMA,
    "attributes": {
        **SCHEMA["attributes"],
        "customer_since": {"kind": "date", "invalid": "reject"},
    },
}

# The formats the shipped ERP source declares, and a timestamp with an offset: its UTC date is what counts.
DATE_FORMATS = ["%d.%m.%Y", "%Y%m%d", "%Y-%m-%dT%H:%M:%S%z"]

ERP = """Id,First,Last,Email,DOB,Since,Score
1,Ada,Lovelace,ada@example.org,10.12.1985,20200101,7
2,Alan,Turing,alan@example.org,23.06.1912,01.01.2019,9
3,Grace,Hopper,grace@example.com,00000101,01.02.2020,8
4,Edsger,Dijkstra,edsger@example.org,0001-01-01T00:00:00+05:00,01.02.2020,6
5,Linus,Torvalds,linus@example.org,28.12.1969,05.05.-0001,5
6,Barbara,Liskov,barbara@example.org,07.11.1939,01.01.10000,5
7,Donald,Knuth,donald@example.org,10.01.1938,20200101,1e400
8,Frances,Allen,frances@example.org,04.08.1932,20200101,nan
9,John,Backus,john@example.org,03.12.1924,20200101,-1e400
10,Margaret,Hamilton,margaret@example.org,17.08.1936,00010101,4
11,Tony,Hoare,tony@example.org,11.01.1934,99991231,3
"""

# What each row's bad value looks like as written: none of it may appear in a reason or a warning.
WRITTEN = ("0000", "-0001", "10000", "1e400")


def run_job(config: ProjectConfig) -> dg.ExecuteInProcessResult:
    job = build_definitions(config).resolve_job_def(JOB_NAME)
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


@pytest.fixture
def project(make_project) -> ProjectConfig:  # type: ignore[no-untyped-def]
    source = csv_source(
        name="erp", path="erp.csv", date_formats=DATE_FORMATS,
        columns={"First": "first_name", "Last": "last_name", "Email": "email", "DOB": "date_of_birth",
                 "Since": "customer_since", "Score": "nps_score"},
    )
    # Five of eleven rows are held back on purpose; the rate limit is not what this test is about.
    return make_project(files={"erp.csv": ERP}, sources=[source], schema=BAD_VALUE_SCHEMA,
                        quality={"max_quarantine_rate": 1.0})


def test_unholdable_dates_and_numbers_are_caught_at_standardise(project: ProjectConfig) -> None:
    result = run_job(project)
    failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert result.success, failures
    warehouse = open_warehouse(project)

    recon = warehouse.read("run_reconciliation").row(0, named=True)
    assert (recon["rows_read"], recon["rows_validated"], recon["rows_quarantined"]) == (11, 6, 5)
    assert recon["balanced"]

    quarantined = dict(warehouse.read("quarantined_records").select("source_record_id", "reason").iter_rows())
    assert quarantined == {
        "5": "customer_since: date outside the years 1 to 9999",
        # Five year digits do not fit %Y: the parser refuses the year before its range is looked at.
        "6": "customer_since: not a date in the source's formats (%d.%m.%Y, %Y%m%d, %Y-%m-%dT%H:%M:%S%z)",
        "7": "nps_score: number is not finite (too large, infinite or NaN)",
        "8": "nps_score: number is not finite (too large, infinite or NaN)",
        "9": "nps_score: number is not finite (too large, infinite or NaN)",
    }

    validated = warehouse.read("validated_customers").sort("source_record_id")
    warned = validated.filter(pl.col("source_record_id").is_in(["3", "4"]))
    assert warned["date_of_birth"].to_list() == [None, None]
    assert warned["warnings"].to_list() == [["date_of_birth.invalid"], ["date_of_birth.invalid"]]
    # The first and last days Python holds are dates like any other, through every stage.
    edges = validated.filter(pl.col("source_record_id").is_in(["10", "11"]))["customer_since"].to_list()
    assert edges == [dt.date(1, 1, 1), dt.date(9999, 12, 31)]
    reasons = warehouse.read("standardised_customers").select(pl.col("issues").explode().struct.field("reason"))
    assert reasons.drop_nulls().to_series().to_list().count("date_of_birth: date outside the years 1 to 9999") == 2
    shown = " ".join([*quarantined.values(), *reasons.drop_nulls().to_series()])
    assert not [text for text in WRITTEN if text in shown]

    report = warehouse.read("quality_report")
    assert report["run_id"].unique().to_list() == [result.run_id]
    assert report.filter(pl.col("metric") == "rule").height > 0


# Issue 19, item 11: a full-width formula, invisible characters, a 2090 recency date, "7,5" as a whole number.
UNICODE_SCHEMA = {
    **SCHEMA,
    "attributes": {
        **SCHEMA["attributes"],
        "customer_since": {"kind": "date"},
        "nps_score": {"kind": "number", "invalid": "reject",
                      "rules": [{"range": {"min": 0, "max": 10}}, {"pattern": "-?[0-9]+", "name": "nps_score.whole_number"}]},
    },
}
UNICODE_CRM = (
    "Id,First,Last,Email,Since,Score\n"
    "1,Ada,Lovelace,ada@example.org,01.01.2090,7\n"
    '2,"\uff1dHYPERLINK(""http://x"",""y"")",Evil,evil@example.org,01.01.2020,5\n'
    '3,Alan,Turing,alan@example.org,01.01.2020,"7,5"\n'
)
# The same person in the shop, her e-mail with a zero-width space and her name behind a bidi override.
UNICODE_SHOP = "Id,First,Last,Email,Since,Score\n1,\u202eAda,Byron,ada\u200b@example.org,01.01.2021,8\n"


def test_unicode_tricks_and_implausible_values_are_caught(make_project) -> None:  # type: ignore[no-untyped-def]
    columns = {"First": "first_name", "Last": "last_name", "Email": "email", "Since": "customer_since",
               "Score": "nps_score"}
    sources = [csv_source(name=name, path=f"{name}.csv", trust_rank=rank, date_formats=["%d.%m.%Y"], columns=columns)
               for name, rank in (("crm", 1), ("shop", 2))]
    project = make_project(
        files={"crm.csv": UNICODE_CRM, "shop.csv": UNICODE_SHOP}, sources=sources, schema=UNICODE_SCHEMA,
        survivorship={"recency_attribute": "customer_since", "attributes": {"last_name": "most_recent"}},
        matching={"deterministic_rules": [["email"]]}, quality={"max_quarantine_rate": 1.0},
    )
    result = run_job(project)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    warehouse = open_warehouse(project)

    quarantined = warehouse.read("quarantined_records").sort("source_record_id")
    assert quarantined.select("source_system", "source_record_id", "rules_broken").rows() == [
        ("crm", "2", ["input.formula_like"]), ("crm", "3", ["nps_score.whole_number"])]
    assert "HYPERLINK" not in " ".join(quarantined["reason"])

    validated = warehouse.read("validated_customers").sort("source_system")
    assert validated.select("source_system", "first_name", "email", "customer_since", "warnings").rows() == [
        ("crm", "Ada", "ada@example.org", dt.date(2090, 1, 1), ["customer_since.future"]),
        ("shop", "Ada", "ada@example.org", dt.date(2021, 1, 1), ["input.format_characters"]),
    ]
    golden = warehouse.read("golden_customers")
    # One person (the invisible character no longer hides her e-mail); 2090 does not make crm the most recent.
    assert golden.select("record_count", "last_name").rows() == [(2, "Byron")]
