"""Resolve: one record against a small project's records, scored as the batch scored them."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

from cmdm_pipeline.config import MatchingConfig, load_config
from cmdm_pipeline.stages.decisions import DECISION_COLUMNS
from cmdm_pipeline.stages.fields import DTYPES
from cmdm_pipeline.stages.match import MatchResult, match_records
from cmdm_pipeline.stages.match_features import matching_frame
from cmdm_pipeline.stages.match_model import train_model
from cmdm_pipeline.web.resolve import ResolveIndex, ResolveInputError
from cmdm_pipeline.web.resolve_blocking import BlockingRuleError, lookups
from cmdm_pipeline_tests.conftest import REPO_ROOT

CONFIG = load_config(REPO_ROOT / "cmdm.yaml")
SCHEMA = CONFIG.customer_schema
KEY = ["source_system", "source_record_id"]
GIVEN = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Karl", "Lena"]
FAMILY = ["Meyer", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Silva", "Tanaka", "Ulrich", "Varga"]
CITIES = ["Leeds", "York", "Bath", "Hull", "Derby"]


def typo(value: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(value))
    return value[:i] + value[i + 1:]


def records(people: int, seed: int) -> pl.DataFrame:
    """Validated records of ``people`` people, 1-3 each (name typos, missing e-mails), every schema attribute."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for person in range(people):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(20_000))
        for _ in range(rng.choice((1, 2, 2, 3))):
            rows.append({"source_system": rng.choice(["crm", "shop"]), "source_record_id": str(len(rows)),
                         "party_type": "person", "person": person,
                         "first_name": typo(given, rng) if rng.random() < 0.15 else given,
                         "last_name": typo(family, rng) if rng.random() < 0.15 else family,
                         "date_of_birth": born if rng.random() < 0.9 else None,
                         "email": f"{given}.{family}{person}@example.org".lower() if rng.random() < 0.7 else None,
                         "city": rng.choice(CITIES)})
    frame = pl.DataFrame(rows)
    return frame.with_columns(
        pl.lit(None, dtype=DTYPES[a.kind]).alias(n) for n, a in SCHEMA.attributes.items() if n not in frame.columns
    ).sort(KEY)


@dataclass(frozen=True)
class Batch:
    frame: pl.DataFrame  # the records with unique_id (row) and master_id
    model: dict[str, Any]
    result: MatchResult
    index: ResolveIndex


@pytest.fixture(scope="module")
def batch() -> Batch:
    """The batch on 200-odd records (a model trained on them, pairs, clusters) and a resolve index on its result."""
    frame = records(100, seed=5)
    features = matching_frame(frame, SCHEMA)
    model = train_model(features, SCHEMA, MatchingConfig(), version=1).settings
    result = match_records(features, model, MatchingConfig(), pl.DataFrame(schema=DECISION_COLUMNS))
    masters = result.clusters.select("unique_id", pl.format("M{}", "cluster").alias("master_id"))
    frame = frame.with_row_index("unique_id").with_columns(pl.col("unique_id").cast(pl.Int64)).join(masters, on="unique_id")
    index = ResolveIndex.build(frame, CONFIG, model, prior=result.prior, link_threshold=result.threshold.probability)
    return Batch(frame, model, result, index)


