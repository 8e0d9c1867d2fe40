"""Data Docs: GX's HTML site of the suite and this run's validation results, published whole.

The site is built into a fresh folder beside the published one and swapped in afterwards, so
the published site is always one complete build (never half of one, never last run's pages
mixed with this run's). GX's pages load jQuery, Bootstrap, Vega and Font Awesome from public
CDNs, which GX does not ship; offline, a browser waits on those scripts and shows a blank page.
So every reference to a remote script or stylesheet is removed before publishing: the pages are
rendered HTML already and read as plain HTML, without Bootstrap's styling, sorting, filtering or charts.
"""

from __future__ import annotations

import re
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


#: A <script>, stylesheet <link> or <img> (GX's logo) that loads from another host.
_REMOTE = re.compile(r"""<script[^>]*\bsrc=["']https?://[^>]*>\s*</script>|<(link|img)[^>]*\b(href|src)=["']https?://[^>]*>""",
                     re.IGNORECASE)


def without_remote_assets(page: str) -> str:
    """``page`` without the scripts and stylesheets it would fetch from other hosts."""
    return _REMOTE.sub("", page)


def publish(built: Path, published: Path) -> Path:
    """Swap the built site in for the published one, made readable offline; returns the published index page."""
    for page in built.rglob("*.html"):
        page.write_text(without_remote_assets(page.read_text(encoding="utf-8")), encoding="utf-8")
    retired = published.with_name(f"{published.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if published.exists():
        published.rename(retired)
    built.rename(published)
    shutil.rmtree(retired, ignore_errors=True)
    return published / "index.html"
