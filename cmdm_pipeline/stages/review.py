"""The review queue: the few decisions a data steward can change the most, within a budget.

Every merge the clustering made, and every cluster's best merge it left undone, is a decision. Its
doubt is how near it is to going the other way (:func:`doubt`); what it would change is the records
whose master moves with it (the smaller side). The queue holds the decisions with the highest doubt x records, as many as fit in the
budget (``matching.review_budget`` of the records, counting every record an item shows the steward);
every other decision stands as the model made it, and the run counts how many doubtful ones that was.
Ties are broken by record keys: the same input gives the same queue, item for item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

#: A decision the model gives the other answer at least this chance is doubtful (worth a steward's look).
DOUBTFUL = 0.05


@dataclass(frozen=True)
class Queue:
    items: pl.DataFrame  # one row per queued decision, most valuable first
    doubtful: int  # decisions with at least DOUBTFUL doubt
    decided_automatically: int  # doubtful decisions left to the model (over budget)


def doubt(gain: pl.Expr, merged: pl.Expr) -> pl.Expr:
    """How near the decision is to going the other way: ``1 / (1 + 2^margin)``, the margin being the
    decision's weight beyond the link threshold in its own direction (above for a merge, below for
    groups kept apart). Over 0.5 when the weight favours the other answer (a merge the last pass of
    clustering undid)."""
    return 1 / (1 + 2.0 ** pl.when(merged).then(gain).otherwise(-gain))


def review_queue(decisions: pl.DataFrame, budget: int) -> Queue:
    """``decisions``: key_l, key_r (the strongest record pair, smaller key left), gain, size_l, size_r,
    merged, shown (records the item shows), plus any columns to carry. The most valuable doubtful ones
    whose records fit in ``budget`` records, ordered."""
    ranked = (
        decisions.filter(pl.col("gain").is_finite())
        .with_columns(doubt(pl.col("gain"), pl.col("merged")).alias("doubt"),
                      pl.min_horizontal("size_l", "size_r").alias("records_affected"))
        .filter(pl.col("doubt") >= DOUBTFUL)
        .with_columns((pl.col("doubt") * pl.col("records_affected")).alias("priority"))
        .sort(["priority", "key_l", "key_r"], descending=[True, False, False])
    )
    queued = ranked.filter(pl.Series(_fits(ranked["shown"].to_numpy(), budget)))
    return Queue(queued, ranked.height, ranked.height - queued.height)


def _fits(shown: np.ndarray, budget: int) -> np.ndarray:
    """Greedy fill in rank order: an item too large for what is left is passed over for smaller ones.

    A loop over the ranked items (each one's fit depends on those taken before it); it stops as soon
    as not even the smallest item left would fit.
    """
    taken = np.zeros(len(shown), dtype=bool)
    left = max(budget, 0)
    smallest_after = np.minimum.accumulate(shown[::-1])[::-1] if len(shown) else shown
    for i, size in enumerate(shown):
        if left < smallest_after[i]:
            break
        if size <= left:
            taken[i] = True
            left -= int(size)
    return taken


def review_reason(merged: pl.Expr, doubt_: pl.Expr, affected: pl.Expr) -> pl.Expr:
    """A steward-readable reason (no values of the records)."""
    return pl.format(
        "{} by the model with {}% doubt: {} record(s) would change master",
        pl.when(merged).then(pl.lit("linked")).otherwise(pl.lit("kept apart")),
        (doubt_ * 100).round(0).cast(pl.Int64),
        affected,
    )
