"""Schema -> Splink settings: a comparison for every matched attribute of any kind, blocking and training rules."""

from __future__ import annotations

import polars as pl
import pytest

from cmdm_pipeline.config import ConfigError, MatchingConfig, load_config
from cmdm_pipeline.stages.match_features import matching_frame
from cmdm_pipeline.stages.match_settings import HOME, build_settings, default_blocking_rules, training_rules
from cmdm_pipeline_tests.conftest import REPO_ROOT

SCHEMA = load_config(REPO_ROOT / "cmdm.yaml").customer_schema


def comparisons(schema=SCHEMA, matching: MatchingConfig | None = None) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    settings = build_settings(schema, matching or MatchingConfig())
    return {c["output_column_name"]: c["comparison_levels"] for c in settings["comparisons"]}


def labels(levels: list[dict]) -> list[str]:
    return [level.get("label_for_charts", "") for level in levels]


def test_kinds_map_to_comparisons() -> None:
    by_name = comparisons()
    assert set(by_name) >= {"first_name", "last_name", "email", HOME, "date_of_birth", "organisation_name", "national_id"}
    assert "middle_name" not in by_name and "region" not in by_name and "customer_since" not in by_name
    given = labels(by_name["first_name"])
    assert any("reversed" in label for label in given) and "nickname of the same name" in given
    assert "an initial of the same name" in given
    # Names carry term frequencies (a common name says less); an e-mail address is one person's whatever its count.
    assert any(level.get("tf_adjustment_column") == "last_name" for level in by_name["last_name"])
    assert not any(level.get("tf_adjustment_column") for level in by_name["email"])
    assert "day and month swapped" in labels(by_name["date_of_birth"])
    # A mistyped identifier is a level of its own, learned like any other.
    assert "Damerau-Levenshtein distance of national_id <= 1" in labels(by_name["national_id"])


def test_address_and_phones_are_one_comparison_a_household_shares() -> None:
    home = labels(comparisons()[HOME])
    assert "phones" not in comparisons() and "address" not in comparisons()
    assert home[:3] == ["no address or phone to compare", "same home and a phone in common", "a phone in common"]
    assert "same street, house number and postcode" in home and home[-1] == "All other comparisons"


def test_no_veto_or_parking_rule_remains_only_learned_levels() -> None:
    """Names that differ are the comparisons' lowest levels (own m and u), not a rule that keeps records apart."""
    settings = build_settings(SCHEMA, MatchingConfig())
    for comparison in settings["comparisons"]:
        conditions = [level["sql_condition"] for level in comparison["comparison_levels"]]
        assert conditions[-1] == "ELSE"
        assert all("m_probability" not in level for level in comparison["comparison_levels"])  # nothing hand-set


def test_attributes_a_user_adds_are_compared_by_kind() -> None:
    from cmdm_pipeline.schema import Attribute

    # The shipped schema's city is the address's town (compared with postcode and phones); another city is
    # a fact of its own, like a place of birth.
    added = {"birth_place": {"kind": "city", "match": True}, "occupation": {"kind": "text", "match": True},
             "loyalty_number": {"kind": "identifier", "match": True}, "tier": {"kind": "category", "match": True},
             "shoe_size": {"kind": "number", "match": True}}
    schema = SCHEMA.model_copy(update={"attributes": {
        **SCHEMA.attributes, **{name: Attribute(**spec) for name, spec in added.items()}}})
    by_name = comparisons(schema)
    assert set(added) <= set(by_name)
    for name in ("birth_place", "occupation"):  # exact with term frequencies, then near
        assert by_name[name][1].get("tf_adjustment_column") == name
        assert "Jaro-Winkler" in labels(by_name[name])[2]
    assert "Damerau-Levenshtein distance of loyalty_number <= 1" in labels(by_name["loyalty_number"])
    assert by_name["tier"][1].get("tf_adjustment_column") == "tier" and len(by_name["tier"]) == 3
    rules = default_blocking_rules(schema)
    assert "l.loyalty_number = r.loyalty_number" in rules
    assert "l.birth_place = r.birth_place AND l.last_name = r.last_name" in rules


def test_blocking_rules_follow_the_attributes_that_exist() -> None:
    rules = default_blocking_rules(SCHEMA)
    assert "l.email = r.email" in rules and "l.phones[1] = r.phones[1]" in rules
    # Swapped names with a typo, or a new family name, still meet on birth date and postcode.
    assert "l.date_of_birth = r.date_of_birth AND l.postcode = r.postcode" in rules
    without_email = SCHEMA.model_copy(update={"attributes": {k: v for k, v in SCHEMA.attributes.items() if k != "email"}})
    assert not any("email" in rule for rule in default_blocking_rules(without_email))


def test_training_never_blocks_em_on_what_a_household_shares() -> None:
    deterministic, em = training_rules(SCHEMA)
    assert "l.email = r.email" in deterministic
    assert em and not any("phones" in rule or "postcode" in rule for rule in em)


def test_overrides_replace_generated_blocking() -> None:
    settings = build_settings(SCHEMA, MatchingConfig(blocking_rules=["l.postcode = r.postcode"]))
    assert [r["blocking_rule"] for r in settings["blocking_rules_to_generate_predictions"]] == [
        "(l.postcode = r.postcode) AND l.party_type = r.party_type"
    ]


