"""Dagster resources: the warehouse, configured per deployment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.at_rest import AtRest
from cmdm_pipeline.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file the pipeline writes its tables into."""

    path: str = Field(description="Path of the warehouse DuckDB file.")

    def get(self, config: ProjectConfig) -> Warehouse:
        """The warehouse, encrypting personal columns at rest unless ``protection.encrypt`` is off."""
        return open_warehouse(config, Path(self.path))


def open_warehouse(config: ProjectConfig, path: Path | None = None) -> Warehouse:
    at_rest = AtRest(config) if config.protection.encrypt else None
    return Warehouse(path or config.warehouse_path, at_rest, config.warehouse.memory_limit)
