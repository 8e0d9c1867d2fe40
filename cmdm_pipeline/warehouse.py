"""The warehouse: the one place that opens the DuckDB file and writes tables.

Writes are atomic: every table an asset writes is swapped in inside one transaction, so a
failed run leaves the previous tables whole. DuckDB allows one writing process per file,
so BI tools should read published copies, not this file while the pipeline runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from cmdm_pipeline.sql import quote_identifier, statement


class Warehouse:
    """A DuckDB warehouse file; tables in and out as Polars frames."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise FileNotFoundError(f"warehouse {self.path} does not exist yet: run the pipeline first")
        con = duckdb.connect(str(self.path), read_only=read_only)
        # Timestamps are stored and returned in UTC whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'")
        try:
            yield con
        finally:
            con.close()

    def replace(
        self, tables: dict[str, pl.DataFrame], append: dict[str, tuple[pl.DataFrame, str]] | None = None
    ) -> None:
        """Replace each named table with its frame, all or none.

        ``append`` maps a table to (rows, key column): rows whose key the table does not hold yet
        are added in the same transaction (the table is created if missing), so append-only
        tables such as ``audit_log`` change together with the tables they describe.
        """
        with self.connect() as con:
            con.begin()
            try:
                for name, frame in tables.items():
                    staged = f"__cmdm_staged_{name}"
                    con.register(staged, frame.to_arrow())
                    con.execute(statement("warehouse/replace_table", table=name, staged=staged))
                    con.unregister(staged)
                for name, (frame, key) in (append or {}).items():
                    staged = f"__cmdm_appended_{name}"
                    con.register(staged, frame.to_arrow())
                    con.execute(statement("warehouse/create_run_table", table=name, staged=staged))
                    con.execute(statement("warehouse/insert_new_rows", table=name, staged=staged, key=key))
                    con.unregister(staged)
                con.commit()
            except BaseException:
                con.rollback()
                raise

    def replace_run(self, name: str, frame: pl.DataFrame, run_id: str) -> None:
        """Write one run's rows into a table that keeps every run: earlier rows of this run are replaced."""
        staged = f"__cmdm_staged_{name}"
        with self.connect() as con:
            con.begin()
            try:
                con.register(staged, frame.to_arrow())
                con.execute(statement("warehouse/create_run_table", table=name, staged=staged))
                con.execute(statement("warehouse/delete_run", table=name), {"run_id": run_id})
                con.execute(statement("warehouse/insert_run", table=name, staged=staged))
                con.unregister(staged)
                con.commit()
            except BaseException:
                con.rollback()
                raise

    def read(self, name: str) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            return con.sql(f"SELECT * FROM {quote_identifier(name)}").pl()

    def query(self, sql: str, params: dict[str, object] | None = None) -> pl.DataFrame:
        """Run a read-only query; values are bound, never formatted in."""
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or {}).pl()

    def tables(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            return [row[0] for row in con.sql("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
