"""The names guard that keeps households and colleagues apart."""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.config import MatchingConfig, load_config
from cmdm_pipeline.stages.match import names_disagree
from cmdm_pipeline.stages.match_model import build_settings, one_person
from cmdm_pipeline_tests.conftest import REPO_ROOT

GIVEN, FAMILY = ["first_name"], ["last_name"]
SWAPPED = {"gamma_first_name": 4}  # levels: 5 exact, 4 swapped, 3 nickname, 2-1 typos, 0 different
SCHEMA = load_config(REPO_ROOT / "cmdm.yaml").customer_schema
MODEL = build_settings(SCHEMA, MatchingConfig())  # address 5-3 place a record; e-mail 3, birth date 5 exact


def flags(**levels: list[int]) -> list[bool]:
    pairs = pl.DataFrame({f"gamma_{name}": values for name, values in levels.items()})
    same = one_person(MODEL, SCHEMA, pairs.columns)
    return pairs.select(names_disagree(pairs, GIVEN, FAMILY, SWAPPED, same, ["organisation_name"])).to_series().to_list()


def test_a_household_member_with_another_given_name_is_a_different_person() -> None:
    # Same surname and address, different first name, e-mail and birth date unknown or different.
    assert flags(first_name=[0, 0], last_name=[3, 3], email=[-1, 0], date_of_birth=[-1, 1]) == [True, True]


def test_a_colleague_with_the_same_first_name_and_another_family_name_is_a_different_person() -> None:
    assert flags(first_name=[5], last_name=[0], email=[0], date_of_birth=[-1]) == [True]


def test_a_personal_identifier_overrides_a_differing_name() -> None:
    # A new family name after marriage, same e-mail; or a first name typed as something else, same birth
    # date and a phone in common.
    assert flags(
        first_name=[5, 0], last_name=[0, 3], email=[3, -1], date_of_birth=[-1, 5], phones=[-1, 1]
    ) == [False, False]


def test_a_birth_date_alone_does_not_override_a_differing_name() -> None:
    # Twins (same family name, home and birth date, their own e-mails or phones), and strangers who share
    # a first name and a birth date; the same birth date with a phone in common is one person.
    # A birth date one typo apart (level 4) is not the same birth date, phone or not.
    assert flags(
        first_name=[0, 0, 5, 0, 0], last_name=[3, 3, 0, 3, 3], address=[5, 5, 0, 0, 0], email=[0, -1, -1, 0, 0],
        phones=[-1, 0, -1, 1, 1], date_of_birth=[5, 5, 5, 5, 4],
    ) == [True, True, True, False, True]


def test_a_birth_date_at_the_same_address_with_no_contacts_to_compare_is_one_person() -> None:
    # A name typed as another one (FEBRL-like data: no e-mail or phone): same house or postcode and
    # birth date. Without the e-mail and phone comparisons at all, the same holds.
    assert flags(first_name=[0, 5], last_name=[3, 0], address=[5, 3], email=[-1, -1], phones=[-1, -1],
                 date_of_birth=[5, 5]) == [False, False]
    assert flags(first_name=[0, 0], last_name=[3, 3], address=[3, 2], date_of_birth=[5, 5]) == [False, True]


def test_two_organisations_with_different_names_are_different_unless_an_id_or_e_mail_says_otherwise() -> None:
    # Businesses in one building: same postcode, the same mailbox name (info@) at their own domains.
    # organisation_name is -1 unless both records are organisations.
    assert flags(organisation_name=[0, 0, 0, 1, -1], tax_id=[0, 1, -1, -1, -1], email=[2, -1, 3, 2, 2],
                 address=[3, 3, 3, 3, 3]) == [True, False, False, False, False]


def test_swaps_nicknames_typos_and_missing_names_do_not_count_as_different() -> None:
    assert flags(
        first_name=[4, 3, 1, -1, 5], last_name=[0, 3, 2, 0, -1], email=[-1] * 5, date_of_birth=[-1] * 5
    ) == [False, False, False, True, False]


def test_without_name_comparisons_nothing_is_flagged() -> None:
    assert flags(email=[0]) == [False]


