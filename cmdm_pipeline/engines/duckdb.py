"""The DuckDB engine: Splink in a scratch DuckDB file of its own, never the warehouse."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import polars as pl

from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.interrupts import interruptible
from cmdm_pipeline.scratch import private_scratch

if TYPE_CHECKING:
    from splink import DuckDBAPI
    from splink.internals.splink_dataframe import SplinkDataFrame


@contextmanager
def scratch_db(memory_limit: str) -> Iterator[DuckDBAPI]:
    """Splink's DuckDB: a file in a private scratch folder (0700, files 0600, removed afterwards, and by the
    next run after a crash: :mod:`cmdm_pipeline.scratch`), so large jobs spill to disk instead of holding
    every blocked pair in memory. Never the warehouse."""
    import duckdb
    from splink import DuckDBAPI

    with private_scratch("splink") as folder:
        con = interruptible(duckdb.connect(str(folder / "splink.duckdb")))
        try:
            con.execute("SET temp_directory = $dir", {"dir": str(folder / "spill")})
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET memory_limit = $limit", {"limit": memory_limit})
            # SQL from cmdm.yaml (blocking rules, comparisons) runs here: it may read, write or attach no file
            # (read_text('/etc/passwd'), COPY ... TO, ATTACH) and cannot switch that back. Records come in by
            # register() (Arrow in memory) and Splink's charts are written by Python: neither needs the file system.
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            yield DuckDBAPI(connection=con)
            crash_point("matching.scratch_written")  # Splink's tables (the records, the pairs) are in the file
        finally:
            con.close()


class DuckDBEngine:
    """Splink's DuckDB backend; the model's own dialect, so settings pass through unchanged."""

    name = "duckdb"
    u_chunks = 10  # Splink's default: a comparison's sampling stops early once each level has 100 counts

    def __init__(self, memory_limit: str) -> None:
        self.memory_limit = memory_limit

    def workspace(self) -> Any:
        return scratch_db(self.memory_limit)

    def settings(self, settings: dict[str, Any], list_columns: Collection[str]) -> dict[str, Any]:
        return settings

    def rule(self, sql: str, list_columns: Collection[str]) -> str:
        return sql

    def select(self, table: SplinkDataFrame, expressions: list[str]) -> pl.DataFrame:
        relation = table.as_duckdbpyrelation()
        selected = relation.query("t", f"SELECT {', '.join(expressions)} FROM t")  # noqa: S608 - expressions are the caller's constants
        assert selected is not None  # a SELECT always has a result
        return selected.pl()

    def trained(self, trained: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        return trained
