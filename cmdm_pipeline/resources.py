"""Dagster resources: the warehouse, configured per deployment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from cmdm_pipeline.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file the pipeline writes its tables into."""

    path: str = Field(description="Path of the warehouse DuckDB file.")

    def get(self) -> Warehouse:
        return Warehouse(Path(self.path))
