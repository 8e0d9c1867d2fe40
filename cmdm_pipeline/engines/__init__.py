"""The engines Splink's model trains and scores on: DuckDB (one machine) and Spark (a cluster, or ``local[N]``).

Both implement :class:`Engine`, the little the match model needs from one: a workspace (Splink's database
API over a private scratch area), the model's settings in the engine's SQL dialect, and a way to bring a
Splink table back as a Polars frame. The model's SQL is written, and its file saved, in DuckDB's dialect
whatever the engine: a model trained on one engine scores on the other, and the workbench (DuckDB) reads
every model. The Spark engine translates that SQL when it uses it (:mod:`cmdm_pipeline.engines.spark_sql`).

``engine_for(matching)`` picks the engine cmdm.yaml chose (``engine:``, or ``$CMDM_ENGINE``): the config
loader copies the choice into ``matching.engine``, so every function given the matching settings follows it.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from cmdm_pipeline.config import MatchingConfig

if TYPE_CHECKING:
    from splink.internals.database_api import DatabaseAPISubClass
    from splink.internals.splink_dataframe import SplinkDataFrame

#: Splink's SQL dialect of the model file and of the settings the stages build, whatever the engine.
MODEL_DIALECT = "duckdb"


class Engine(Protocol):
    """What the match model needs from an engine."""

    name: str
    #: Chunks of Splink's u sampling (``estimate_u_using_random_sampling(num_chunks=...)``).
    u_chunks: int

    def workspace(self) -> AbstractContextManager[DatabaseAPISubClass]:
        """Splink's database API over a private scratch area, cleared on the way out; one at a time per process."""
        ...

    def settings(self, settings: dict[str, Any], list_columns: Collection[str]) -> dict[str, Any]:
        """Splink settings in the model's dialect (DuckDB) made ready for this engine.

        ``list_columns``: the records' list-valued columns (SQL's ``len`` means a list's size on them)."""
        ...

    def rule(self, sql: str, list_columns: Collection[str]) -> str:
        """A blocking rule in the model's dialect, in this engine's."""
        ...

    def select(self, table: SplinkDataFrame, expressions: list[str]) -> pl.DataFrame:
        """``SELECT <expressions> FROM table`` as a Polars frame; the expressions are plain SQL both engines read."""
        ...

    def trained(self, trained: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """The model Splink trained from ``settings`` (model dialect), saved in the model's dialect."""
        ...


def engine_for(matching: MatchingConfig) -> Engine:
    """The engine the project chose, with the matching settings that concern it."""
    if matching.engine.name == "spark":
        from cmdm_pipeline.engines.spark import SparkEngine

        return SparkEngine(matching.engine.spark)
    from cmdm_pipeline.engines.duckdb import DuckDBEngine

    return DuckDBEngine(matching.memory_limit)


def list_columns(features: pl.DataFrame) -> frozenset[str]:
    """The list-valued columns of the records Splink compares (phones, name variants, house numbers)."""
    return frozenset(name for name, dtype in features.schema.items() if isinstance(dtype, pl.List))