def test_one_question_per_cluster_in_doubt_with_its_strongest_candidate() -> None:
    from cmdm_pipeline.stages.match import open_questions

    members = pl.DataFrame({
        "source_system": ["s"] * 5, "source_record_id": ["a", "b", "c", "d", "e"], "cluster": [1, 1, 2, 3, 1],
    })
    pairs = pl.DataFrame({
        "source_system_l": ["s"] * 4, "source_record_id_l": ["c", "c", "a", "d"],
        "source_system_r": ["s"] * 4, "source_record_id_r": ["a", "d", "b", "e"],
        "evidence": [12.0, 15.0, 20.0, 8.0], "review_reason": ["r"] * 4,
    })
    asked = open_questions(pairs, members)
    # a-b share a cluster: no question. c (alone) is asked about its strongest candidate, d, and 1
    # other; d (alone, tie with c broken by cluster id) was already the candidate, so its pair with e stays.
    assert asked.select("source_record_id_l", "source_record_id_r", "review_reason").rows() == [
        ("c", "d", "r (1 other candidate customer)"), ("d", "e", "r"),
    ]


def test_a_customer_with_several_candidates_is_asked_once_naming_how_many_others() -> None:
    from cmdm_pipeline.stages.match import open_questions

    members = pl.DataFrame({
        "source_system": ["s"] * 7, "source_record_id": ["a1", "a2", "d1", "d2", "e1", "e2", "c"],
        "cluster": [1, 1, 2, 2, 3, 3, 9],
    })
    pairs = pl.DataFrame({
        "source_system_l": ["s"] * 3, "source_record_id_l": ["c"] * 3,
        "source_system_r": ["s"] * 3, "source_record_id_r": ["a1", "d1", "e1"],
        "evidence": [12.0, 15.0, 10.0], "review_reason": ["r"] * 3,
    })
    asked = open_questions(pairs, members)
    assert asked.select("source_record_id_r", "review_reason").rows() == [("d1", "r (2 other candidate customers)")]


def test_last_nights_pairs_are_flagged_again_by_todays_rules() -> None:
    # An incremental night keeps unchanged pairs; their flags come from their stored levels, so twins
    # flagged by an older rule (a birth date alone was personal) are kept apart now too.
    from cmdm_pipeline.assets.match import _flagged

    config = load_config(REPO_ROOT / "cmdm.yaml")
    levels = pl.DataFrame({
        "first_name": [0, 5], "last_name": [3, 3], "address": [5, 0], "date_of_birth": [5, -1], "email": [0, 3],
        "phones": [0, -1],
    }, schema={name: pl.Int8 for name in ("first_name", "last_name", "address", "date_of_birth", "email", "phones")})
    old = pl.DataFrame({"source_system_l": ["s", "s"], "names_disagree": [False, True], "corroborated": [False, False]})
    old = old.with_columns(levels.select(pl.struct(pl.all()).alias("comparison_levels")))
    again = _flagged(old, config, MODEL)
    assert again.columns == old.columns
    assert again.select("names_disagree", "corroborated").rows() == [(True, True), (False, True)]


def test_only_a_model_that_compares_two_organisations_keeps_different_organisation_names_apart() -> None:
    from cmdm_pipeline.stages.match_model import organisation_names

    assert organisation_names(MODEL, SCHEMA) == ["organisation_name"]
    # A model saved before the comparison was limited to two organisations compared a person's employer.
    older = {"comparisons": [{**c, "comparison_levels": [
        {**level, "sql_condition": '"organisation_name_l" IS NULL OR "organisation_name_r" IS NULL'}
        if level.get("is_null_level") else level for level in c["comparison_levels"]
    ]} for c in MODEL["comparisons"]]}
    assert organisation_names(older, SCHEMA) == []


def test_pairs_stored_with_levels_as_text_or_without_levels_are_scored_again() -> None:
    from cmdm_pipeline.assets.match import _previous

    class Store:
        def __init__(self, levels: pl.Series) -> None:
            self.pairs = pl.DataFrame({"source_system_l": ["s"], "corroborated": [True], "model_version": [1]})
            self.pairs = self.pairs.with_columns(levels.alias("comparison_levels"))

        def tables(self) -> list[str]:
            return ["match_pairs", "customer_clusters"]

        def read(self, name: str) -> pl.DataFrame:
            if name == "match_pairs":
                return self.pairs
            return pl.DataFrame({"source_system": ["s"], "source_record_id": ["a"], "record_hash": [1]})

    struct = pl.DataFrame({"email": [3]}).select(pl.struct("email")).to_series()
    assert _previous(Store(struct), 1) is not None
    assert _previous(Store(pl.Series(['{"email": 3}'])), 1) is None
    assert _previous(Store(pl.Series([None], dtype=pl.Struct({}))), 1) is None
