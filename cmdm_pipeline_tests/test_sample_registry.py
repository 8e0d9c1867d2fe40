"""The person-registry generator: determinism, file contracts, ground truth, the planted phenomena
at plausible rates, and that the shipped pipeline reads what it writes."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import os
import random
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmdm_pipeline.config import ProtectionConfig, load_config
from cmdm_pipeline.sample.common import REFERENCE_DATE
from cmdm_pipeline.sample.noise import fold_accents
from cmdm_pipeline.sample.registry import (
    MISSING,
    REGISTRY_ATTRIBUTES,
    REGISTRY_FILE,
    Culture,
    Noise,
    Person,
    Population,
    generate_registry,
    main,
    nicknames_of,
    registry_source,
    romanise,
    spell,
    spelling_system,
)
from cmdm_pipeline.stages.extract import extract
from cmdm_pipeline.stages.standardise import standardise
from cmdm_pipeline.stages.validate import validate
from cmdm_pipeline_tests.conftest import REPO_ROOT

# The column contract registry_source() maps; spelled out so a rename breaks a test, not the pipeline.
COLUMNS = ["RecordId", "GivenName", "FamilyName", "BirthDate", "BirthPlace", "PostCode", "Occupation", "Gender"]
TRUTH_COLUMNS = ["source_system", "source_record_id", "person_id", "organisation_id"]
MISSING_COLUMNS = {
    "GivenName": "given", "FamilyName": "family", "BirthDate": "birth_date", "BirthPlace": "birth_place",
    "PostCode": "postcode", "Occupation": "occupation", "Gender": "gender",
}
NON_LATIN = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")
FILES = [REGISTRY_FILE, "truth/ground_truth.csv"]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Returns the header and the rows of a CSV file."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def owners(out: Path) -> dict[str, str]:
    """Returns the true person of each RecordId."""
    return {row["source_record_id"]: row["person_id"] for row in read_csv(out / "truth" / "ground_truth.csv")[1]}


def fold(text: str) -> str:
    """Returns ``text`` without accents and case, for comparing spellings."""
    return fold_accents(text).casefold()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-row registry, seed 7."""
    out = tmp_path_factory.mktemp("small")
    generate_registry(400, 7, out)
    return out


@pytest.fixture(scope="module")
def registry5k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]], dict[str, Person]]:
    """A 5,000-row registry, its rows, and the true people behind them (built again from the seed)."""
    out = tmp_path_factory.mktemp("registry5k")
    generate_registry(5000, 11, out)
    people = {person.person_id: person for person in Population(5000, 11).build()}
    return out, read_csv(out / REGISTRY_FILE)[1], people


def person_of(out: Path) -> Any:
    """Returns a function from a row to its true person id."""
    truth = owners(out)
    return lambda row: truth[row["RecordId"]]


# -- determinism


