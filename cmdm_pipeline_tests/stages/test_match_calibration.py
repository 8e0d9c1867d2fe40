"""The data's own prior, u freed of matches, and the link threshold (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from cmdm_pipeline.stages.match_calibration import candidate_pairs, decontaminated, link_threshold, match_rate


def test_candidate_pairs_are_pairs_within_a_party_type() -> None:
    frame = pl.DataFrame({"party_type": ["person"] * 4 + ["organisation"] * 3})
    assert candidate_pairs(frame) == 6 + 3


def test_the_prior_is_the_share_of_matches_the_evidence_implies() -> None:
    # 1,000 pairs scored among 1,000,000: 200 with overwhelming evidence (matches), 800 against.
    evidence = np.concatenate([np.full(200, 40.0), np.full(800, -10.0)])
    assert match_rate(evidence, 1_000_000, start=1e-3) == pytest.approx(200 / 1_000_000, rel=1e-3)
    # Evenly balanced evidence: the estimate settles where the expected matches equal the rate's share.
    rate = match_rate(np.full(1000, 10.0), 100_000, start=1e-6)
    odds = rate / (1 - rate) * 2**10
    assert rate == pytest.approx(1000 * odds / (1 + odds) / 100_000, rel=1e-6)


def test_nothing_to_learn_from_keeps_the_first_guess() -> None:
    assert match_rate(np.array([]), 10, start=0.2) == 0.2
    assert match_rate(np.array([3.0]), 0, start=0.01) == 0.01
    # No pair met Splink's deterministic rules (its prior is 0): at least one match among the pairs.
    assert match_rate(np.array([]), 10, start=0.0) == 0.1


def model(u: float, m: float, tf: bool = False) -> dict:  # type: ignore[type-arg]
    exact = {"sql_condition": "a", "m_probability": m, "u_probability": u}
    if tf:
        exact["tf_adjustment_column"] = "x"
    return {"probability_two_random_records_match": 1e-4, "comparisons": [{"output_column_name": "x", "comparison_levels": [
        {"sql_condition": "null", "is_null_level": True}, exact,
        {"sql_condition": "ELSE", "m_probability": 1 - m, "u_probability": 1 - u}]}]}


def test_u_is_freed_of_the_matches_random_pairs_contain() -> None:
    # An e-mail: random pairs agreed 3e-5 of the time, of which 2e-5 were matches (rate 4e-5 x m 0.5).
    freed = decontaminated(model(u=3e-5, m=0.5), rate=4e-5, sampled_pairs=1e12)
    level = freed["comparisons"][0]["comparison_levels"][1]
    assert level["u_probability"] == pytest.approx(1e-5 / (1 - 4e-5))
    assert freed["probability_two_random_records_match"] == 4e-5


def test_u_is_never_taken_below_its_sampling_error() -> None:
    # Everything sampled could be matches; with 2M pairs sampled, u is known to sqrt(u / 2M) at best.
    freed = decontaminated(model(u=3e-5, m=0.9), rate=1e-3, sampled_pairs=2e6)
    assert freed["comparisons"][0]["comparison_levels"][1]["u_probability"] == pytest.approx(
        math.sqrt(3e-5 / 2e6) / (1 - 1e-3))
    # A common level is left as sampled (up to the prior's share).
    common = freed["comparisons"][0]["comparison_levels"][2]["u_probability"]
    assert common == pytest.approx((1 - 3e-5 - 1e-3 * 0.1) / (1 - 1e-3))


def test_the_threshold_maximises_the_expected_pair_f1() -> None:
    p = np.array([0.99] * 90 + [0.6] * 10 + [0.2] * 10 + [0.01] * 100)
    threshold = link_threshold(p)
    true = 90 * 0.99 + 10 * 0.6
    f1 = 2 * true / (2 * true + (100 - true) + (p.sum() - true))
    assert threshold.f1 == pytest.approx(f1)
    assert threshold.probability == pytest.approx(f1 / 2)  # 0.6-pairs are worth linking, 0.2-pairs are not
    assert 0.2 < threshold.probability < 0.6
    assert threshold.log2_odds == pytest.approx(math.log2(threshold.probability / (1 - threshold.probability)))
    assert link_threshold(np.array([])).probability == 0.5
    # A model that expects to find few matches at all never links pairs it gives two to one against.
    assert link_threshold(np.array([0.03] * 5 + [1e-3] * 10_000)).probability == pytest.approx(1 / 3)
