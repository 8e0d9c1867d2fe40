"""The sample-data generator: determinism, file contracts, ground truth, overlap and planted defects."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import phonenumbers
import pytest

from cmdm_pipeline.sample.generator import generate, main, parse_args
from cmdm_pipeline.sample.world import World

REFERENCE_DATE = dt.date(2026, 6, 30)

# The column contract cmdm.yaml maps; spelled out here so a rename breaks a test, not the pipeline.
CSV_SOURCES = {
    "crm": ("crm_contacts.csv", ",", [
        "Id", "Status", "FirstName", "LastName", "Company", "Title", "Email", "Phone", "MobilePhone",
        "MailingStreet", "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry", "CreatedDate",
    ]),
    "erp": ("erp_customers.csv", ";", [
        "KUNNR", "ACCOUNT_TYPE", "COMPANY_NAME", "LAST_NAME", "FIRST_NAME", "BIRTH_DT", "STREET", "POST_CODE",
        "CITY", "REGION", "COUNTRY", "TEL", "EMAIL", "VAT_ID", "CREATED_ON",
    ]),
    "pos": ("pos_loyalty.csv", ",", [
        "CardNo", "Forename", "Surname", "DOB", "Email", "Mobile", "PostCode", "Country", "Tier", "StoreId", "JoinDate",
    ]),
    "survey": ("survey_nps.csv", ",", [
        "ResponseId", "RespondentEmail", "FirstName", "LastName", "Country", "Score", "RespondedAt", "Comment",
    ]),
}
SHOP_KEYS = [
    "customer_id", "email", "first_name", "last_name", "phone", "date_of_birth", "gender", "billing_address",
    "created_at", "accepts_marketing",
]
SHOP_ADDRESS_KEYS = ["line1", "line2", "city", "region", "postal_code", "country"]
ID_COLUMNS = {"crm": "Id", "erp": "KUNNR", "shop": "customer_id", "pos": "CardNo", "survey": "ResponseId"}
ALL_FILES = [
    "crm_contacts.csv", "erp_customers.csv", "shop_customers.jsonl", "pos_loyalty.csv", "survey_nps.csv",
    "truth/ground_truth.csv",
]
EMAIL_FIELDS = {"crm": "Email", "erp": "EMAIL", "shop": "email", "pos": "Email", "survey": "RespondentEmail"}
VALID_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def read_csv(path: Path, delimiter: str = ",") -> tuple[list[str], list[dict[str, str]]]:
    """Returns the header and the rows of a CSV file."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        return list(reader.fieldnames or []), list(reader)


