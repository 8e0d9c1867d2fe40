"""History: every version of every golden record, valid from one run until a later one changes it."""

from __future__ import annotations

import datetime as dt

import polars as pl


def update_history(
    history: pl.DataFrame | None, golden: pl.DataFrame, run_id: str, now: dt.datetime
) -> pl.DataFrame:
    """Close versions whose values changed or whose master is gone; open versions for new values.

    ``valid_to`` is null for the current version; a version is what the master said on any
    date ``d`` with ``valid_from <= d < valid_to``.
    """
    at = pl.lit(now, dtype=pl.Datetime("us", "UTC"))
    values = [c for c in golden.columns if c != "master_id"]
    stamped = golden.with_columns(at.alias("valid_from"), pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("valid_to"),
                                  pl.lit(run_id).alias("run_id"))
    if history is None or history.height == 0:
        return stamped.sort("master_id")
    current = history.filter(pl.col("valid_to").is_null())
    closed = history.filter(pl.col("valid_to").is_not_null())
    compared = current.join(golden, on="master_id", how="inner", suffix="__new")
    same = pl.all_horizontal(pl.col(c).eq_missing(pl.col(f"{c}__new")) for c in values)
    unchanged = compared.filter(same).select("master_id")
    keep = current.join(unchanged, on="master_id", how="semi")
    # Changed values and masters that no longer exist (merged, erased) both end here.
    ended = current.join(unchanged, on="master_id", how="anti").with_columns(at.alias("valid_to"))
    opened = stamped.join(unchanged, on="master_id", how="anti")
    return pl.concat([closed, ended, keep, opened.select(history.columns)], how="vertical_relaxed").sort(
        "master_id", "valid_from"
    )


def with_version_start(golden: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """``golden`` with ``valid_from``: since when each master's current version holds (its history row's)."""
    current = history.filter(pl.col("valid_to").is_null()).select("master_id", "valid_from")
    return golden.join(current, on="master_id", how="left", maintain_order="left")