def values(row: dict[str, Any]) -> dict[str, Any]:
    """A record's attributes as a caller sends them (dates as ISO text)."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v
            for k, v in row.items() if (k in SCHEMA.attributes or k == "party_type") and v is not None}


def test_an_existing_customer_with_a_typo_finds_its_master_first_and_linked(batch) -> None:  # type: ignore[no-untyped-def]
    frame, index = batch.frame, batch.index
    person = frame.filter(pl.col("email").is_not_null() & pl.col("date_of_birth").is_not_null()).row(0, named=True)
    sent = {**values(person), "last_name": person["last_name"][:-1] + "x", "first_name": person["first_name"].upper()}
    found = index.resolve(sent)
    assert found.standardised["first_name"] == person["first_name"]  # ANNA -> Anna, as the pipeline writes it
    assert found.standardised["date_of_birth"] == person["date_of_birth"].isoformat()
    assert found.issues == []
    best = found.candidates[0]
    assert best.master_id == person["master_id"] and best.linked and best.match_probability > 0.99
    levels = {c["name"]: c["level"] for c in best.comparisons}
    assert levels["email"] == "Exact match on email" and levels["last_name"] != "Exact match on last_name"
    assert [c.master_id for c in found.candidates] == list(dict.fromkeys(c.master_id for c in found.candidates))


def test_a_new_person_finds_no_candidate_above_the_link_threshold(batch) -> None:  # type: ignore[no-untyped-def]
    frame, index = batch.frame, batch.index
    # A given and a family name that exist (so blocking finds namesakes), a birth date and e-mail nobody has.
    sent = {"first_name": frame["first_name"][0], "last_name": frame["last_name"][1], "date_of_birth": "1931-07-14",
            "email": "someone.new@example.net", "city": "Leeds"}
    assert index.scores(sent).height > 0  # there were pairs to judge
    assert not any(c.linked for c in index.resolve(sent, limit=50).candidates)


def test_evidence_and_levels_are_the_batchs_for_the_same_pairs(batch) -> None:  # type: ignore[no-untyped-def]
    frame, result, index = batch.frame, batch.result, batch.index
    pairs = result.pairs.filter("blocked")  # pairs the blocking rules made (not ones completed inside a cluster)
    row = frame.join(pairs.group_by("source_record_id_l").len().sort("len", descending=True).head(1),
                     left_on="source_record_id", right_on="source_record_id_l").row(0, named=True)
    batch_pairs = pairs.filter((pl.col("source_record_id_l") == row["source_record_id"])
                               | (pl.col("source_record_id_r") == row["source_record_id"]))
    scored = index.scores(values(row))
    assert batch_pairs.height >= 2
    for pair in batch_pairs.iter_rows(named=True):
        other = pair["source_record_id_r"] if pair["source_record_id_l"] == row["source_record_id"] else pair["source_record_id_l"]
        system = pair["source_system_r"] if pair["source_record_id_l"] == row["source_record_id"] else pair["source_system_l"]
        mine = scored.filter(pl.col("record") == f"{system}:{other}").row(0, named=True)
        assert mine["evidence"] == pytest.approx(pair["evidence"], abs=1e-6)
        assert {name: mine[f"gamma_{name}"] for name in pair["comparison_levels"]} == pair["comparison_levels"]


def test_issues_are_the_pipelines_and_the_standardised_values_json_ready(batch) -> None:  # type: ignore[no-untyped-def]
    index = batch.index
    found = index.resolve({"first_name": "Ada", "last_name": "L" * 120, "email": "not an address", "nps_score": 12,
                           "accepts_marketing": True, "date_of_birth": dt.date(1815, 12, 10), "record_type": "lead"})
    rules = {i["rule"]: i["severity"] for i in found.issues}
    assert rules["last_name.length"] == "reject" and "email.invalid" in rules and "nps_score.range" in rules
    assert rules["date_of_birth.range"] == "reject"  # before 1900
    assert all("L" * 120 not in i["reason"] and "not an address" not in i["reason"] for i in found.issues)
    assert found.standardised["email"] is None and found.standardised["accepts_marketing"] is True
    assert found.standardised["date_of_birth"] == "1815-12-10" and found.standardised["party_type"] == "person"
    assert found.standardised["record_type"] == "lead"


SECRET = "Zebedee"


@pytest.mark.parametrize(("record", "field"), [
    ({"first_name": SECRET, "favourite_colour": "teal"}, "favourite_colour"),
    ({"first_name": [SECRET]}, "first_name"),
    ({"first_name": SECRET, "email": {"address": SECRET}}, "email"),
    ({"first_name": SECRET, "last_name": True}, "last_name"),
    ({"first_name": SECRET, "date_of_birth": f"{SECRET} 3rd"}, "date_of_birth"),
    ({"first_name": SECRET, "date_of_birth": "1980-02-30"}, "date_of_birth"),
    ({"first_name": SECRET, "date_of_birth": 19800203}, "date_of_birth"),
    ({"first_name": SECRET, "date_of_birth": dt.datetime(1980, 2, 3, 12)}, "date_of_birth"),
    ({"first_name": SECRET, "party_type": "robot"}, "party_type"),
    ({"first_name": SECRET, "record_type": "prospect"}, "record_type"),
    ({"loyalty_tier": "gold", "nps_comment": SECRET}, None),  # nothing matching compares
    ({"first_name": None, "email": " "}, None),
    ([("first_name", SECRET)], None),
    ({f"{SECRET} Smith": "x"}, None),  # an unknown key that is no name is not repeated either
])
def test_bad_input_names_the_field_and_never_the_value(batch, record: Any, field: str | None) -> None:  # type: ignore[no-untyped-def]
    index = batch.index
    with pytest.raises(ResolveInputError) as raised:
        index.resolve(record)
    assert raised.value.field == field
    assert SECRET not in str(raised.value) and "teal" not in str(raised.value)
    if field is not None:
        assert field in str(raised.value)


def test_a_limit_below_one_is_refused(batch) -> None:  # type: ignore[no-untyped-def]
    index = batch.index
    with pytest.raises(ResolveInputError) as raised:
        index.resolve({"first_name": "Ada"}, limit=0)
    assert raised.value.field == "limit"


def test_blocking_rules_become_one_lookup_per_distinct_orientation() -> None:
    def same_type(_: str) -> str:
        return "VARCHAR"

    symmetric = lookups(["l.first_name = r.first_name AND l.party_type = r.party_type"], same_type)
    swapped = lookups(["l.first_name = r.last_name AND l.last_name = r.first_name"], same_type)
    one_way = lookups(["l.email = r.backup_email"], same_type)
    assert len(symmetric) == 1 and len(swapped) == 1 and len(one_way) == 2
    organisations = lookups(["l.name = r.name AND l.party_type = 'organisation' AND r.party_type = 'organisation'"], same_type)
    assert all("'organisation'" in lk.record_condition and "'organisation'" in lk.query_key for lk in organisations)
    near = lookups(["l.dob = r.dob AND levenshtein(l.surname, r.surname) <= 1"], same_type)
    assert len(near) == 1 and "LEVENSHTEIN" in (near[0].pair_check or "").upper()
    with pytest.raises(BlockingRuleError):
        lookups(["l.a = r.a OR l.b = r.b"], same_type)


def test_resolves_from_several_threads_give_what_one_thread_gives(batch) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    frame, index = batch.frame, batch.index
    sent = [values(row) for row in frame.head(24).iter_rows(named=True)]
    alone = [index.resolve(record) for record in sent]
    with ThreadPoolExecutor(max_workers=6) as pool:  # more threads than DuckDB sessions: some wait for one
        together = list(pool.map(index.resolve, sent))
    assert together == alone


def test_rules_with_one_sided_and_pair_conditions_find_the_pairs_splinks_blocking_finds(batch) -> None:  # type: ignore[no-untyped-def]
    """Rules a user may write: a condition on one side only and one on both sides that is no equality (checked
    per pair). Resolve pairs a record with whom Splink pairs it, a rule that is not symmetric either way round
    (Splink's dedupe applies it with the lower id as l; a new record has no place in that order)."""
    from cmdm_pipeline.engines.duckdb import DuckDBEngine
    from cmdm_pipeline.stages.match_model import _linker, scoring_settings

    frame = batch.frame
    model = {**batch.model, "blocking_rules_to_generate_predictions": [
        {"blocking_rule": "l.city = r.city AND levenshtein(l.last_name, r.last_name) <= 1", "sql_dialect": "duckdb"},
        {"blocking_rule": "l.date_of_birth = r.date_of_birth AND levenshtein(l.first_name, r.first_name) <= 1",
         "sql_dialect": "duckdb"},
        {"blocking_rule": "substr(l.email, 1, 3) = substr(r.email, 1, 3) AND l.city = 'leeds'", "sql_dialect": "duckdb"},
    ]}
    either_way = [*model["blocking_rules_to_generate_predictions"], {
        "blocking_rule": "substr(r.email, 1, 3) = substr(l.email, 1, 3) AND r.city = 'leeds'", "sql_dialect": "duckdb"}]
    features = matching_frame(frame.drop("unique_id", "master_id"), SCHEMA)
    settings = {**scoring_settings(model), "blocking_rules_to_generate_predictions": either_way}
    with _linker(features, settings, DuckDBEngine("1GB")) as linker:  # every pair Splink's blocking makes
        splink = linker.inference.predict().as_duckdbpyrelation().select("unique_id_l", "unique_id_r").pl()
    custom = ResolveIndex.build(frame, CONFIG, model)
    keys = frame.select("unique_id", pl.concat_str(KEY, separator=":").alias("record"))
    checked = 0
    for row in frame.filter(pl.col("email").is_not_null()).head(15).iter_rows(named=True):
        theirs = splink.filter((pl.col("unique_id_l") == row["unique_id"]) | (pl.col("unique_id_r") == row["unique_id"]))
        expected = set(theirs["unique_id_l"].to_list() + theirs["unique_id_r"].to_list()) - {row["unique_id"]}
        mine = custom.scores(values(row)).join(keys, on="record")["unique_id"].to_list()
        assert set(mine) - {row["unique_id"]} == expected
        checked += len(expected)
    assert checked > 5  # the rules found pairs to compare

