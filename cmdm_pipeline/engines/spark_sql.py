"""The model's SQL (DuckDB's dialect) in Spark's: comparison conditions and blocking rules.

sqlglot transpiles most of it (quoting, ``CAST(... AS VARCHAR)``, ``substr``, ``strftime`` formats such
as ``%Y%m%d`` to ``yyyyMMdd``, ``epoch``); what it does not know, or gets wrong, is rewritten here:

- Splink's similarity functions have other names on Spark (its jar's UDFs): ``jaro_winkler_similarity``
  is ``jaro_winkler``, ``jaro_similarity`` is ``jaro_sim``; ``damerau_levenshtein`` keeps its name.
- List functions: ``list_has_any`` is ``arrays_overlap``, ``list_intersect`` is ``array_intersect``, and
  ``len``/``length`` of a list column is ``size`` (sqlglot cannot tell a list from a string: the caller
  names the list columns).
- DuckDB's ``x[i]`` counts from 1, counts back from the end with a negative ``i``, and is null outside
  the list; Spark's ``x[i]`` counts from 0, and with ANSI on (Spark 4's default) fails outside it.
  ``try_element_at(x, i)`` is DuckDB's meaning exactly.

Before it is translated, every condition must pass the check cmdm.yaml's SQL passes when the config loads
(:func:`cmdm_pipeline.sql_checks.check_expression`: one expression of DuckDB functions, no subquery, table
or file): on DuckDB a tampered model meets a connection without file access; Spark has no such switch.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from functools import cache
from typing import Any

import sqlglot
from sqlglot import exp

from cmdm_pipeline.sql_checks import SqlCheckError, check_expression

#: DuckDB function -> the Spark function (or Splink UDF) of the same meaning.
_RENAMED = {
    "jaro_winkler_similarity": "jaro_winkler",
    "jaro_similarity": "jaro_sim",
    "list_has_any": "arrays_overlap",
    "array_has_any": "arrays_overlap",
    "list_intersect": "array_intersect",
    "array_intersect": "array_intersect",
    "list_contains": "array_contains",
    "list_has": "array_contains",
    "list_distinct": "array_distinct",
}


class SparkTranslationError(ValueError):
    """A condition of the model cannot be run on Spark (it failed the configured-SQL check)."""


def to_spark(sql: str, list_columns: Collection[str] = ()) -> str:
    """One condition or blocking rule in Spark's dialect; ``ELSE`` (Splink's catch-all level) unchanged."""
    if sql.strip().upper() == "ELSE":
        return sql
    return _to_spark(sql, frozenset(list_columns))


@cache
def _to_spark(sql: str, list_columns: frozenset[str]) -> str:
    try:
        check_expression(sql, None)
    except SqlCheckError as exc:
        raise SparkTranslationError(f"a condition of the match model {exc}") from None
    # Comparisons name a record's columns with _l/_r suffixes, blocking rules with l./r. prefixes.
    lists = list_columns | {f"{c}_{side}" for c in list_columns for side in ("l", "r")}
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError:  # e.g. "a = b) OR (c": one expression only inside the check's brackets
        raise SparkTranslationError("a condition of the match model is not one SQL expression") from None
    return tree.transform(lambda node: _spark_node(node, lists)).sql(dialect="spark")


def _spark_node(node: exp.Expr, lists: frozenset[str]) -> exp.Expr:
    if isinstance(node, exp.JarowinklerSimilarity):
        return exp.Anonymous(this="jaro_winkler", expressions=[node.this, node.expression])
    if isinstance(node, exp.ArrayOverlaps):
        return exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
    if isinstance(node, exp.Anonymous) and str(node.this).lower() in _RENAMED:
        return exp.Anonymous(this=_RENAMED[str(node.this).lower()], expressions=node.expressions)
    if isinstance(node, exp.Length) and isinstance(node.this, exp.Column) and node.this.name in lists:
        return exp.ArraySize(this=node.this)
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1 and _is_index(node.expressions[0]):
        return exp.Anonymous(this="try_element_at", expressions=[node.this, _duckdb_index(node.expressions[0])])
    return node


def _is_index(node: exp.Expr) -> bool:
    """A list index (a struct's ``s['key']`` and a slice ``x[1:2]`` are not)."""
    return not isinstance(node, exp.Slice) and not (isinstance(node, exp.Literal) and node.is_string)


def _duckdb_index(node: exp.Expr) -> exp.Expr:
    """The index as written in DuckDB (from 1; -1 the last): sqlglot subtracted one on reading it."""
    if isinstance(node, exp.Literal) and node.is_int:
        return exp.Literal.number(int(node.this) + 1)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and node.this.is_int:
        return exp.Literal.number(1 - int(node.this.this))
    return exp.Add(this=exp.Paren(this=node), expression=exp.Literal.number(1))


def spark_settings(settings: dict[str, Any], list_columns: Collection[str]) -> dict[str, Any]:
    """Splink settings in DuckDB's dialect (a saved model, or the generated settings) in Spark's.

    Only the SQL changes: comparisons and their levels keep their order, so parameters trained on
    Spark go back onto the DuckDB settings level by level (:func:`model_dialect_settings`)."""
    translated = copy.deepcopy(settings)
    for comparison in translated.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            level["sql_condition"] = to_spark(str(level["sql_condition"]), list_columns)
    rules = []
    for rule in translated.get("blocking_rules_to_generate_predictions", []):
        sql = rule["blocking_rule"] if isinstance(rule, dict) else rule
        rules.append({**(rule if isinstance(rule, dict) else {}), "blocking_rule": to_spark(sql, list_columns),
                      "sql_dialect": "spark"})
    translated["blocking_rules_to_generate_predictions"] = rules
    translated["sql_dialect"] = "spark"
    return translated


#: What training changes in a comparison level: everything else of the model is the settings' own.
_TRAINED = ("m_probability", "u_probability")


def model_dialect_settings(trained: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A model Splink trained on Spark from (translated) ``settings``, with the settings' own DuckDB SQL back.

    The top level (the prior, Splink's ids) is the trained model's; comparisons and blocking rules are the
    settings', with each level's trained m and u."""
    comparisons = copy.deepcopy(settings["comparisons"])
    if [len(c["comparison_levels"]) for c in comparisons] != [len(c["comparison_levels"]) for c in trained["comparisons"]]:
        raise ValueError("the trained model's comparisons do not match the settings it was trained from")
    for comparison, learnt in zip(comparisons, trained["comparisons"], strict=True):
        for level, learnt_level in zip(comparison["comparison_levels"], learnt["comparison_levels"], strict=True):
            for key in _TRAINED:
                if key in learnt_level:
                    level[key] = learnt_level[key]
    return {**trained, "comparisons": comparisons,
            "blocking_rules_to_generate_predictions": copy.deepcopy(settings["blocking_rules_to_generate_predictions"]),
            "sql_dialect": settings.get("sql_dialect", "duckdb")}