def test_same_seed_gives_identical_bytes(small: Path, tmp_path: Path) -> None:
    generate_registry(400, 7, tmp_path)
    for name in FILES:
        assert (small / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_different_seed_gives_different_content(small: Path, tmp_path: Path) -> None:
    generate_registry(400, 8, tmp_path)
    for name in FILES:
        assert (small / name).read_bytes() != (tmp_path / name).read_bytes(), name


def test_output_does_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    # Some Faker providers draw from sets (it_IT towns); set order changes with PYTHONHASHSEED.
    for hash_seed in ("1", "2"):
        subprocess.run(
            [sys.executable, "-m", "cmdm_pipeline.sample.registry", "--records", "300", "--seed", "3",
             "--out", str(tmp_path / hash_seed), "--emails"],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
    for name in FILES:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def test_emails_add_a_column_and_change_nothing_else(small: Path, tmp_path: Path) -> None:
    generate_registry(400, 7, tmp_path, emails=True)
    header, rows = read_csv(tmp_path / REGISTRY_FILE)
    assert header == [*COLUMNS, "Email"]
    assert [{c: row[c] for c in COLUMNS} for row in rows] == read_csv(small / REGISTRY_FILE)[1]
    assert (tmp_path / "truth" / "ground_truth.csv").read_bytes() == (small / "truth" / "ground_truth.csv").read_bytes()


# -- file contracts and ground truth


@pytest.mark.parametrize("records", [1, 2, 399])
def test_writes_exactly_the_records_asked_for(records: int, tmp_path: Path) -> None:
    assert generate_registry(records, 5, tmp_path) == {"registry": records}
    assert len(read_csv(tmp_path / REGISTRY_FILE)[1]) == records


def test_header_ids_and_truth(small: Path) -> None:
    header, rows = read_csv(small / REGISTRY_FILE)
    assert header == COLUMNS
    assert all(None not in row and len(row) == len(COLUMNS) for row in rows)
    ids = [row["RecordId"] for row in rows]
    assert len(set(ids)) == len(ids) == 400 and all(re.fullmatch(r"R\d{7}", i) for i in ids)
    truth_header, truth = read_csv(small / "truth" / "ground_truth.csv")
    assert truth_header == TRUTH_COLUMNS
    assert Counter(row["source_record_id"] for row in truth) == Counter(ids)
    assert all(row["source_system"] == "registry" and row["organisation_id"] == "" for row in truth)
    assert all(re.fullmatch(r"P\d{7}", row["person_id"]) for row in truth)


def test_values_are_written_in_the_declared_formats(registry5k: tuple[Path, list, dict]) -> None:
    _, rows, _ = registry5k
    for row in rows:
        if row["BirthDate"]:
            dt.date.fromisoformat(row["BirthDate"])
        assert row["Gender"] in ("", "m", "f", "male", "female", "M", "F")


def test_rows_are_shuffled_not_grouped_by_person(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, _ = registry5k
    person = person_of(out)
    neighbours = sum(person(a) == person(b) for a, b in zip(rows, rows[1:], strict=False))
    assert neighbours < 0.02 * len(rows)
    ids = [int(row["RecordId"][1:]) for row in rows]
    assert ids != sorted(ids)


def test_registry_source_and_attributes_fit_the_config_format(tmp_path: Path) -> None:
    source = registry_source(tmp_path / REGISTRY_FILE, emails=True)
    assert source["columns"]["Email"] == "email" and "Email" not in registry_source(tmp_path)["columns"]
    assert set(source["columns"]) == {*COLUMNS[1:], "Email"}
    assert REGISTRY_ATTRIBUTES["birth_place"]["kind"] == "city" and REGISTRY_ATTRIBUTES["occupation"]["match"]


def test_command_line_writes_both_files(tmp_path: Path) -> None:
    lines: list[str] = []
    assert main(["--records", "50", "--seed", "2", "--out", str(tmp_path), "--emails"], echo=lines.append) == 0
    assert read_csv(tmp_path / REGISTRY_FILE)[0] == [*COLUMNS, "Email"]
    assert len(owners(tmp_path)) == 50 and "50 rows" in lines[0]


# -- people and their records


def test_records_per_person_has_singletons_and_a_tail(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, _ = registry5k
    per_person = Counter(owners(out).values())
    sizes = Counter(per_person.values())
    people = len(per_person)
    assert 0.33 < sizes[1] / people < 0.47
    assert 2.5 <= len(rows) / people <= 3.5
    assert sum(n for size, n in sizes.items() if 2 <= size <= 6) / people > 0.4
    assert sum(n for size, n in sizes.items() if size >= 10) > 0 and max(per_person.values()) <= 25


def test_records_of_one_person_differ_in_their_names(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, _ = registry5k
    person = person_of(out)
    names: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for row in rows:
        names[person(row)].add((row["GivenName"], row["FamilyName"]))
    several = [p for p, count in Counter(map(person, rows)).items() if count > 1]
    assert sum(len(names[p]) > 1 for p in several) / len(several) > 0.7


def test_missing_values_per_column_are_near_their_rates(registry5k: tuple[Path, list, dict]) -> None:
    _, rows, _ = registry5k
    for column, key in MISSING_COLUMNS.items():
        share = sum(not row[column] for row in rows) / len(rows)
        assert abs(share - MISSING[key]) < 0.025, (column, share)


def test_namesakes_are_different_people_with_the_same_name(registry5k: tuple[Path, list, dict]) -> None:
    _, _, people = registry5k
    by_name = Counter((p.given, p.family) for p in people.values())
    shared = [name for name, count in by_name.items() if count > 1]
    assert len(shared) >= 20
    given, family = shared[0]
    births = {p.birth for p in people.values() if (p.given, p.family) == (given, family)}
    assert len(births) > 1


# -- names


def test_nicknames_are_used_now_and_then(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, people = registry5k
    person = person_of(out)
    nicknamed = 0
    for row in rows:
        p = people[person(row)]
        nicks = {fold(romanise(n, p.culture.script, "bgn") if p.culture.script == "ru" else n)
                 for n in nicknames_of(p.given, p.culture.language, p.gender)}
        nicknamed += fold(row["GivenName"]) in nicks - {fold(p.given)}
    assert 0.02 < nicknamed / len(rows) < 0.12


def test_nicknames_come_from_the_package_and_own_tables() -> None:
    assert "Bob" in nicknames_of("Robert", "en", "m")
    assert "Jenny" in nicknames_of("Jennifer", "en", "f")
    assert nicknames_of("Дмитрий", "ru", "m") == ("Дима",)
    assert nicknames_of("Giuseppe", "it", "m")[0] == "Peppe"
    # The nicknames package knows English nicknames: a Polish Anna is not an Annie.
    assert "Annie" in nicknames_of("Anna", "en", "f") and nicknames_of("Anna", "pl", "f") == ()


def test_cyrillic_and_greek_names_are_sometimes_kept_in_their_script(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, people = registry5k
    person = person_of(out)
    scripted = [row for row in rows if NON_LATIN.search(row["GivenName"] + row["FamilyName"])]
    assert 0.01 < len(scripted) / len(rows) < 0.06
    assert {people[person(row)].culture.script for row in scripted} == {"ru", "uk", "el"}
    # The same person also appears romanised.
    romanised = {person(row) for row in rows if row["FamilyName"] and not NON_LATIN.search(row["FamilyName"])}
    assert any(person(row) in romanised for row in scripted)


def test_romanisation_systems_spell_one_name_several_ways() -> None:
    spellings = {system: romanise("Юрий", "ru", system)
                 for system in ("bgn", "icao", "informal", "german", "french", "scholarly")}
    assert spellings == {"bgn": "Yuriy", "icao": "Iurii", "informal": "Yury", "german": "Juri",
                         "french": "Iouri", "scholarly": "Jurij"}
    assert {romanise("Щукин", "ru", s) for s in ("bgn", "informal", "german")} == {"Shchukin", "Schukin",
                                                                                   "Schtschukin"}
    assert [romanise("Хрущёв", "ru", s)[:2] for s in ("bgn", "informal", "german")] == ["Kh", "Hr", "Ch"]
    assert romanise("Олександр", "uk", "national") == "Oleksandr"
    assert romanise("Андрій", "uk", "national") == "Andrii" and romanise("Андрій", "uk", "bgn") == "Andriy"
    assert romanise("Χρήστος", "el", "elot") == "Christos" and romanise("Χρήστος", "el", "bgn") == "Khristos"
    assert romanise("Δημήτριος", "el", "classical") == "Demetrios"
    assert romanise("ЮРИЙ", "ru", "bgn") == "YURIY" and romanise("Юрий", "ru", "original") == "Юрий"


def test_german_umlauts_are_kept_or_written_out_alike_in_both_names() -> None:
    noise = Noise(random.Random(1))
    german = Culture("de_DE", 1.0, "latin", ("web.de",))
    written: Counter[tuple[str, str]] = Counter()
    for _ in range(1000):
        system = spelling_system(german, noise)
        written[spell("Jürgen", german, system), spell("Müller", german, system)] += 1
    assert set(written) == {("Jürgen", "Müller"), ("Juergen", "Mueller"), ("Jurgen", "Muller")}
    assert written["Jürgen", "Müller"] > 600


def test_name_typos_swaps_and_initials_occur(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, people = registry5k
    person = person_of(out)
    latin = [(row, people[person(row)]) for row in rows if people[person(row)].culture.script == "latin"]
    clean = {"given": 0, "swapped": 0, "initial": 0}
    for row, p in latin:
        spellings = {fold(p.given), fold(p.given.translate(str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})))}
        clean["given"] += fold(row["GivenName"]) in spellings
        clean["swapped"] += fold(row["FamilyName"]) == fold(p.given) and fold(row["GivenName"]) == fold(p.family)
        clean["initial"] += bool(re.fullmatch(r"\w\.", row["GivenName"]))
    assert 0.5 < clean["given"] / len(latin) < 0.85  # typos, nicknames, initials, middle names, blanks
    assert 0.005 < clean["swapped"] / len(latin) < 0.05
    assert 0.01 < clean["initial"] / len(latin) < 0.06


# -- birth dates, places, postcodes, occupations


def test_birth_dates_carry_the_registry_errors(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, people = registry5k
    person = person_of(out)
    kinds: Counter[str] = Counter()
    for row in rows:
        if not row["BirthDate"]:
            continue
        written, true = dt.date.fromisoformat(row["BirthDate"]), people[person(row)].birth
        if written == true:
            kinds["exact"] += 1
        elif (written.month, written.day) == (true.day, true.month):
            kinds["swapped"] += 1
        elif abs((written - true).days) <= 7:
            kinds["days_off"] += 1
        elif (written.year, written.month, written.day) == (true.year, 1, 1):
            kinds["year_only"] += 1
        elif written.year != true.year and written.month == true.month:
            kinds["year_typo"] += 1
    dated = sum(1 for row in rows if row["BirthDate"])
    assert 0.8 < kinds["exact"] / dated < 0.92
    for kind in ("swapped", "days_off", "year_only", "year_typo"):
        assert 0.005 < kinds[kind] / dated < 0.08, (kind, kinds[kind] / dated)
    assert all(REFERENCE_DATE.year - 130 < p.birth.year <= REFERENCE_DATE.year - 18 for p in people.values())


def test_places_postcodes_and_jobs_mostly_agree_within_a_person(registry5k: tuple[Path, list, dict]) -> None:
    out, rows, people = registry5k
    person = person_of(out)
    for column, truth, low, high in (
        ("PostCode", lambda p: p.postcodes[0], 0.72, 0.9),
        ("Occupation", lambda p: p.occupation, 0.65, 0.9),
    ):
        present = [row for row in rows if row[column]]
        agree = sum(row[column] == truth(people[person(row)]) for row in present) / len(present)
        assert low < agree < high, (column, agree)
    latin = [row for row in rows if row["BirthPlace"] and people[person(row)].culture.script == "latin"]
    agree = sum(row["BirthPlace"] == people[person(row)].birth_place for row in latin) / len(latin)
    assert 0.75 < agree < 0.92
    occupations = {p.occupation for p in people.values()}
    assert 100 < len(occupations) <= 300


def test_emails_are_personal_and_never_shared_between_namesakes(tmp_path: Path) -> None:
    generate_registry(2000, 4, tmp_path, emails=True)
    rows = read_csv(tmp_path / REGISTRY_FILE)[1]
    person = person_of(tmp_path)
    with_email = [row for row in rows if row["Email"]]
    assert 0.72 < len(with_email) / len(rows) < 0.88
    users: dict[str, set[str]] = defaultdict(set)
    for row in with_email:
        users[row["Email"]].add(person(row))
    assert all(len(people) == 1 for people in users.values())
    assert all(re.fullmatch(r"[a-z0-9._]+@[a-z0-9.-]+\.[a-z]+", row["Email"]) for row in with_email)


# -- the pipeline reads it


def registry_config(tmp_path: Path, registry: Path) -> Path:
    """Writes the shipped cmdm.yaml, reading only the registry, into ``tmp_path``; returns its path."""
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document = copy.deepcopy(document)
    document["sources"] = [registry_source(registry)]
    document["schema"]["attributes"].update(REGISTRY_ATTRIBUTES)
    for section in ("erasure", "consent"):
        document.pop(section, None)
    # What named the sample's sources or consent purposes does not apply to a registry-only project.
    document["lenses"] = [lens for lens in document.get("lenses", []) if lens.get("purpose") is None]
    document["survivorship"]["customer_provided_sources"] = []
    document["quality"]["quarantine_rate_by_source"] = {}
    document["warehouse"]["path"] = str(tmp_path / "warehouse" / "cmdm.duckdb")
    if "encrypt" in ProtectionConfig.model_fields:
        document["protection"] = {"encrypt": False}
    path = tmp_path / "cmdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def test_registry_passes_extract_standardise_and_validate(tmp_path: Path) -> None:
    generate_registry(500, 9, tmp_path / "data")
    config = load_config(registry_config(tmp_path, tmp_path / "data" / REGISTRY_FILE))
    source = config.source("registry")
    raw = extract(source, config, ingested_at=dt.datetime(2026, 6, 30, tzinfo=dt.UTC))
    assert raw.height == 500 and raw["parse_error"].null_count() == 500
    standardised = standardise(raw, source, config)
    validated, quarantined = validate(standardised, config.customer_schema, "run", REFERENCE_DATE)
    assert validated.height + quarantined.height == 500
    assert validated.height >= 0.95 * 500
    assert validated["birth_place"].null_count() < 0.35 * validated.height
    assert set(validated["gender"].drop_nulls().unique()) <= {"female", "male"}
