"""The names guard that keeps households and colleagues apart."""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.stages.match import names_disagree

GIVEN, FAMILY = ["first_name"], ["last_name"]
SWAPPED = {"gamma_first_name": 4}  # levels: 5 exact, 4 swapped, 3 nickname, 2-1 typos, 0 different
PERSONAL = {"gamma_email": 3, "gamma_date_of_birth": 5}


def flags(**levels: list[int]) -> list[bool]:
    pairs = pl.DataFrame({f"gamma_{name}": values for name, values in levels.items()})
    return pairs.select(names_disagree(pairs, GIVEN, FAMILY, SWAPPED, PERSONAL)).to_series().to_list()


def test_a_household_member_with_another_given_name_is_a_different_person() -> None:
    # Same surname and address, different first name, e-mail and birth date unknown or different.
    assert flags(first_name=[0, 0], last_name=[3, 3], email=[-1, 0], date_of_birth=[-1, 1]) == [True, True]


def test_a_colleague_with_the_same_first_name_and_another_family_name_is_a_different_person() -> None:
    assert flags(first_name=[5], last_name=[0], email=[0], date_of_birth=[-1]) == [True]


def test_a_personal_identifier_overrides_a_differing_name() -> None:
    # A new family name after marriage, same e-mail; or a first name typed as something else, same birth date.
    assert flags(first_name=[5, 0], last_name=[0, 3], email=[3, -1], date_of_birth=[-1, 5]) == [False, False]


def test_swaps_nicknames_typos_and_missing_names_do_not_count_as_different() -> None:
    assert flags(
        first_name=[4, 3, 1, -1, 5], last_name=[0, 3, 2, 0, -1], email=[-1] * 5, date_of_birth=[-1] * 5
    ) == [False, False, False, True, False]


def test_without_name_comparisons_nothing_is_flagged() -> None:
    pairs = pl.DataFrame({"gamma_email": [0]})
    assert pairs.select(names_disagree(pairs, GIVEN, FAMILY, SWAPPED, PERSONAL)).to_series().to_list() == [False]


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
