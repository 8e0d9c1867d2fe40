"""Blocking rules read as SQL, and the work they would make bounded before Splink is asked to do it.

A blocking rule such as ``l.last_name = r.last_name AND l.city = r.city`` pairs every two records of a
*block* (records with the same values on each side of its equalities): a block of n records gives
n(n-1)/2 pairs. The pairs grow with the square of a block's size, so a data set ten times larger with
the same common values gives about a hundred times the pairs (the bundled generator's rules gave 31.5M
at 1M records; at 10M, Splink's spill passed 46 GB before scoring finished).

:func:`bounded_blocking` counts each rule's blocks before scoring. When all rules together would give
more than ``matching.max_pairs_per_record`` pairs per record, the largest blocks are left out, largest
first and blocks of one size together, until the rest fits: a record in a left-out block of one rule
is still paired by the other rules (its e-mail, phone, date of birth). The pairs of a huge block are
the ones least likely to be one customer: their shared value is common, so agreeing on it is weak
evidence. The records get a flag column per such rule, and the rule an ``AND NOT l.<flag>``; the
saved model is not changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlglot
from sqlglot import exp

DIALECT = "duckdb"
#: Below this many pairs blocking is never bounded: scoring them takes seconds on one core.
MIN_PAIR_BUDGET = 5_000_000
FLAG = "__cmdm_unblocked_{rule}_{side}"
#: Under the tree Dagster captures into the running step's log: the warning shows in the UI's run log and
#: on the terminal as the step's own line, not as a bare line beside the run's.
log = logging.getLogger("dagster.builtin.cmdm.blocking")


def unqualified(expression: exp.Expr, rename: dict[str, str] | None = None) -> str:
    """The SQL of ``expression`` without ``l.``/``r.``; with ``rename``, ``l.x`` becomes ``x<rename[l]>``."""
    def unqualify(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column):
            return exp.column(node.name + (rename or {}).get(node.table, ""), quoted=True)
        return node

    return expression.transform(unqualify).sql(dialect=DIALECT)


def _sides(expression: exp.Expr) -> set[str]:
    return {c.table for c in expression.find_all(exp.Column)}


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    """The conditions of an AND, however parenthesised: ``(a AND b) AND c`` gives a, b, c."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*_conjuncts(node.left), *_conjuncts(node.right)]
    return [node]


def all_true(conditions: list[str]) -> str:
    return " AND ".join(f"({c})" for c in conditions) or "TRUE"


@dataclass(frozen=True)
class ParsedRule:
    tree: exp.Expr  # the whole rule
    equalities: list[tuple[exp.Expr, exp.Expr]]  # (l side, r side)
    only: dict[str, list[exp.Expr]]  # "l"/"r" -> conditions on that side only
    pair: list[exp.Expr]  # conditions on both sides, not equalities (or on neither)

    def keys(self, side: str) -> list[str]:
        """This side's values of the equalities, in the other side's order: a block is one value of these."""
        return [unqualified(pair[0 if side == "l" else 1]) for pair in self.equalities]

    def condition(self, side: str) -> str:
        """A record takes this side of the rule at all: its keys are filled and its one-side conditions hold."""
        return all_true([*(f"{k} IS NOT NULL" for k in self.keys(side)), *(unqualified(c) for c in self.only[side])])

    @property
    def symmetric(self) -> bool:
        return self.keys("l") == self.keys("r") and self.condition("l") == self.condition("r")


def parse_rule(rule: str) -> ParsedRule:
    equalities: list[tuple[exp.Expr, exp.Expr]] = []
    only: dict[str, list[exp.Expr]] = {"l": [], "r": []}
    pair: list[exp.Expr] = []
    tree = sqlglot.parse_one(rule, dialect=DIALECT)
    for condition in _conjuncts(tree):
        sides = _sides(condition)
        if isinstance(condition, exp.EQ) and {*_sides(condition.left), *_sides(condition.right)} == {"l", "r"} and (
                len(_sides(condition.left)) == 1 and len(_sides(condition.right)) == 1):
            left, right = condition.left, condition.right
            equalities.append((left, right) if _sides(left) == {"l"} else (right, left))
        elif sides in ({"l"}, {"r"}):
            only[next(iter(sides))].append(condition)
        elif not sides and isinstance(condition, exp.Boolean) and condition.this:
            continue  # TRUE
        else:
            pair.append(condition)
    return ParsedRule(tree, equalities, only, pair)


@dataclass(frozen=True)
class Bounded:
    """The records and rules to score with, and what was left out (counts only: no values, no PII)."""

    features: pl.DataFrame  # with one flag column per side of each bounded rule
    rules: list[str]
    report: dict[str, int]


def _block(rule: ParsedRule, side: str) -> str:
    """A record's block under one side of ``rule``, as a hash: a collision (about 1 in 2^64 per two blocks)
    merges two blocks' counts. Sides that differ are compared as text, as their types may differ too."""
    keys = rule.keys(side) if rule.symmetric else [f"CAST({k} AS VARCHAR)" for k in rule.keys(side)]
    return f"hash({', '.join(keys) or 'NULL'})"  # no equality: one block of every record


