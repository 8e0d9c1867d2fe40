"""The model's blocking rules as exact-key look-ups: which records would the batch pair with one new record?

The batch pairs records by Splink's blocking rules, equi-joins such as ``l.first_name = r.first_name AND
substr(l.last_name, 1, 3) = substr(r.last_name, 1, 3) AND l.party_type = r.party_type``. For one record
against all of them a join is wasted work: per rule, each record's side of the equalities is hashed
once (DuckDB's 64-bit ``hash``), sorted, and the new record's side is looked up with
:func:`numpy.searchsorted`. A rule's conditions on one side only (``l.party_type = 'organisation'``)
decide which records enter its index, and whether the new record looks it up at all; conditions on
both sides that are not equalities (``levenshtein(l.x, r.x) <= 1``) are checked per pair afterwards
(:attr:`Lookup.pair_check`). A new record has no place in the batch's order of records, so a rule that
is not symmetric is looked up both ways round (the batch's dedupe applies it with the lower id as ``l``
only: for such a rule resolve finds what the batch finds and the pairs it would find the other way round).
The default rules are all symmetric.

A hash collision (about one in 2^64 per look-up) would add a pair no rule makes; it is scored like any
other and changes nothing the batch found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlglot
from sqlglot import exp

from cmdm_pipeline.stages.match_blocking import DIALECT, all_true, parse_rule, unqualified


class BlockingRuleError(ValueError):
    """A blocking rule with no equality between the two records' values: nothing to look records up by."""


@dataclass(frozen=True)
class Lookup:
    """One rule, one way round: the records' side (hashed at build) and the new record's side."""

    record_hash: str  # SQL over a record's columns
    record_condition: str  # SQL: the record enters this look-up's index
    query_key: str  # SQL over the new record's columns: its key, or null when it cannot pair this way
    pair_check: str | None  # the rule over pair columns (``x_l`` the new record, ``x_r`` a record), if it needs checking


def lookups(rules: list[str], type_of: Any) -> list[Lookup]:
    """Every look-up the ``rules`` need, the same one once. ``type_of(sql)``: the DuckDB type of an
    expression over a record; sides of different types are hashed as text (DuckDB hashes 5 as INTEGER
    and 5 as BIGINT differently, though they are equal)."""
    if not rules:
        raise BlockingRuleError("the model has no blocking rules: resolve would find no one")
    found: dict[tuple[str, str, str], str | None] = {}
    for rule in rules:
        parsed = parse_rule(rule)
        if not parsed.equalities:
            raise BlockingRuleError(
                f"blocking rule {rule!r} has no equality between a value of l and one of r (an AND of conditions): "
                "resolve looks records up by such equalities")
        sides = {"l": [unqualified(left) for left, _ in parsed.equalities],
                 "r": [unqualified(right) for _, right in parsed.equalities]}
        for i, (left, right) in enumerate(zip(sides["l"], sides["r"], strict=True)):
            if type_of(left) != type_of(right):
                sides["l"][i], sides["r"][i] = f"CAST({left} AS VARCHAR)", f"CAST({right} AS VARCHAR)"
        for query_side, record_side in (("l", "r"), ("r", "l")):
            ordered = sorted(zip(sides[record_side], sides[query_side], strict=True))  # one look-up for a symmetric rule
            record_keys, query_keys = [r for r, _ in ordered], [q for _, q in ordered]
            record_condition = all_true([*(f"{k} IS NOT NULL" for k in record_keys),
                                         *(unqualified(c) for c in parsed.only[record_side])])
            query_condition = all_true([*(f"{k} IS NOT NULL" for k in query_keys),
                                        *(unqualified(c) for c in parsed.only[query_side])])
            # Pair columns: the new record's values end in _l, the record's in _r, whichever side each takes here.
            rename = {query_side: "_l", record_side: "_r"}
            # The whole rule, not its pair conditions only: several rules' checks are OR-ed per pair.
            check = unqualified(parsed.tree, rename) if parsed.pair else None
            key = (f"hash({', '.join(record_keys)})", record_condition,
                   f"CASE WHEN {query_condition} THEN hash({', '.join(query_keys)}) END")
            if key in found and found[key] is not None and check is not None:
                found[key] = f"({found[key]}) OR ({check})"
            elif key in found:
                found[key] = None  # one way needs no check: the look-up alone makes the pair
            else:
                found[key] = check
    return [Lookup(record, condition, query, check) for (record, condition, query), check in found.items()]


def columns_of(rules: list[str]) -> set[str]:
    """The record columns the ``rules`` read."""
    return {c.name for rule in rules for c in sqlglot.parse_one(rule, dialect=DIALECT).find_all(exp.Column)}


@dataclass(frozen=True)
class KeyIndex:
    """Records by the hash of their side of a rule: ``keys`` sorted, record positions alongside."""

    keys: np.ndarray  # uint64
    ids: np.ndarray  # int32

    @classmethod
    def build(cls, con: Any, table: str, lookup: Lookup) -> KeyIndex:
        keyed = con.execute(
            f"SELECT unique_id, {lookup.record_hash} AS k FROM {table} WHERE {lookup.record_condition}"  # noqa: S608 - the model's SQL
        ).fetchnumpy()
        order = np.argsort(keyed["k"], kind="stable")
        return cls(np.ascontiguousarray(keyed["k"][order]), keyed["unique_id"][order].astype(np.int32))

    def find(self, key: int) -> np.ndarray:
        # As uint64: numpy compares a Python int below 2**63 with a uint64 array by converting the whole array
        # (1 ms at 1M records instead of 3 microseconds).
        at = np.uint64(key)
        return self.ids[np.searchsorted(self.keys, at, "left"):np.searchsorted(self.keys, at, "right")]

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.ids.nbytes)
