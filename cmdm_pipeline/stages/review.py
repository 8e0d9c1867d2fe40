"""The review queue: the few decisions a data steward can change the most, within a budget.

Every merge the clustering made, and every cluster's best merge it left undone, is a decision. Its
doubt is the chance the model gives the other answer (``1 / (1 + 2^|gain|)``, gain in log2 odds
relative to the threshold); what it would change is the records whose master moves with it (the
smaller side). The queue holds the decisions with the highest doubt x records, at most the budget
(``matching.review_budget`` of the records); every other decision stands as the model made it, and
the run counts how many doubtful ones that was. Ties are broken by record keys: the same input gives
the same queue, item for item.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

#: A decision the model gives the other answer at least this chance is doubtful (worth a steward's look).
DOUBTFUL = 0.05


@dataclass(frozen=True)
class Queue:
    items: pl.DataFrame  # one row per queued decision, most valuable first
    doubtful: int  # decisions with at least DOUBTFUL doubt
    decided_automatically: int  # doubtful decisions left to the model (over budget)


def doubt(gain: pl.Expr) -> pl.Expr:
    """The chance the model gives the other answer than the one it took, from the decision's gain."""
    return 1 / (1 + 2.0 ** gain.abs())


def review_queue(decisions: pl.DataFrame, budget: int) -> Queue:
    """``decisions``: key_l, key_r (the strongest record pair, smaller key left), gain, size_l, size_r,
    merged, plus any columns to carry. The ``budget`` most valuable doubtful ones, ordered."""
    ranked = (
        decisions.filter(pl.col("gain").is_finite())
        .with_columns(doubt(pl.col("gain")).alias("doubt"),
                      pl.min_horizontal("size_l", "size_r").alias("records_affected"))
        .filter(pl.col("doubt") >= DOUBTFUL)
        .with_columns((pl.col("doubt") * pl.col("records_affected")).alias("priority"))
        .sort(["priority", "key_l", "key_r"], descending=[True, False, False])
    )
    queued = ranked.head(max(budget, 0))
    return Queue(queued, ranked.height, ranked.height - queued.height)


def review_reason(merged: pl.Expr, doubt_: pl.Expr, affected: pl.Expr) -> pl.Expr:
    """A steward-readable reason (no values of the records)."""
    return pl.format(
        "{} by the model with {}% doubt: {} record(s) would change master",
        pl.when(merged).then(pl.lit("linked")).otherwise(pl.lit("kept apart")),
        (doubt_ * 100).round(0).cast(pl.Int64),
        affected,
    )
