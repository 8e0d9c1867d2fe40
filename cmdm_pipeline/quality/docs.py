"""Data Docs: GX's HTML site of the suite and this run's validation results, published whole.

The site is built into a fresh folder beside the published one and swapped in afterwards, so
the published site is always one complete build (never half of one, never last run's pages
mixed with this run's). The pages load their styling and scripts from public CDNs when opened
in a browser; the pipeline itself downloads nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: The site every ephemeral GX context already has; pointed at our folder.
SITE_NAME = "local_site"


def docs_folder(warehouse_path: Path) -> Path:
    """Where the published site lives: ``<warehouse folder>/quality/data_docs``."""
    return warehouse_path.parent / "quality" / "data_docs"


def site_config(folder: Path) -> dict[str, Any]:
    return {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def building_folder(published: Path, run_id: str) -> Path:
    """A fresh, empty folder to build this run's site in; half-built sites of failed runs are removed."""
    for stale in published.parent.glob(f"{published.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return published.with_name(f"{published.name}.building-{run_id}")


def publish(built: Path, published: Path) -> Path:
    """Swap the built site in for the published one; returns the published index page."""
    retired = published.with_name(f"{published.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if published.exists():
        published.rename(retired)
    built.rename(published)
    shutil.rmtree(retired, ignore_errors=True)
    return published / "index.html"
