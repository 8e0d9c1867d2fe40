"""Blocking bounded by a pair budget: the largest blocks are left out, and only they."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.stages import match_blocking
from cmdm_pipeline.stages.match_blocking import FLAG, bounded_blocking, pair_budget, pair_limit, parse_rule

NAME = "l.last_name = r.last_name AND l.party_type = r.party_type"
EMAIL = "l.email = r.email"
SWAPPED = "l.first_name = r.last_name AND l.last_name = r.first_name"


def records(*groups: tuple[int, str, str, str | None]) -> pl.DataFrame:
    """``groups``: (how many, first name, last name, e-mail or None); e-mails get the record's number appended."""
    rows = [(first, last, None if email is None else f"{email}{i}" if email.endswith("-") else email)
            for count, first, last, email in groups for i in range(count)]
    return pl.DataFrame(rows, schema=["first_name", "last_name", "email"], orient="row").with_row_index(
        "unique_id").with_columns(pl.col("unique_id").cast(pl.Int64), pl.lit("person").alias("party_type"))


def test_a_rules_sides_keys_and_conditions_are_read_from_its_sql() -> None:
    org = parse_rule("l.org = r.org AND l.party_type = 'organisation' AND r.party_type = 'organisation'")
    assert org.keys("l") == org.keys("r") == ['"org"'] and org.symmetric
    assert org.condition("l") == """("org" IS NOT NULL) AND ("party_type" = 'organisation')"""
    swapped = parse_rule(SWAPPED)
    assert not swapped.symmetric and swapped.keys("r") == ['"last_name"', '"first_name"']


def test_the_largest_blocks_go_first_and_blocks_of_one_size_together() -> None:
    sizes = pl.DataFrame({"pairs": [45, 6, 6, 1], "blocks": [1, 1, 1, 3]})  # 45 + 12 + 3 = 60 pairs
    assert pair_limit(sizes, 60) is None
    assert pair_limit(sizes, 59) == 6  # the 45-pair block goes
    assert pair_limit(sizes, 14) == 1  # both 6-pair blocks go, though one would have been enough
    assert pair_limit(sizes, 2) == 0


def test_the_budget_is_per_record_and_never_below_the_floor() -> None:
    assert pair_budget(1_000_000, None) is None
    assert pair_budget(100, 1) is None  # 4,950 pairs in all: under the floor whatever the rules
    assert pair_budget(1_000_000, 50) == 50_000_000
    assert pair_budget(10_000, 50) == match_blocking.MIN_PAIR_BUDGET


def test_records_of_a_left_out_block_are_flagged_for_that_rule_only(caplog: pytest.LogCaptureFixture) -> None:
    frame = records((10, "ann", "smith", "s-"), (2, "bo", "lee", "shared"), (2, "cy", "ng", None))
    con = duckdb.connect()
    # smith: 45 pairs, lee: 1, ng: 1; e-mail "shared": 1.
    with caplog.at_level("WARNING", logger="dagster.builtin.cmdm"):
        bounded = bounded_blocking(frame, [NAME, EMAIL], 10, con)
    # In the step's run log (Dagster captures this tree), with counts and the setting, never a value.
    [warned] = [r for r in caplog.records if r.name.startswith("dagster.builtin.cmdm")]
    assert warned.getMessage() == ("blocking: 1 blocks of more than 1 pairs each left out (45 of 48 pairs) to stay "
                                   "within 10 pairs (matching.max_pairs_per_record)")
    assert bounded.report == {"pairs_blocked": 48, "pairs_left_out": 45, "blocks_left_out": 1, "block_pair_limit": 1}
    flag = FLAG.format(rule=0, side="l")
    assert bounded.features.filter(flag)["last_name"].unique().to_list() == ["smith"]
    assert bounded.rules == [f"({NAME}) AND NOT l.{flag} AND NOT r.{flag}", EMAIL]
    assert set(bounded.features.columns) - set(frame.columns) == {flag}
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone() == (0,)  # its work table went


def test_within_budget_nothing_changes() -> None:
    frame = records((10, "ann", "smith", None))
    bounded = bounded_blocking(frame, [NAME], 45, duckdb.connect())
    assert bounded.features.equals(frame) and bounded.rules == [NAME] and bounded.report["pairs_blocked"] == 45


def test_a_rule_whose_sides_differ_counts_the_pairs_it_makes_and_flags_each_side() -> None:
    # ann smith x3 pair with smith ann x2 (swapped names): 6 pairs, in two blocks as the rule sees them
    frame = records((3, "ann", "smith", None), (2, "smith", "ann", None), (1, "bo", "lee", None))
    bounded = bounded_blocking(frame, [SWAPPED], 0, duckdb.connect())
    assert bounded.report["pairs_blocked"] == 6 and bounded.report["pairs_left_out"] == 6
    left, right = FLAG.format(rule=0, side="l"), FLAG.format(rule=0, side="r")
    assert bounded.rules == [f"({SWAPPED}) AND NOT l.{left} AND NOT r.{right}"]
    assert bounded.features.filter(left).height == bounded.features.filter(right).height == 5


@pytest.mark.parametrize("rule", ["l.email = r.email AND levenshtein(l.last_name, r.last_name) < 2",
                                  "levenshtein(l.last_name, r.last_name) < 2"])
def test_conditions_on_both_records_count_as_the_join_they_filter(rule: str) -> None:
    """The join does the work of every pair of the block before such a condition is checked."""
    frame = records((4, "ann", "smith", "same"), (2, "bo", "lee", "same"))
    bounded = bounded_blocking(frame, [rule], 0, duckdb.connect())
    assert bounded.report["pairs_blocked"] == 15  # 6 records, one block (no equality: every record)
