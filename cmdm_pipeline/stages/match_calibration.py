"""From Bayes factors to decisions: the data's own prior, u freed of matches, and the link threshold.

Splink's prior (the chance that two random records match) falls as 1/N, so no fixed threshold
holds at every size; and Splink estimates it from deterministic rules and an assumed recall. Here
it is the maximum-likelihood share of matching pairs given the model's Bayes factors of the scored
pairs (unscored pairs are taken not to match): the data's own duplicate rate. The link threshold
is the probability that maximises the expected pair F1 under the model's own probabilities, and
with it come the model's estimated precision and recall.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

#: Iterations of the prior's fixed point; it converges in a few dozen on real data.
MAX_ITERATIONS = 500
#: No pair links that the model gives two to one against, whatever F1 would gain: half the best expected
#: F1 falls that low only when the model expects to find few of the matches at all, and a master that
#: mixes two customers costs more than one split in two.
MIN_LINK_PROBABILITY = 1 / 3


def candidate_pairs(features: pl.DataFrame) -> int:
    """Record pairs that could match: two records of one party type (persons, organisations)."""
    sizes = features.group_by("party_type").len()["len"].to_numpy().astype(np.float64)
    return int((sizes * (sizes - 1) / 2).sum())


def match_rate(evidence: np.ndarray, pairs: int, start: float) -> float:
    """The share of the ``pairs`` that match, given the ``evidence`` (log2 Bayes factors) of the scored ones.

    EM on the prior alone: each step sets it to the expected number of matches under the last one,
    over all pairs. ``start``: a first guess (Splink's), returned when there is nothing to learn from
    (raised to one match among the pairs if it is lower).
    """
    if pairs <= 0:
        return start
    # A rate of 0 (no pair met Splink's deterministic rules) would make every probability 0.
    rate = min(max(start, 1.0 / pairs), 0.5)
    if evidence.size == 0:
        return rate
    factors = np.exp2(np.clip(evidence, -60.0, 60.0))
    for _ in range(MAX_ITERATIONS):
        odds = rate / (1 - rate) * factors
        new = float(np.sum(odds / (1 + odds))) / pairs
        new = min(max(new, 1e-12), 0.5)
        if abs(new - rate) <= 1e-9 * rate:
            return new
        rate = new
    return rate


def decontaminated(model: dict[str, Any], rate: float, sampled_pairs: float) -> dict[str, Any]:
    """The model with the data's prior, and u of every level freed of the matches among random pairs.

    Random pairs include a few matches: ``u`` as sampled is ``rate * m + (1 - rate) * u_true``. For an
    attribute that nearly only one person holds (an e-mail) the matches are most of what was sampled,
    and u as sampled would make agreement on it weak evidence. The correction cannot go below the
    sampling error of u (``sqrt(u / sampled_pairs)``): below it, nothing can be told apart. Levels with
    term frequencies take u per value from the frequencies, which this leaves as they are.
    """
    model = copy.deepcopy(model)
    model["probability_two_random_records_match"] = rate
    for comparison in model.get("comparisons", []):
        for level in comparison["comparison_levels"]:
            m, u = level.get("m_probability"), level.get("u_probability")
            if level.get("is_null_level") or m is None or u is None or sampled_pairs <= 0:
                continue
            floor = math.sqrt(u / sampled_pairs)
            level["u_probability"] = min(u, max(u - rate * m, floor)) / (1 - rate)
    return model


def probabilities(evidence: pl.Expr, prior: float) -> pl.Expr:
    """Match probability from evidence (log2 Bayes factors) and the prior's log2 odds."""
    return 1 / (1 + (2.0 ** -(evidence + prior)))


@dataclass(frozen=True)
class Threshold:
    """The link threshold, and the pair F1 the model expects of links at it (over the scored pairs)."""

    probability: float
    f1: float

    @property
    def log2_odds(self) -> float:
        p = min(max(self.probability, 1e-12), 1 - 1e-12)
        return math.log2(p / (1 - p))


def link_threshold(p: np.ndarray) -> Threshold:
    """The probability at or above which pairs link, chosen to maximise the expected pair F1.

    With calibrated probabilities, linking every pair with probability t or more has expected true
    links sum(p >= t), false links sum(1 - p), missed links sum(p < t). The best such F1 is reached
    by linking exactly the pairs above half of it (a known property of F1), so the threshold is F*/2:
    the same wherever a gap between probabilities falls; never below :data:`MIN_LINK_PROBABILITY`. An
    empty input gives 0.5 (the Bayes decision for a single pair).
    """
    if p.size == 0 or float(p.sum()) <= 0:
        return Threshold(0.5, 1.0)
    ordered = np.sort(p)[::-1]
    true = np.cumsum(ordered)
    false = np.cumsum(1 - ordered)
    missed = ordered.sum() - true
    f1 = 2 * true / (2 * true + false + missed)
    best = float(f1.max())
    return Threshold(max(best / 2, MIN_LINK_PROBABILITY), best)
