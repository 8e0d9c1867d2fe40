"""Data Docs show counts and rates, never values of records; building them touches no network."""

from __future__ import annotations

import datetime as dt
import re
import socket
from pathlib import Path
from urllib.parse import unquote

import pytest

from cmdm_pipeline.quality import validation
from cmdm_pipeline.quality.docs import building_folder, publish, site_index, without_remote_assets
from cmdm_pipeline.quality.expectations import SUITE_NAME, rule_expectations
from cmdm_pipeline.quality.validation import Batch, run_suite
from cmdm_pipeline_tests.quality.conftest import SCHEMA, TODAY, standardised_frame

# Values that break a rule in a PII column (pii: true), each of a different rule type.
CANARIES = {
    "last_name": "Qzcanarylastname",  # length
    "email": "qzcanarymail@elsewhere.test",  # pattern
    "gender": "qzcanarygender",  # allowed (warn)
}
CANARY_DATE = dt.date(2987, 6, 5)  # range


def canary_frame():  # type: ignore[no-untyped-def]
    return standardised_frame(SCHEMA, {
        "source_system": ["crm", "crm", "crm"],
        "first_name": ["Ada", None, "Alan"],
        "last_name": [CANARIES["last_name"], None, "Turing"],
        "email": [CANARIES["email"], None, "alan@example.org"],
        "gender": [CANARIES["gender"], None, "male"],
        "country": ["GB", "QZC", "GB"],
        "date_of_birth": [CANARY_DATE, None, dt.date(1912, 6, 23)],
        "nps_score": [None, None, 9.0],
    })


def build_docs(folder: Path) -> tuple[Path, str]:
    """Validate the canary rows, build the site; returns the index and every file's text."""
    run = run_suite([Batch("standardised", "standardised_customers", "crm", canary_frame())],
                    rule_expectations(SCHEMA, TODAY), "test run", folder)
    failed = dict(run.counts.select("rule", "rows_failed").iter_rows())
    assert failed["last_name.length"] == failed["email.pattern"] == failed["gender.allowed"] == 1
    assert failed["date_of_birth.range"] == 1 and failed["has_a_name"] == 1
    assert run.docs_index is not None
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file()
                     and p.suffix in (".html", ".json", ".js", ".css", ""))
    return run.docs_index, text


# The canary year on its own, in any date rendering, but not inside a longer number, id or hash (GX writes run
# ids and durations whose digits may contain "2987" by chance).
CANARY_YEAR = re.compile(r"(?<![\w.-])2987(?!\w|\.\d)")


def leaked(text: str) -> list[str]:
    found = [v for v in CANARIES.values() if v.lower() in text.lower()]
    return found + ([CANARY_DATE.isoformat()] if CANARY_DATE.isoformat() in text else []) + CANARY_YEAR.findall(text)


def test_data_docs_show_failing_counts_but_no_failing_values(tmp_path: Path) -> None:
    index, text = build_docs(tmp_path / "docs")
    assert index.is_file() and index.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert SUITE_NAME in index.read_text(encoding="utf-8")
    assert "last_name" in text and "unexpected" in text.lower()  # the failure itself is shown
    assert leaked(text) == []


