"""Schema -> Splink model mapping and the deterministic rules (no training here)."""

from __future__ import annotations

import polars as pl
import pytest

from cmdm_pipeline.config import MatchingConfig, load_config
from cmdm_pipeline.stages.match_features import matching_frame
from cmdm_pipeline.stages.match_model import build_settings, default_blocking_rules, deterministic_pairs
from cmdm_pipeline_tests.conftest import REPO_ROOT

SCHEMA = load_config(REPO_ROOT / "cmdm.yaml").customer_schema


def test_kinds_map_to_comparisons() -> None:
    settings = build_settings(SCHEMA, MatchingConfig())
    by_name = {c["output_column_name"]: c for c in settings["comparisons"]}
    assert set(by_name) >= {"first_name", "last_name", "email", "phones", "address", "date_of_birth", "organisation_name", "national_id"}
    assert "middle_name" not in by_name and "region" not in by_name and "customer_since" not in by_name
    labels = [level.get("label_for_charts", "") for level in by_name["first_name"]["comparison_levels"]]
    assert any("reversed" in label for label in labels) and "nickname of the same name" in labels
    # Term frequencies on exact name levels.
    assert any(level.get("tf_adjustment_column") == "last_name" for level in by_name["last_name"]["comparison_levels"])
    assert all("l.party_type = r.party_type" in rule["blocking_rule"] for rule in settings["blocking_rules_to_generate_predictions"])


def test_blocking_rules_follow_the_attributes_that_exist() -> None:
    rules = default_blocking_rules(SCHEMA)
    assert "l.email = r.email" in rules and "l.phones[1] = r.phones[1]" in rules
    # Swapped names with a typo, or a new family name, still meet on birth date and postcode.
    assert "l.date_of_birth = r.date_of_birth AND l.postcode = r.postcode" in rules
    without_email = SCHEMA.model_copy(update={"attributes": {k: v for k, v in SCHEMA.attributes.items() if k != "email"}})
    assert not any("email" in rule for rule in default_blocking_rules(without_email))


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
    settings = build_settings(SCHEMA, MatchingConfig(comparisons={"email": email_only_exact}))
    emails = [c for c in settings["comparisons"] if c["output_column_name"] == "email"]
    assert len(emails) == 1
    assert [lvl["label_for_charts"] for lvl in emails[0]["comparison_levels"]] == ["missing", "same e-mail", "different"]
    assert len(settings["comparisons"]) == len(build_settings(SCHEMA, MatchingConfig())["comparisons"])


def test_a_comparison_without_levels_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="comparisons.email: needs `comparison_levels`"):
        MatchingConfig(comparisons={"email": {"levels": []}})


def records(rows: list[tuple]) -> pl.DataFrame:  # type: ignore[type-arg]
    frame = pl.DataFrame(rows, orient="row", schema=["source_record_id", "first_name", "last_name", "email"])
    frame = frame.with_columns(pl.lit("crm").alias("source_system"), pl.lit("person").alias("party_type"))
    for name in SCHEMA.attributes:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    return matching_frame(frame.with_columns(pl.col("date_of_birth", "customer_since", "responded_on").cast(pl.Date)), SCHEMA)


def test_deterministic_rule_links_same_email_but_not_a_shared_family_address() -> None:
    frame = records([
        ("1", "Ada", "Lovelace", "ada@example.org"),
        ("2", "A.", "Lovelace", "ada@example.org"),
        ("3", "Charles", "Babbage", "ada@example.org"),  # both names differ: not the same person
        ("4", "Ada", "Byron", "other@example.org"),
    ])
    pairs = deterministic_pairs(frame, SCHEMA, [["email"]])
    assert sorted(pairs.rows()) == [(0, 1)]


def test_a_value_shared_by_too_many_records_links_nothing() -> None:
    frame = records([(str(i), "Ada", "Lovelace", "test@example.org") for i in range(5)])
    assert deterministic_pairs(frame, SCHEMA, [["email"]], max_group=4).height == 0
    assert deterministic_pairs(frame, SCHEMA, [["email"]], max_group=5).height == 10


@pytest.mark.parametrize("matched", [True, False])
def test_a_category_is_a_feature_only_when_matched(make_project, matched: bool) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.stages.match_features import feature_inputs
    from cmdm_pipeline_tests.conftest import SCHEMA as BASE

    schema_doc = {**BASE, "attributes": {**BASE["attributes"], "tier": {"kind": "category", "match": matched}}}
    schema = make_project(schema=schema_doc).customer_schema
    compared = {c["output_column_name"] for c in build_settings(schema, MatchingConfig())["comparisons"]}
    records = pl.DataFrame({"source_system": ["crm"], "source_record_id": ["1"], "party_type": ["person"],
                            "first_name": ["Ada"], "last_name": ["Lovelace"], "email": [None], "phone": [None],
                            "postcode": [None], "country": ["GB"], "date_of_birth": [None], "tier": ["gold"]},
                           schema_overrides={"email": pl.String, "phone": pl.String, "postcode": pl.String,
                                             "date_of_birth": pl.Date})
    features = matching_frame(records.select(feature_inputs(schema)), schema)
    # A compared column must be a feature (Splink fails on a missing one); an unmatched one is not even read.
    assert ("tier" in compared) is matched and ("tier" in features.columns) is matched
    assert ("tier" in feature_inputs(schema)) is matched and "nps_score" not in feature_inputs(schema)


def _address_level_pairs(rows: list[tuple[str, str, str]], label: str) -> set[tuple[int, int]]:
    """Record pairs (by row) of ``rows`` (street, postcode, city) that the address level ``label`` holds for."""
    import duckdb

    settings = build_settings(SCHEMA, MatchingConfig())
    address = next(c for c in settings["comparisons"] if c["output_column_name"] == "address")
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
    # It confirms a name match like the same postcode does (names alone never link).
    from cmdm_pipeline.stages.match_model import corroborating_levels

    model = build_settings(SCHEMA, MatchingConfig())
    address = next(c for c in model["comparisons"] if c["output_column_name"] == "address")
    labels = [lvl.get("label_for_charts") for lvl in address["comparison_levels"] if not lvl.get("is_null_level")]
    lowest = corroborating_levels(model, SCHEMA)["gamma_address"]
    confirming = {labels[len(labels) - 1 - level] for level in range(lowest, len(labels))}
    assert confirming == {"same street, house number and postcode",
                          "same street and house number, not the same postcode", "same postcode"}
