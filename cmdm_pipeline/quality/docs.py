"""Data Docs: GX's HTML site of the suite and this run's validation results, published whole.

The site is built into a fresh folder beside the published one and swapped in afterwards, so
the published site is always one complete build (never half of one, never last run's pages
mixed with this run's). GX's pages load jQuery, Bootstrap, Vega and Font Awesome from public
CDNs, which GX does not ship; offline, a browser waits on those scripts and shows a blank page.
So every reference to a remote script or stylesheet is removed before publishing: the pages are
rendered HTML already and read as plain HTML, without Bootstrap's styling, sorting, filtering or charts.
GX's index page is the exception: bootstrap-table fills its lists in the browser, so it is replaced by
:func:`site_index`, plain HTML listing the pages GX wrote.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


#: The result's status in the Overview header of a validation result page.
_STATUS = re.compile(r"Status:</span>\s*(?:<i[^>]*></i>)?\s*(Succeeded|Failed)")
_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
          "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}.Failed{color:#b00}.Succeeded{color:#070}")


def site_index(site: Path) -> str:
    """The index page of a built site: every validation result page (GX writes
    ``validations/<suite>/<run name>/<run time>/<batch>.html``), newest first, and every suite page."""
    def link(page: Path, text: str) -> str:
        return f'<a href="{quote(page.relative_to(site).as_posix())}">{html.escape(text)}</a>'

    results = []
    for page in site.glob("validations/**/*.html"):
        *suite, run_name, run_time, batch = page.relative_to(site / "validations").with_suffix("").parts
        try:
            shown = dt.datetime.strptime(run_time, "%Y%m%dT%H%M%S.%fZ").strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            shown = run_time
        status = _STATUS.search(page.read_text(encoding="utf-8"))
        success = status.group(1) if status else "unknown"
        results.append((run_time, f"<tr><td>{html.escape('.'.join(suite))}</td><td>{html.escape(batch)}</td>"
                        f"<td>{html.escape(run_name)}</td><td>{shown}</td><td class=\"{success}\">{success}</td>"
                        f"<td>{link(page, 'result')}</td></tr>"))
    suites = [f"<li>{link(page, '.'.join(page.relative_to(site / 'expectations').with_suffix('').parts))}</li>"
              for page in sorted(site.glob("expectations/**/*.html"))]
    rows = [row for _, row in sorted(results, key=lambda r: r[0], reverse=True)]
    return "\n".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Data Docs</title>',
        f"<style>{_STYLE}</style></head><body>", "<h1>Data Docs</h1>", "<h2>Validation results</h2>",
        "<table><tr><th>Suite</th><th>Batch</th><th>Run</th><th>Run time</th><th>Status</th><th>Page</th></tr>",
        *rows, "</table>", "<h2>Expectation suites</h2>", "<ul>", *suites, "</ul>", "</body></html>", ""])


def publish(built: Path, published: Path) -> Path:
    """Swap the built site in for the published one, made readable offline; returns the published index page."""
    for page in built.rglob("*.html"):
        page.write_text(without_remote_assets(page.read_text(encoding="utf-8")), encoding="utf-8")
    (built / "index.html").write_text(site_index(built), encoding="utf-8")
    retired = published.with_name(f"{published.name}.retired")
    shutil.rmtree(retired, ignore_errors=True)
    if published.exists():
        published.rename(retired)
    built.rename(published)
    shutil.rmtree(retired, ignore_errors=True)
    return published / "index.html"
