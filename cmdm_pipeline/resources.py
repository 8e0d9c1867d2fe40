"""Dagster resources: the warehouse, configured per deployment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.interrupts import queries_stop_on_signal
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.run_lock import run_lock
from cmdm_pipeline.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file the pipeline writes its tables into."""

    path: str = Field(description="Path of the warehouse DuckDB file.")

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[WarehouseResource]:
        """Hold the warehouse's run lock for the whole run (in-process: the resource lives as long as the run),
        so a second run, from the command line or the UI, is refused at once. Meanwhile Ctrl-C, or the UI's
        Terminate (Dagster sends the run a SIGINT), stops a running DuckDB query at once."""
        with run_lock(Path(self.path), context.run.run_id if context.run else "without a run id"), \
                queries_stop_on_signal():
            yield self

    def get(self, config: ProjectConfig) -> Warehouse:
        """The warehouse, encrypting personal columns at rest unless ``protection.encrypt`` is off."""
        return open_warehouse(config, Path(self.path))
