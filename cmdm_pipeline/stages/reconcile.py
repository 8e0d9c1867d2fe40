"""Reconcile: every row read from a source ends validated, quarantined or erased (dropped by an erasure
tombstone, see docs/concepts/erasure.md), or the run fails."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import polars as pl

RECONCILIATION_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "source_system": pl.String(),
    "rows_read": pl.Int64(),
    "rows_validated": pl.Int64(),
    "rows_quarantined": pl.Int64(),
    "rows_erased": pl.Int64(),  # dropped at extract: an erasure tombstone matched them (no values kept)
    "balanced": pl.Boolean(),
    "reconciled_at": pl.Datetime("us", "UTC"),
}


class ReconciliationError(RuntimeError):
    """Rows were lost or duplicated between extract and validation."""


def reconcile(
    run_id: str,
    rows_read: dict[str, int],
    validated: pl.DataFrame,
    quarantined: pl.DataFrame,
    at: dt.datetime,
    erased: dict[str, int] | None = None,
) -> pl.DataFrame:
    """One row per source: rows read, validated, quarantined, erased, and whether they add up.

    ``rows_read`` counts the rows each raw table holds; ``erased`` the rows extract dropped before
    storing them (erasure tombstones), which were read too.
    """
    erased = erased or {}
    read = pl.DataFrame(
        {"source_system": list(rows_read), "rows_read": [n + erased.get(s, 0) for s, n in rows_read.items()],
         "rows_erased": [erased.get(s, 0) for s in rows_read]},
        schema={"source_system": pl.String, "rows_read": pl.Int64, "rows_erased": pl.Int64},
    )

    def counts(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.group_by("source_system").agg(pl.len().cast(pl.Int64).alias(name))

    # A full join so a source that appears only downstream (a bug) is reported too.
    table = (
        read.join(counts(validated, "rows_validated"), on="source_system", how="full", coalesce=True)
        .join(counts(quarantined, "rows_quarantined"), on="source_system", how="full", coalesce=True)
        .with_columns(pl.col("rows_read", "rows_validated", "rows_quarantined", "rows_erased").fill_null(0))
        .with_columns(
            (pl.col("rows_read") == pl.col("rows_validated") + pl.col("rows_quarantined") + pl.col("rows_erased"))
            .alias("balanced"),
            pl.lit(run_id).alias("run_id"),
            pl.lit(at, dtype=pl.Datetime("us", "UTC")).alias("reconciled_at"),
        )
        .sort("source_system")
    )
    return table.select(list(RECONCILIATION_COLUMNS))


def assert_balanced(table: pl.DataFrame) -> None:
    """Raise :class:`ReconciliationError` naming every source whose counts do not add up."""
    broken = table.filter(~pl.col("balanced"))
    if broken.height:
        details = "; ".join(
            f"{r['source_system']}: read {r['rows_read']}, validated {r['rows_validated']}, "
            f"quarantined {r['rows_quarantined']}, erased {r['rows_erased']}"
            for r in broken.iter_rows(named=True)
        )
        raise ReconciliationError(f"row counts do not reconcile for run {table['run_id'][0]}: {details}")


def source_shrinkage(
    rows_read: dict[str, int], baseline: dict[str, int] | None, retired: Collection[str], max_shrink: float,
    accepted: Collection[str] = (),
) -> list[str]:
    """What stops a run before matching: a source that yields no rows, shrank by more than ``max_shrink``
    since ``baseline`` (rows read per source by the last run that assigned master ids; None: there is none),
    or was read then and is now neither configured nor retired. Sources in ``accepted`` pass. One message
    per source, naming it and both counts (counts only: no values)."""
    baseline = baseline or {}
    problems = []
    for source, now in sorted(rows_read.items()):
        before = baseline.get(source)
        if source in accepted:
            continue
        if now == 0 and before != 0:
            problems.append(f"{source}: read 0 rows" + (f", {before:,} at the last good run" if before else ""))
        elif before and (before - now) / before > max_shrink:
            problems.append(f"{source}: read {now:,} rows, {before:,} at the last good run "
                            f"(-{(before - now) / before:.0%}, more than quality.max_shrink {max_shrink:.0%})")
    for source in sorted(set(baseline) - set(rows_read) - set(retired) - set(accepted)):
        problems.append(f"{source}: read {baseline[source]:,} rows at the last good run and is no longer in "
                        "`sources`; list it under `retired_sources` to retire it")
    return problems