def test_a_configured_comparison_replaces_the_generated_one() -> None:
    email_only_exact = {"comparison_levels": [
        {"sql_condition": "email_l IS NULL OR email_r IS NULL", "label_for_charts": "missing", "is_null_level": True},
        {"sql_condition": "email_l = email_r", "label_for_charts": "same e-mail"},
        {"sql_condition": "ELSE", "label_for_charts": "different"},
    ]}
    by_name = comparisons(matching=MatchingConfig(comparisons={"email": email_only_exact}))
    assert labels(by_name["email"]) == ["missing", "same e-mail", "different"]
    assert len(by_name) == len(comparisons())


def test_a_comparison_without_levels_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="comparisons.email: needs `comparison_levels`"):
        MatchingConfig(comparisons={"email": {"levels": []}})


def test_settings_of_earlier_versions_say_why_they_went(make_project) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="matching.link_evidence was removed: the link threshold now comes from"):
        make_project(matching={"link_evidence": 10})


@pytest.mark.parametrize("kind", ["category", "number", "boolean"])
@pytest.mark.parametrize("matched", [True, False])
def test_an_attribute_of_a_kind_unmatched_by_default_is_a_feature_only_when_matched(
    make_project, kind: str, matched: bool  # type: ignore[no-untyped-def]
) -> None:
    from cmdm_pipeline.stages.match_features import feature_inputs
    from cmdm_pipeline_tests.conftest import SCHEMA as BASE

    schema_doc = {**BASE, "attributes": {**BASE["attributes"], "extra": {"kind": kind, "match": matched}}}
    schema = make_project(schema=schema_doc).customer_schema
    compared = {c["output_column_name"] for c in build_settings(schema, MatchingConfig())["comparisons"]}
    value = {"category": "gold", "number": 3.0, "boolean": True}[kind]
    records = pl.DataFrame({"source_system": ["crm"], "source_record_id": ["1"], "party_type": ["person"],
                            "first_name": ["Ada"], "last_name": ["Lovelace"], "email": [None], "phone": [None],
                            "postcode": [None], "country": ["GB"], "date_of_birth": [None], "extra": [value]},
                           schema_overrides={"email": pl.String, "phone": pl.String, "postcode": pl.String,
                                             "date_of_birth": pl.Date})
    features = matching_frame(records.select(feature_inputs(schema)), schema)
    # A compared column must be a feature (Splink fails on a missing one); an unmatched one is not even read.
    assert ("extra" in compared) is matched and ("extra" in features.columns) is matched
    assert ("extra" in feature_inputs(schema)) is matched and "nps_score" not in feature_inputs(schema)


def _address_level_pairs(rows: list[tuple[str, str, str]], label: str) -> set[tuple[int, int]]:
    """Record pairs (by row) of ``rows`` (street, postcode, city) that the address level ``label`` holds for."""
    import duckdb

    settings = build_settings(SCHEMA, MatchingConfig())
    address = next(c for c in settings["comparisons"] if c["output_column_name"] == HOME)
    level = next(lvl for lvl in address["comparison_levels"] if lvl.get("label_for_charts") == label)
    frame = pl.DataFrame(rows, orient="row", schema=["address_line_1", "postcode", "city"]).with_columns(
        pl.lit(None, dtype=pl.String).alias(name) for name in SCHEMA.attributes
        if name not in ("address_line_1", "postcode", "city"))
    frame = frame.with_columns(pl.lit("crm").alias("source_system"), pl.int_range(pl.len()).cast(pl.String)
                               .alias("source_record_id"), pl.lit("person").alias("party_type"))
    columns = ["address_line_1", "address_line_1_numbers", "postcode", "city"]
    features = matching_frame(frame.with_columns(pl.col("date_of_birth", "customer_since", "responded_on").cast(pl.Date)),
                              SCHEMA).select("unique_id", *columns)

    def side(s: str) -> str:
        return "SELECT unique_id, " + ", ".join(f"{c} AS {c}_{s}" for c in columns) + " FROM f"

    with duckdb.connect() as con:
        con.register("f", features.to_arrow())
        return {tuple(row) for row in con.sql(  # type: ignore[misc]
            f"SELECT l.unique_id, r.unique_id FROM ({side('l')}) l JOIN ({side('r')}) r ON l.unique_id < r.unique_id "
            f"WHERE {level['sql_condition']}").fetchall()}


def test_neighbours_are_not_the_same_address() -> None:
    """The address comparison's top level needs the house number too: a street is shared by neighbours."""
    same = _address_level_pairs([
        ("21 La Perouse Street", "3121", "Toorak"), ("123 La Perouse Street", "3121", "Toorak"),
        ("21 la perouse st.", "3121", "Toorak"), ("La Perouse Street", "3121", "Toorak"),
        ("la perouse street.", "3121", "Toorak"),
    ], "same street, house number and postcode")
    assert (0, 1) not in same  # 21 and 123: neighbours
    assert (0, 2) in same  # the same house written another way
    assert (3, 4) in same  # no house numbers: the street and postcode still agree


def test_the_same_house_with_a_mistyped_postcode_still_places_the_record() -> None:
    rows = [("9 Tunney Crescent", "5031", "Toorak"), ("9 Tunney Crescent", "5013", "Toorak"),
            ("11 Tunney Crescent", "5013", "Toorak"), ("Tunney Crescent", "5013", "Toorak"),
            ("9 Tunney Crescent", "2000", "Sydney")]
    house = _address_level_pairs(rows, "same street and house number, not the same postcode")
    assert (0, 1) in house  # postcode digits swapped, same house in the same town
    assert (0, 2) not in house and (0, 3) not in house  # another house; no number to compare
    assert (0, 4) not in house  # the same house number and street name in another town
