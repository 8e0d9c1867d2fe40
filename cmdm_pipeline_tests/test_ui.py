"""The Dagster UI as a person uses it: see the asset graph, launch the job, watch it succeed.

Starts `dagster dev` on a free 127.0.0.1 port with a throwaway DAGSTER_HOME and a tiny project,
drives Debian's Chromium through Playwright (no browser is downloaded), and keeps a screenshot
of the asset graph in `artifacts/ui/asset_graph.png` for CI output.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - playwright is a dev dependency; the test then fails with the reason
    PlaywrightTimeout = TimeoutError  # type: ignore[misc,assignment]
    sync_playwright = expect = None  # type: ignore[assignment]

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.quality.docs import docs_folder
from cmdm_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.ui

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking flags Chromium keeps calling Google's hosts, which this machine refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1000}  # a laptop screen; the graph page then sizes it to the graph
ARTIFACT = REPO_ROOT / "artifacts" / "ui" / "asset_graph.png"
TEST_BUDGET_S = 300  # the whole test, whatever hangs
SERVER_START_S = 150
RUN_FINISH_S = 180
LOCATION = "cmdm_pipeline.definitions"
GROUPS = ("ingest", "standardise", "validate", "match", "master", "govern", "publish")
SHOWN_ASSETS = ("raw_crm", "standardised_customers", "validated_customers", "customer_xref", "golden_customers")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _graphql(base: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())["data"]  # type: ignore[no-any-return]


def _wait(what: str, check: Callable[[], Any], timeout_s: float, server: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll `check` until it returns something truthy; fail with the server's log if it dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster dev exited ({server.returncode}) while waiting for {what}:\n{_tail(log)}")
        try:
            found = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
            found = None
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _kill_group(server: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group: webserver, daemon, code server and any run worker.

    Background processes here may ignore SIGTERM/SIGINT, and Dagster's children stay in the
    group, so one SIGKILL to the group stops them all.
    """
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