def _block_sql(rule: ParsedRule, side: str) -> str:
    # The config's SQL, checked when the config was loaded, run in a sandboxed DuckDB.
    return f"SELECT {_block(rule, side)} AS k, count(*) AS n FROM records WHERE {rule.condition(side)} GROUP BY k"  # noqa: S608


def _blocks_sql(index: int, rule: ParsedRule) -> str:
    """Each block of a rule with its pairs: n(n-1)/2, or n_l * n_r / 2 for a rule whose sides differ."""
    if rule.symmetric:
        return f"SELECT {index} AS rule, k, n * (n - 1) // 2 AS pairs FROM ({_block_sql(rule, 'l')}) WHERE n > 1"  # noqa: S608
    return (f"SELECT {index} AS rule, k, l.n * r.n // 2 AS pairs FROM ({_block_sql(rule, 'l')}) l "  # noqa: S608
            f"JOIN ({_block_sql(rule, 'r')}) r USING (k)")


def pair_limit(sizes: pl.DataFrame, budget: int) -> int | None:
    """The largest block (in pairs) that is kept, so that the kept blocks give at most ``budget`` pairs.

    ``sizes``: pairs, blocks (how many blocks of that many pairs). None: everything fits. Blocks of one
    size are kept or left out together, so the result does not depend on the order of the records.
    """
    ordered = sizes.sort("pairs", descending=True).with_columns(
        (pl.col("pairs") * pl.col("blocks")).cum_sum().alias("left_out"))
    total = int(ordered["left_out"][-1]) if ordered.height else 0
    if total <= budget:
        return None
    fits = ordered.filter(total - pl.col("left_out") <= budget)["pairs"]
    below = ordered.filter(pl.col("pairs") < fits[0])["pairs"]
    return int(below[0]) if below.len() else 0


def pair_budget(records: int, max_pairs_per_record: int | None) -> int | None:
    """The pairs blocking may give ``records``; None when no rules could give more (or no bound is set)."""
    budget = max(MIN_PAIR_BUDGET, (max_pairs_per_record or 0) * records)
    return None if max_pairs_per_record is None or records * (records - 1) // 2 <= budget else budget


def bounded_blocking(features: pl.DataFrame, rules: list[str], budget: int, connection: Any) -> Bounded:
    """``rules`` with their largest blocks left out when all give more than ``budget`` pairs
    (:func:`pair_budget`); ``connection``: a sandboxed DuckDB."""
    report = {"pairs_blocked": 0, "pairs_left_out": 0, "blocks_left_out": 0, "block_pair_limit": 0}
    parsed = [parse_rule(rule) for rule in rules]
    columns = sorted({c.name for rule in parsed for c in rule.tree.find_all(exp.Column)} | {"unique_id"})
    with _registered(connection, features.select(columns)):
        connection.execute(f"CREATE OR REPLACE TEMP TABLE cmdm_blocks AS {' UNION ALL '.join(_blocks_sql(i, r) for i, r in enumerate(parsed))}")
        try:
            sizes = connection.sql("SELECT pairs, count(*) AS blocks FROM cmdm_blocks GROUP BY pairs").pl()
            limit = pair_limit(sizes, budget)
            total = int((sizes["pairs"] * sizes["blocks"]).sum())
            report["pairs_blocked"] = total
            if limit is None:
                return Bounded(features, rules, report)
            left = sizes.filter(pl.col("pairs") > limit)
            report |= {"pairs_left_out": int((left["pairs"] * left["blocks"]).sum()),
                       "blocks_left_out": int(left["blocks"].sum()), "block_pair_limit": limit}
            flags, bounded_rules = [], []
            for i, (rule, sql) in enumerate(zip(parsed, rules, strict=True)):
                sides = ("l",) if rule.symmetric else ("l", "r")
                ids = {side: connection.sql(
                    f"SELECT unique_id FROM records WHERE {rule.condition(side)} AND {_block(rule, side)} IN "  # noqa: S608
                    f"(SELECT k FROM cmdm_blocks WHERE rule = {i} AND pairs > {limit})").pl()["unique_id"] for side in sides}
                if not any(found.len() for found in ids.values()):
                    bounded_rules.append(sql)
                    continue
                names = {side: FLAG.format(rule=i, side=side) for side in sides}
                flags += [pl.col("unique_id").is_in(found.implode()).alias(names[side]) for side, found in ids.items()]
                bounded_rules.append(f"({sql}) AND NOT l.{names['l']} AND NOT r.{names.get('r', names['l'])}")
        finally:
            connection.execute("DROP TABLE IF EXISTS cmdm_blocks")
    log.warning("blocking: %s blocks of more than %s pairs each left out (%s of %s pairs) to stay within %s pairs "
                "(matching.max_pairs_per_record)", f"{report['blocks_left_out']:,}", f"{limit:,}",
                f"{report['pairs_left_out']:,}", f"{total:,}", f"{budget:,}")
    return Bounded(features.with_columns(flags), bounded_rules, report)


@contextmanager
def _registered(connection: Any, frame: pl.DataFrame) -> Iterator[None]:
    connection.register("records", frame.to_arrow())
    try:
        yield
    finally:
        connection.unregister("records")
