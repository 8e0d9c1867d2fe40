"""History: every version of every golden record, valid from one run until a later one changes it.

A version is told from the next by a keyed digest of the golden record's values (``version_digest``,
stored beside it), so a night compares digests and never decrypts the history: the history grows
by the versions that begin (the warehouse appends them and closes the ones they end, see
:class:`cmdm_pipeline.warehouse.Versions`), and a night's cost does not grow with it.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

VERSION_DIGEST = "version_digest"
CURRENT_VERSION_COLUMNS = ("master_id", "valid_from", VERSION_DIGEST)
#: Columns of a version that are the history's bookkeeping, not the golden record's values.
BOOKKEEPING_COLUMNS = ("master_id", "valid_from", "valid_to", "run_id", VERSION_DIGEST)


def value_columns(golden: pl.DataFrame) -> list[str]:
    """The columns whose values make a version: all but the master id and the version bookkeeping."""
    return [c for c in golden.columns if c not in BOOKKEEPING_COLUMNS]


def with_version_start(golden: pl.DataFrame, current: pl.DataFrame | None, now: dt.datetime) -> pl.DataFrame:
    """``golden`` (with its ``version_digest``) plus ``valid_from``: the start of each master's current
    version where its digest is the one ``current`` (master_id, valid_from, version_digest) holds, else
    ``now``, when a new version begins."""
    at = pl.lit(now, dtype=pl.Datetime("us", "UTC"))
    if current is None or current.is_empty():
        return golden.with_columns(at.alias("valid_from"))
    before = current.select("master_id", pl.col("valid_from").alias("__since"), pl.col(VERSION_DIGEST).alias("__before"))
    return (
        golden.join(before, on="master_id", how="left", maintain_order="left")
        .with_columns(pl.when(pl.col("__before") == pl.col(VERSION_DIGEST)).then("__since").otherwise(at).alias("valid_from"))
        .drop("__since", "__before")
    )