def read_sources(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Returns every source's rows; shop rows are the parsed JSON objects."""
    tables: dict[str, list[dict[str, Any]]] = {
        source: read_csv(out / filename, delimiter)[1] for source, (filename, delimiter, _) in CSV_SOURCES.items()
    }
    with (out / "shop_customers.jsonl").open(encoding="utf-8") as handle:
        tables["shop"] = [json.loads(line) for line in handle]
    return tables


def read_truth(out: Path) -> list[dict[str, str]]:
    """Returns the ground-truth rows."""
    return read_csv(out / "truth" / "ground_truth.csv")[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A 600-row sample and the counts generate() returned."""
    out = tmp_path_factory.mktemp("small")
    return out, generate(600, 7, out)


@pytest.fixture(scope="module")
def sample10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 10,000-row sample every planted rule-breaker must appear in."""
    out = tmp_path_factory.mktemp("sample10k")
    generate(10000, 42, out)
    return out


# -- determinism


def test_same_seed_gives_identical_bytes(small: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    first, _ = small
    generate(600, 7, tmp_path)
    for name in ALL_FILES:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_different_seed_gives_different_content(small: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    first, _ = small
    generate(600, 8, tmp_path)
    for name in ALL_FILES:
        assert (first / name).read_bytes() != (tmp_path / name).read_bytes(), name


def test_output_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    # Faker draws some values from sets; set order changes with PYTHONHASHSEED between processes.
    for hash_seed in ("1", "2"):
        subprocess.run(
            [sys.executable, "-m", "cmdm_pipeline.sample", "--records", "600", "--seed", "3",
             "--out", str(tmp_path / hash_seed)],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
    for name in ALL_FILES:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


# -- file contracts


def test_every_file_has_exactly_the_declared_header(small: tuple[Path, dict[str, int]]) -> None:
    out, _ = small
    for filename, delimiter, columns in CSV_SOURCES.values():
        header, rows = read_csv(out / filename, delimiter)
        assert header == columns, filename
        assert rows and all(None not in row and len(row) == len(columns) for row in rows), filename
    assert read_csv(out / "truth" / "ground_truth.csv")[0] == [
        "source_system", "source_record_id", "person_id", "organisation_id",
    ]


def test_every_shop_line_has_exactly_the_declared_keys(small: tuple[Path, dict[str, int]]) -> None:
    out, _ = small
    shop = read_sources(out)["shop"]
    assert shop
    for row in shop:
        assert list(row) == SHOP_KEYS
        assert list(row["billing_address"]) == SHOP_ADDRESS_KEYS
        assert isinstance(row["customer_id"], int) and isinstance(row["accepts_marketing"], bool)


def test_total_rows_are_within_15_percent_of_records(small: tuple[Path, dict[str, int]]) -> None:
    out, counts = small
    tables = read_sources(out)
    files = {source: CSV_SOURCES[source][0] if source != "shop" else "shop_customers.jsonl" for source in tables}
    assert {files[source]: len(rows) for source, rows in tables.items()} == {
        name: rows for name, rows in counts.items() if name != "truth/ground_truth.csv"
    }
    assert abs(sum(len(rows) for rows in tables.values()) - 600) <= 0.15 * 600


def test_source_shares_are_roughly_as_designed(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    total = sum(len(rows) for rows in tables.values())
    shares = {source: len(rows) / total for source, rows in tables.items()}
    designed = {"crm": 0.20, "erp": 0.20, "shop": 0.25, "pos": 0.20, "survey": 0.15}
    for source, share in designed.items():
        assert abs(shares[source] - share) < 0.04, (source, shares[source])


def test_dates_are_written_in_each_source_format(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    formats = [
        ("crm", "CreatedDate", "%Y-%m-%d"), ("erp", "BIRTH_DT", "%d.%m.%Y"), ("erp", "CREATED_ON", "%Y%m%d"),
        ("pos", "DOB", "%d/%m/%Y"), ("pos", "JoinDate", "%d/%m/%Y"), ("survey", "RespondedAt", "%d %b %Y"),
        ("shop", "date_of_birth", "%Y-%m-%d"), ("shop", "created_at", "%Y-%m-%dT%H:%M:%SZ"),
    ]
    for source, column, fmt in formats:
        values = [row[column] for row in tables[source] if row[column]]
        assert values, (source, column)
        for value in values:
            dt.datetime.strptime(value, fmt)  # raises on a wrong layout


# -- ground truth


def test_ground_truth_lists_every_source_row_and_nothing_else(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    truth = read_truth(sample10k)
    for source, rows in tables.items():
        written = Counter(str(row[ID_COLUMNS[source]]) for row in rows)
        listed = Counter(row["source_record_id"] for row in truth if row["source_system"] == source)
        assert written == listed, source
    assert {row["source_system"] for row in truth} == set(ID_COLUMNS)


def test_ground_truth_names_a_person_for_every_person_row(sample10k: Path) -> None:
    truth = read_truth(sample10k)
    erp = read_sources(sample10k)["erp"]
    business = {row["KUNNR"] for row in erp if row["ACCOUNT_TYPE"] == "B"}
    for row in truth:
        assert re.fullmatch(r"(P\d{6})?", row["person_id"]) and re.fullmatch(r"(O\d{5})?", row["organisation_id"])
        if not row["person_id"]:
            # Only ERP business accounts whose contact person is unknown have no person.
            assert row["source_system"] == "erp" and row["source_record_id"] in business
            assert row["organisation_id"]


def test_the_one_empty_id_is_in_the_truth_with_its_person(sample10k: Path) -> None:
    truth = read_truth(sample10k)
    empty = [row for row in truth if not row["source_record_id"]]
    assert len(empty) == 1 and empty[0]["person_id"]


# -- overlap and hard negatives


def test_some_people_appear_in_three_or_more_sources(sample10k: Path) -> None:
    sources: dict[str, set[str]] = defaultdict(set)
    for row in read_truth(sample10k):
        if row["person_id"]:
            sources[row["person_id"]].add(row["source_system"])
    spread = Counter(len(found) for found in sources.values())
    assert spread[1] > spread[2] > 0 and spread[5] > 0
    assert sum(count for size, count in spread.items() if size >= 3) > 0.1 * len(sources)


def test_households_show_as_different_people_sharing_last_name_and_postcode(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    truth = {(row["source_system"], row["source_record_id"]): row["person_id"] for row in read_truth(sample10k)}
    people: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source, last, postcode in (("pos", "Surname", "PostCode"), ("crm", "LastName", "MailingPostalCode")):
        for row in tables[source]:
            key = (row[last].strip().casefold(), row[postcode].replace(" ", "").casefold())
            if all(key):
                people[key].add(truth[(source, row[ID_COLUMNS[source]])])
    assert sum(len(found) >= 2 for found in people.values()) >= 5


def test_world_has_households_namesakes_and_twins() -> None:
    world = World(10000, 3).build()
    assert len({person.person_id for person in world.persons}) == len(world.persons), "a person id names two people"
    homes = Counter(id(person.home) for person in world.persons)
    in_households = sum(size for size in homes.values() if size > 1)
    assert 0.05 < in_households / len(world.persons) < 0.2
    by_name: dict[tuple[str, str], set[tuple[dt.date, str]]] = defaultdict(set)
    by_home: dict[int, list[dt.date]] = defaultdict(list)
    for person in world.persons:
        by_name[(person.first_name, person.last_name)].add((person.dob, person.home.address.postcode))
        by_home[id(person.home)].append(person.dob)
    namesakes = sum(len(found) - 1 for found in by_name.values())
    assert 0.015 < namesakes / len(world.persons) < 0.08
    assert any(len(dobs) != len(set(dobs)) for dobs in by_home.values()), "no twins"
    assert 0.8 * 10000 / 2.2 < len(world.persons) < 1.2 * 10000 / 2.2


# -- planted rule breakers


def test_there_is_a_future_date_of_birth(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    births = [dt.datetime.strptime(row["DOB"], "%d/%m/%Y").date() for row in tables["pos"] if row["DOB"]]
    births += [dt.datetime.strptime(row["BIRTH_DT"], "%d.%m.%Y").date() for row in tables["erp"] if row["BIRTH_DT"]]
    births += [dt.date.fromisoformat(row["date_of_birth"]) for row in tables["shop"] if row["date_of_birth"]]
    future = [born for born in births if born > REFERENCE_DATE]
    assert 1 <= len(future) <= 20
    assert min(births) >= dt.date(1935, 6, 30)


def test_there_are_a_few_invalid_email_addresses(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    emails = [str(row[EMAIL_FIELDS[source]]).strip() for source, rows in tables.items() for row in rows
              if row[EMAIL_FIELDS[source]]]
    invalid = [email for email in emails if not VALID_EMAIL.match(email)]
    assert 3 <= len(invalid) <= 30
    assert any("@@" in email for email in invalid) and any("@" not in email for email in invalid)


def test_there_are_out_of_range_and_non_numeric_scores(sample10k: Path) -> None:
    scores = [row["Score"] for row in read_sources(sample10k)["survey"]]
    odd = {score for score in scores if not (score.isdigit() and 0 <= int(score) <= 10)}
    assert {"11", "-1", "ten"} <= odd
    assert len([score for score in scores if score in odd]) < 0.01 * len(scores)


def test_exactly_one_formula_value_sits_in_a_name_field(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    formulas = [
        (source, key) for source, rows in tables.items() for row in rows for key, value in row.items()
        if isinstance(value, str) and value.startswith("=")
    ]
    assert formulas == [("crm", "LastName")]


def test_there_are_rows_without_any_name(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    names = {"crm": ("FirstName", "LastName"), "shop": ("first_name", "last_name"),
             "pos": ("Forename", "Surname"), "survey": ("FirstName", "LastName")}
    nameless = [row for source in ("crm", "shop", "pos") for row in tables[source]
                if not row[names[source][0]] and not row[names[source][1]]]
    assert nameless


def test_pos_has_a_shared_card_number_and_an_exact_duplicate_row(sample10k: Path) -> None:
    rows = read_sources(sample10k)["pos"]
    by_card: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for row in rows:
        by_card[row["CardNo"]].append(tuple(row.values()))
    repeated = {card: found for card, found in by_card.items() if len(found) > 1}
    assert len(repeated) == 2
    kinds = sorted(len(set(found)) for found in repeated.values())
    assert kinds == [1, 2]  # one exact duplicate, one card number on two different rows
    assert all(re.fullmatch(r"\d{16}", card) for card in by_card)


def test_there_are_values_in_phone_fields_that_are_not_phones(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    values = [row["MobilePhone"] for row in tables["crm"]] + [row["TEL"] for row in tables["erp"]]
    values += [row["phone"] or "" for row in tables["shop"]] + [row["Mobile"] for row in tables["pos"]]
    assert {"n/a", "12"} & set(values)


# -- realistic values


def test_shop_phones_are_mostly_valid_for_the_billing_country(sample10k: Path) -> None:
    valid = total = 0
    for row in read_sources(sample10k)["shop"]:
        if row["phone"]:
            total += 1
            try:
                number = phonenumbers.parse(row["phone"], row["billing_address"]["country"].upper())
            except phonenumbers.NumberParseException:
                continue
            valid += phonenumbers.is_valid_number(number)
    assert total > 1000 and valid >= 0.9 * total


def test_countries_are_written_each_source_way(sample10k: Path) -> None:
    tables = read_sources(sample10k)
    assert {row["COUNTRY"] for row in tables["erp"]} <= {"GB", "US", "DE", "FR", "ES", "NL", "IT", "PL", "SE", "IE"}
    assert all(re.fullmatch(r"[A-Z]{3}", row["Country"]) for row in tables["pos"])
    shop = {row["billing_address"]["country"] for row in tables["shop"]}
    assert "GB" in shop and "gb" in shop
    crm = {row["MailingCountry"] for row in tables["crm"]}
    assert {"United Kingdom", "UK", "USA"} <= crm


# -- command line


def test_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in ("--records", "--seed", "--out"))


def test_defaults() -> None:
    args = parse_args([])
    assert (args.records, args.seed, args.out) == (10000, 42, Path("data/sample"))


def test_main_prints_a_line_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--records", "300", "--seed", "1", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ALL_FILES:
        assert (tmp_path / name).is_file()
        assert any(line.startswith(name) for line in lines), name


def test_a_work_email_is_found_when_every_short_variant_is_taken() -> None:
    from cmdm_pipeline.sample.world import WORK_EMAIL_PATTERNS, World

    world = World(100, 1)
    taken = {p.format(f="anna", l="berg", i="a") for p in WORK_EMAIL_PATTERNS} | {f"anna.berg{n}" for n in range(2, 10)}
    world.emails |= {f"{local}@acme.example" for local in taken}
    email = world._work_email("Anna", "Berg", "acme.example")  # before: drew among the eight for ever
    assert email not in {f"{local}@acme.example" for local in taken} and email.startswith("anna.berg")
    assert email.endswith("@acme.example") and email in world.emails
