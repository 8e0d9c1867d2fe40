"""The model's DuckDB SQL translated for Spark, and a Spark-trained model saved back in DuckDB's (no JVM started)."""

from __future__ import annotations

import pytest

from cmdm_pipeline.config import MatchingConfig, load_config
from cmdm_pipeline.engines.spark_sql import SparkTranslationError, model_dialect_settings, spark_settings, to_spark
from cmdm_pipeline.stages.match_settings import build_settings
from cmdm_pipeline_tests.conftest import REPO_ROOT

LISTS = {"phones", "first_name_variants", "address_line_1_numbers"}


@pytest.mark.parametrize(("duckdb", "spark"), [
    ('"first_name_l" IS NULL OR "first_name_r" IS NULL', "`first_name_l` IS NULL OR `first_name_r` IS NULL"),
    # Splink's jar names its similarity functions otherwise.
    ('jaro_winkler_similarity("a_l", "a_r") >= 0.92', "JARO_WINKLER(`a_l`, `a_r`) >= 0.92"),
    ("jaro_similarity(a_l, a_r) >= 0.9", "JARO_SIM(a_l, a_r) >= 0.9"),
    ("damerau_levenshtein(CAST(d_l AS VARCHAR), CAST(d_r AS VARCHAR)) <= 1",
     "DAMERAU_LEVENSHTEIN(CAST(d_l AS STRING), CAST(d_r AS STRING)) <= 1"),
    # List functions, and len() of a list (not of a string).
    ("coalesce(list_has_any(phones_l, phones_r), false)", "COALESCE(ARRAYS_OVERLAP(phones_l, phones_r), FALSE)"),
    ('array_length(list_intersect("first_name_variants_l", "first_name_variants_r")) >= 1',
     "SIZE(ARRAY_INTERSECT(`first_name_variants_l`, `first_name_variants_r`)) >= 1"),
    ("len(address_line_1_numbers_l) = 0 OR length(first_name_l) = 1",
     "SIZE(address_line_1_numbers_l) = 0 OR LENGTH(first_name_l) = 1"),
    # DuckDB's list index: from 1, negative from the end, null outside the list.
    ("l.phones[1] = r.phones[1]", "TRY_ELEMENT_AT(l.phones, 1) = TRY_ELEMENT_AT(r.phones, 1)"),
    ("l.phones[-1] = r.phones[-1]", "TRY_ELEMENT_AT(l.phones, -1) = TRY_ELEMENT_AT(r.phones, -1)"),
    # Date formats (PITFALLS: %Y%m%d on DuckDB, yyyyMMdd on Spark) and dates.
    ("strftime(d_l, '%Y%m%d') = strftime(d_r, '%Y%m%d')", "DATE_FORMAT(d_l, 'yyyyMMdd') = DATE_FORMAT(d_r, 'yyyyMMdd')"),
    ('ABS(EPOCH("d_l") - EPOCH("d_r")) <= 2629800.0', "ABS(UNIX_TIMESTAMP(`d_l`) - UNIX_TIMESTAMP(`d_r`)) <= 2629800.0"),
    ("substr(l.first_name, 1, 3) = substr(r.first_name, 1, 3)",
     "SUBSTRING(l.first_name, 1, 3) = SUBSTRING(r.first_name, 1, 3)"),
    ("ELSE", "ELSE"),
])
def test_duckdb_sql_in_sparks_dialect(duckdb: str, spark: str) -> None:
    assert to_spark(duckdb, LISTS) == spark


@pytest.mark.parametrize("condition", [
    "(SELECT count(*) FROM cmdm_records) > 0",
    "first_name_l = first_name_r OR reflect('java.lang.System', 'exit', 1) IS NULL",
    "first_name_l = first_name_r) OR (1 = 1",
])
def test_a_tampered_condition_is_refused_before_spark_sees_it(condition: str) -> None:
    # DuckDB runs the model in a connection without file access; Spark has no such switch, so the check
    # of cmdm.yaml's SQL (one expression of DuckDB functions) guards the translation.
    with pytest.raises(SparkTranslationError, match="a condition of the match model"):
        to_spark(condition, LISTS)


def test_every_generated_condition_and_rule_is_translated() -> None:
    config = load_config(REPO_ROOT / "cmdm.yaml")
    settings = build_settings(config.customer_schema, MatchingConfig())
    translated = spark_settings(settings, LISTS)
    assert translated["sql_dialect"] == "spark" and settings["sql_dialect"] == "duckdb"  # the input is untouched
    sql = [level["sql_condition"] for c in translated["comparisons"] for level in c["comparison_levels"]]
    sql += [rule["blocking_rule"] for rule in translated["blocking_rules_to_generate_predictions"]]
    assert all(rule["sql_dialect"] == "spark" for rule in translated["blocking_rules_to_generate_predictions"])
    for duckdb_only in ("jaro_winkler_similarity", "list_has_any", "list_intersect", "epoch(", "&&", "[", '"'):
        assert not [s for s in sql if duckdb_only in s.lower()], duckdb_only
    assert any("TRY_ELEMENT_AT(l.phones, -1)" in s for s in sql)


def test_a_model_trained_on_spark_is_saved_with_the_duckdb_sql() -> None:
    config = load_config(REPO_ROOT / "cmdm.yaml")
    settings = build_settings(config.customer_schema, MatchingConfig())
    trained = spark_settings(settings, LISTS)
    trained["probability_two_random_records_match"] = 0.002
    for i, comparison in enumerate(trained["comparisons"]):
        for j, level in enumerate(comparison["comparison_levels"]):
            level.update(m_probability=0.1 * (j + 1) / (i + 1), u_probability=0.01 * (j + 1))
    saved = model_dialect_settings(trained, settings)
    assert saved["sql_dialect"] == "duckdb" and saved["probability_two_random_records_match"] == 0.002
    assert saved["blocking_rules_to_generate_predictions"] == settings["blocking_rules_to_generate_predictions"]
    for original, learnt, kept in zip(settings["comparisons"], trained["comparisons"], saved["comparisons"], strict=True):
        for level, learnt_level, kept_level in zip(original["comparison_levels"], learnt["comparison_levels"],
                                                   kept["comparison_levels"], strict=True):
            assert kept_level == {**level, "m_probability": learnt_level["m_probability"],
                                  "u_probability": learnt_level["u_probability"]}
    trained["comparisons"].pop()
    with pytest.raises(ValueError, match="do not match the settings"):
        model_dialect_settings(trained, settings)