def test_without_the_counts_only_result_format_gx_would_publish_the_values(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The control: the canaries are found when GX is left to its default, so the test above can fail."""
    monkeypatch.setattr(validation, "RESULT_FORMAT", {"result_format": "SUMMARY"})
    _, text = build_docs(tmp_path / "docs")
    assert CANARIES["last_name"] in text and CANARIES["email"] in text


def test_validation_and_data_docs_make_no_network_calls(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"network call: {args[:2]}")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    index, _ = build_docs(tmp_path / "docs")
    assert index.is_file()


def test_a_new_build_replaces_the_published_site_whole(tmp_path: Path) -> None:
    published = tmp_path / "quality" / "data_docs"
    first = building_folder(published, "run-1")
    build_docs(first)
    assert publish(first, published) == published / "index.html"
    (published / "stale.html").write_text("from an earlier run", encoding="utf-8")
    (published.parent / "data_docs.building-crashed-run").mkdir()  # a run that failed mid-build
    second = building_folder(published, "run-2")
    build_docs(second)
    publish(second, published)
    assert (published / "index.html").is_file() and not (published / "stale.html").exists()
    assert sorted(p.name for p in published.parent.iterdir()) == ["data_docs"]


@pytest.mark.parametrize(("page", "kept"), [
    ('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script><p>x</p>', "<p>x</p>"),
    ("<SCRIPT SRC='http://code.jquery.com/jquery.js' integrity=\"sha\"> </SCRIPT>", ""),
    ('<link rel="stylesheet" href="https://cdnjs.cloudflare.com/all.min.css">', ""),
    ('<img src="https://great-expectations-web-assets.s3.amazonaws.com/logo-long.png" alt="GX"/>', ""),
    ('<img src="./static/images/logo-long.png"/>', '<img src="./static/images/logo-long.png"/>'),
    ('<link href="static/styles/data_docs_default_styles.css" rel="stylesheet">',
     '<link href="static/styles/data_docs_default_styles.css" rel="stylesheet">'),
    ("<script>$(document).ready(f);</script>", "<script>$(document).ready(f);</script>"),
])
def test_remote_scripts_and_stylesheets_are_removed_local_ones_kept(page: str, kept: str) -> None:
    assert without_remote_assets(page) == kept


def test_the_published_site_loads_nothing_from_another_host(tmp_path: Path) -> None:
    published = tmp_path / "quality" / "data_docs"
    built = building_folder(published, "run-1")
    build_docs(built)
    assert "https://cdn.jsdelivr.net" in (built / "index.html").read_text(encoding="utf-8")  # GX's own pages do
    publish(built, published)
    pages = list(published.rglob("*.html"))
    assert len(pages) >= 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"""<(script|link|img)\b[^>]*\b(src|href)=["']https?://""", text), page.name
    assert SUITE_NAME in (published / "index.html").read_text(encoding="utf-8")  # the content stays


def test_the_published_index_links_every_result_and_suite_page_without_scripts(tmp_path: Path) -> None:
    published = tmp_path / "quality" / "data_docs"
    built = building_folder(published, "run-1")
    frame = canary_frame()
    run_suite([Batch("standardised", "standardised_customers", "crm", frame),
               Batch("validated", "validated_customers", None, frame)], rule_expectations(SCHEMA, TODAY), "run-1", built)
    index = publish(built, published).read_text(encoding="utf-8")
    links = {published / unquote(href) for href in re.findall(r'href="([^"]+)"', index)}
    assert all(link.is_file() for link in links)
    pages = {p for p in published.rglob("*.html") if p.parts[len(published.parts)] in ("validations", "expectations")}
    assert len(pages) == 3 and links == pages  # two results (one per batch) and the suite
    assert index.count('class="Failed"') == 2 and "validated_customers" in index and "run-1-all_sources" in index
    assert not re.search(r"<script|<link|<img|https?://", index, re.IGNORECASE)


def _result_page(site: Path, path: str, status: str) -> None:
    page = site / "validations" / path
    page.parent.mkdir(parents=True)
    page.write_text(f'<span class="h6" >Status:</span> <i class="fas"></i> {status}', encoding="utf-8")


def test_the_index_lists_results_newest_first_with_their_status_and_escapes_names(tmp_path: Path) -> None:
    _result_page(tmp_path, "suite/nightly-crm/20261201T010000.000000Z/cmdm_warehouse-golden.html", "Succeeded")
    _result_page(tmp_path, "suite/nightly-<b>/20261202T010000.000000Z/cmdm_warehouse-golden.html", "Failed")
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "suite.html").write_text("", encoding="utf-8")
    index = site_index(tmp_path)
    rows = re.findall(r"<tr><td>.*</tr>", index)
    assert len(rows) == 2
    assert "2026-12-02 01:00:00 UTC" in rows[0] and 'class="Failed"' in rows[0] and "nightly-&lt;b&gt;" in rows[0]
    assert "2026-12-01 01:00:00 UTC" in rows[1] and 'class="Succeeded"' in rows[1]
    assert "nightly-%3Cb%3E" in rows[0] and "<b>" not in index
    assert '<li><a href="expectations/suite.html">suite</a></li>' in index
