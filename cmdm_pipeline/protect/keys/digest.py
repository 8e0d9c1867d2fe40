"""Stable content digests for ids kept for years (consent event ids, audit row ids)."""

from __future__ import annotations

import duckdb
import polars as pl


def sha256_hex(texts: pl.Series) -> pl.Series:
    """sha256 of each text, as 64 hex characters (null stays null).

    DuckDB computes it in one vectorised pass; Polars' own ``hash`` is not stable across versions.
    """
    frame = texts.alias("text").to_frame()
    with duckdb.connect() as con:
        con.register("texts", frame)
        return con.sql("SELECT sha256(text) AS digest FROM texts").pl()["digest"].alias(texts.name)