@pytest.fixture
def budget() -> Iterator[None]:
    """A hard stop, so a hung server or browser fails the test instead of hanging the suite."""

    def expire(signum: int, frame: object) -> None:
        signal.alarm(60)  # and once more should the clean-up (closing the browser) hang too
        raise TimeoutError(f"the UI test ran over its {TEST_BUDGET_S}s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_BUDGET_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; skipped without it, except under CI, where the UI test must run."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must run the UI test")
        pytest.skip(message)
    assert sync_playwright is not None, "playwright is not installed: `uv sync` installs the dev dependencies"
    return CHROMIUM


@pytest.fixture
def dagster_dev(
    chromium: Path, make_project: Callable[..., ProjectConfig], tmp_path: Path, budget: None
) -> Iterator[tuple[str, ProjectConfig, subprocess.Popen[bytes], Path]]:
    """`dagster dev` serving the tiny project; yields (base URL, config, server, log)."""
    config = make_project()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # telemetry off
    port = _free_port()
    log = tmp_path / "dagster_dev.log"
    env = {**os.environ, "DAGSTER_HOME": str(home), "CMDM_CONFIG": str(config.base_dir / "cmdm.yaml")}
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    with log.open("wb") as output:
        server = subprocess.Popen(
            [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait("the webserver", lambda: urllib.request.urlopen(f"{base}/server_info", timeout=5).status == 200,
              SERVER_START_S, server, log)
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"

        def loaded() -> bool:
            entries = _graphql(base, query)["workspaceOrError"]["locationEntries"]
            return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)

        _wait("the code location to load", loaded, SERVER_START_S, server, log)
        yield base, config, server, log
    finally:
        _kill_group(server)


def _dismiss_welcome(page: Any) -> None:
    """The first visit may open a 'Join the Dagster community' dialog over the page."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=4000)
    except PlaywrightTimeout:  # no dialog this time
        return
    skip.click()


def _expand_groups(page: Any) -> None:
    """Open every asset group with the graph's "Expand all groups" shortcut (Alt+E).

    The shortcut toggles and a key pressed while the graph still lays out can be lost: look, then
    retry. Any of a few short asset names, drawn in full at any zoom, shows the groups are open (the
    page shows part of a tall graph until it is sized to it, so not every asset is on screen yet).
    """
    opened = page.get_by_text(re.compile(r"^(raw_crm|match_model|customer_xref)$")).filter(visible=True).first
    for _ in range(4):
        if opened.is_visible():
            return
        page.keyboard.press("Alt+e")
        try:
            opened.wait_for(state="visible", timeout=10_000)
        except PlaywrightTimeout:
            continue
    opened.wait_for(state="visible", timeout=5_000)


def _show_whole_graph(page: Any, base: str) -> None:
    """The global asset graph, every group open, sized so that all of it shows with full asset names.

    Dagster fits the graph to the page's width and abbreviates names below 60 % zoom, so the window
    is sized to the graph (70 % zoom, its whole height) and the page loaded again to fit anew.
    """
    page.goto(f"{base}/asset-groups", timeout=90_000)
    page.get_by_role("button", name="Materialize all").wait_for(timeout=90_000)
    _dismiss_welcome(page)
    _expand_groups(page)
    page.wait_for_timeout(1000)
    measured = page.evaluate(
        """() => { const svg = document.querySelector('svg[class*="svgContainer"]');
        if (!svg) return null; const box = svg.parentElement.parentElement.getBoundingClientRect();
        return [Number(svg.getAttribute('width')), Number(svg.getAttribute('height')), box.width, box.height]; }"""
    )
    if measured:
        width, height, box_width, box_height = measured
        now = page.viewport_size
        wanted = {
            "width": math.ceil(width * 0.7 + now["width"] - box_width),
            "height": math.ceil(height * 0.7 + now["height"] - box_height + 60),
        }
        if abs(wanted["width"] - now["width"]) > 40 or abs(wanted["height"] - now["height"]) > 40:
            page.set_viewport_size(wanted)
            page.reload(timeout=90_000)
            page.get_by_role("button", name="Materialize all").wait_for(timeout=90_000)
            _expand_groups(page)
    page.wait_for_timeout(1500)  # let the fitted layout settle before looking or taking the picture


def _data_docs_render_offline(page: Any, index: Path) -> None:
    """The Data Docs index (its path is the quality_report asset's `data_docs` metadata) opens in Chromium
    at once, asking no other host for anything, and lists this run's validation results."""
    remote: list[str] = []
    page.on("request", lambda request: remote.append(request.url) if not request.url.startswith("file:") else None)
    page.goto(index.as_uri(), timeout=30_000)
    expect(page.get_by_role("heading", name="Validation results")).to_be_visible(timeout=10_000)
    expect(page.get_by_role("link", name="result").first).to_be_visible()
    assert remote == []


def test_launch_the_job_from_the_ui(dagster_dev, chromium: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, config, server, log = dagster_dev
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(chromium), args=CHROMIUM_ARGS,
            headless=True, viewport=VIEWPORT,
        )
        page = browser.new_page()
        page.set_default_timeout(60_000)
        try:
            _show_whole_graph(page, base)
            for name in SHOWN_ASSETS:
                assert page.get_by_text(name, exact=True).is_visible(), f"{name} is not shown in the asset graph"

            groups = '{ assetNodes { assetKey { path } groupName } }'
            group_of = {n["assetKey"]["path"][-1]: n["groupName"] for n in _graphql(base, groups)["assetNodes"]}
            assert set(group_of.values()) == set(GROUPS)
            assert group_of["erasure_tombstones"] == group_of["raw_crm"] == "ingest"  # erasure runs first
            # The Catalog shows a table's columns, from its column schema.
            page.goto(f"{base}/assets/golden_customers", timeout=90_000)
            page.get_by_text("Columns", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("master_id", exact=True).first.wait_for(timeout=30_000)

            page.goto(f"{base}/locations/{LOCATION}/jobs/cmdm_job", timeout=90_000)
            materialize = page.get_by_role("button", name="Materialize all")
            materialize.wait_for()
            _dismiss_welcome(page)
            materialize.click()
            toast = page.get_by_text("Launched run")
            toast.wait_for(timeout=60_000)

            runs = '{ runsOrError(filter: {pipelineName: "cmdm_job"}) { ... on Runs { results { runId status } } } }'
            launched = _wait("the launched run", lambda: _graphql(base, runs)["runsOrError"]["results"], 60, server, log)
            assert len(launched) == 1
            run_id = launched[0]["runId"]
            assert run_id[:8] in toast.inner_text()

            def finished() -> str | None:
                query = f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ status }} }} }}'
                state = _graphql(base, query)["runOrError"]["status"]
                return state if state in ("SUCCESS", "FAILURE", "CANCELED") else None

            done = _wait("the run to finish", finished, RUN_FINISH_S, server, log)
            assert done == "SUCCESS", f"run {run_id} ended {done}:\n{_tail(log)}"

            page.goto(f"{base}/runs/{run_id}", timeout=90_000)
            page.get_by_text("Success", exact=True).first.wait_for(timeout=60_000)

            _show_whole_graph(page, base)
            # Every asset of the graph now says when it was materialized; none is still loading or "Never".
            expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0, timeout=60_000)
            expect(page.get_by_text("Never materialized", exact=True)).to_have_count(0, timeout=30_000)
            assert page.get_by_text("Materialized", exact=True).count() >= len(SHOWN_ASSETS)
            shot = tmp_path / "asset_graph.png"
            page.screenshot(path=str(shot))
            _data_docs_render_offline(page, docs_folder(config.warehouse_path) / "index.html")
        except BaseException:
            # What the page showed when it went wrong, kept beside the graph picture for CI output.
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"))
                ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "failure.png", ARTIFACT.with_name("failure.png"))
            raise
        finally:
            browser.close()

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACT)
    ARTIFACT.with_name("failure.png").unlink(missing_ok=True)  # from an earlier failed run
    assert shot.stat().st_size > 20_000  # a picture of a graph, not a blank page
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM golden_customers").fetchall() == [(3,)]
