"""The steward workbench as a steward uses it, end to end: a real run, `cmdm serve`, Chromium, the next run.

A generated sample is run with `cmdm run`; `cmdm serve` serves it on a free 127.0.0.1 port; Debian's
Chromium (through Playwright, nothing downloaded) logs in, filters the queue, decides five items with
the keyboard (each the other way from the model, so that every decision has to change the outcome),
undoes the last one, opens a master and merges another into it. The pipeline then runs again and the
warehouse must show the decisions taken: linked, kept apart, merged, in master_id_lineage and audited.
A picture of the queue is kept at `artifacts/web/review_queue.png` for the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from cmdm_pipeline.config import ProjectConfig, load_config
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.web.auth import token_hash
from cmdm_pipeline_tests.conftest import KEK_ENV_NAMES, REPO_ROOT
from cmdm_pipeline_tests.test_ui import CHROMIUM_ARGS, _free_port, _kill_group, _tail, budget, chromium  # noqa: F401

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the chromium fixture fails with the reason
    sync_playwright = expect = None  # type: ignore[assignment]

pytestmark = pytest.mark.ui

ARTIFACT = REPO_ROOT / "artifacts" / "web" / "review_queue.png"
VIEWPORT = {"width": 1500, "height": 1000}
RUN_S = 240
SERVE_START_S = 60
API_TOKEN = "ui-test-token"


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _env() -> dict[str, str]:
    # The project's development key file, whatever keys the machine's environment holds.
    return {k: v for k, v in os.environ.items() if k not in KEK_ENV_NAMES}


def _run(config_path: Path, log: Path) -> None:
    with log.open("ab") as output:
        done = subprocess.run([_bin("cmdm"), "run", "--config", str(config_path), "--quiet"], env=_env(),
                              stdout=output, stderr=subprocess.STDOUT, timeout=RUN_S, check=False)
    assert done.returncode == 0, f"cmdm run failed ({done.returncode}):\n{_tail(log)}"


@pytest.fixture
def project(tmp_path: Path) -> ProjectConfig:
    """A generated 2,000-row sample with the repo's cmdm.yaml (sample steward user), run once."""
    from cmdm_pipeline.sample.consent import write_consent_events
    from cmdm_pipeline.sample.generator import generate

    generate(2000, 11, tmp_path / "data")
    write_consent_events(tmp_path / "data", seed=11, subjects=100)
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = {"path": "warehouse/cmdm.duckdb"}
    document.setdefault("matching", {})["review_budget"] = 0.2  # enough items to decide and filter
    for source in document["sources"]:
        source["path"] = f"data/{Path(source['path']).name}"
    document["consent"]["source"]["path"] = "data/consent_events.csv"
    document.pop("erasure", None)  # its requests name customers of the bundled sample
    document["web"]["users"].append({"name": "webshop", "role": "api", "token_hash": token_hash(API_TOKEN)})
    (tmp_path / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    _run(tmp_path / "cmdm.yaml", tmp_path / "run.log")
    return load_config(tmp_path / "cmdm.yaml")


@pytest.fixture
def served(project: ProjectConfig, chromium: Path, tmp_path: Path, budget: None) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:  # noqa: F811
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [_bin("cmdm"), "serve", "--config", str(project.base_dir / "cmdm.yaml"), "--port", str(port)],
            env=_env(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"cmdm serve exited ({server.returncode}):\n{_tail(log)}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    if json.loads(response.read())["status"] == "ok":
                        break
            if time.monotonic() > deadline:
                pytest.fail(f"cmdm serve did not answer within {SERVE_START_S}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield base, server, log
    finally:
        _kill_group(server)


def _data_docs_link(config: ProjectConfig) -> str:
    """The `data_docs` URL the last run recorded on quality_report, in the instance `cmdm run` used."""
    import dagster as dg

    from cmdm_pipeline.cli.run import dagster_home

    with dg.DagsterInstance.local_temp(tempdir=str(dagster_home(config.base_dir))) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("quality_report"))
        assert event is not None and event.asset_materialization is not None
        return str(event.asset_materialization.metadata["data_docs"].value)


def _masters(config: ProjectConfig, keys: list[str]) -> dict[str, str]:
    """record key -> its master id now."""
    store = open_warehouse(config)
    xref = store.query("SELECT source_system || ':' || source_record_id AS k, master_id FROM customer_xref")
    found = dict(zip(xref["k"].to_list(), xref["master_id"].to_list(), strict=True))
    return {k: found[k] for k in keys}


def _plan(config: ProjectConfig) -> tuple[str, str, str]:
    """The source most queue items concern, and two single-record masters no queue item touches (to merge)."""
    store = open_warehouse(config)
    queue = store.query("SELECT records FROM match_review_queue")
    sources: dict[str, int] = {}
    touched = set()
    for records in queue["records"].to_list():
        touched.update(records)
        for source in {r.split(":", 1)[0] for r in records}:
            sources[source] = sources.get(source, 0) + 1
    source = max(sources, key=lambda s: sources[s])
    assert sources[source] >= 6, f"too few queue items to decide five: {sources}"
    singles = store.query(
        "SELECT g.master_id, any_value(x.source_system || ':' || x.source_record_id) AS k FROM golden_customers g "
        "JOIN customer_xref x USING (master_id) WHERE g.record_count = 1 AND g.party_type = 'person' "
        "GROUP BY g.master_id ORDER BY g.master_id")
    free = [m for m, k in singles.iter_rows() if k not in touched]
    return source, free[0], free[1]


def _resolve(base: str, record: dict[str, str]) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"{base}/api/v1/resolve", data=json.dumps(record).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["candidates"]  # type: ignore[no-any-return]


def _check_resolve(base: str, config: ProjectConfig) -> None:
    """The served API resolves an existing customer with a typo in the surname to its master first, and
    finds nobody above the link threshold for a made-up person."""
    store = open_warehouse(config)
    people = store.read("validated_customers", columns=["source_system", "source_record_id", "party_type", "first_name",
                                                        "last_name", "date_of_birth", "postcode", "country"])
    xref = store.read("customer_xref", columns=["source_system", "source_record_id", "master_id"])
    known = people.join(xref, on=["source_system", "source_record_id"]).filter(
        (pl.col("party_type") == "person") & pl.col("first_name").is_not_null() & (pl.col("last_name").str.len_chars() > 4)
        & pl.col("date_of_birth").is_not_null() & pl.col("postcode").is_not_null()).sort("master_id").row(0, named=True)
    typo = {"first_name": known["first_name"], "last_name": known["last_name"][:-1] + "q",
            "date_of_birth": str(known["date_of_birth"]), "postcode": known["postcode"], "country": known["country"]}
    found = _resolve(base, typo)
    assert found and found[0]["master_id"] == known["master_id"] and found[0]["linked"]
    nobody = _resolve(base, {"first_name": "Zebedee", "last_name": "Quuxworthington", "date_of_birth": "1901-02-03",
                             "country": "NZ"})
    assert not [c for c in nobody if c["linked"]]


def test_a_steward_works_the_queue_and_merges_masters(project: ProjectConfig, served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, server, log = served
    _check_resolve(base, project)
    source, master_a, master_b = _plan(project)
    merge_records = {m: k for m, k in zip((master_a, master_b), _records_of(project, master_a, master_b), strict=True)}
    decided: list[tuple[str, str, str]] = []  # (key_l, key_r, decision)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS,
            headless=True, viewport=VIEWPORT)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        remote: list[str] = []
        page.on("request", lambda request: remote.append(request.url) if not request.url.startswith(base) else None)
        try:
            page.goto(f"{base}/queue")
            page.wait_for_url("**/login")
            page.get_by_label("User").fill("steward")
            page.get_by_label("Password").fill("steward")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url("**/queue")

            page.locator("select[name=source]").select_option(source)
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("select[name=source]")).to_have_value(source)
            page.wait_for_url(f"**source={source}**")
            item = page.locator("#current-item")
            expect(item).to_be_visible()
            page.screenshot(path=str(tmp_path / "review_queue.png"))

            for _ in range(5):
                pair = item.get_attribute("data-pair")
                assert pair
                heading = item.locator("h2").inner_text()
                decision = "different" if "linked by the model" in heading else "same"  # the other way from the model
                left, right = pair.split("|")
                page.keyboard.press("d" if decision == "different" else "s")
                expect(page.locator(".notice")).to_contain_text(f"Decided {decision}")
                expect(item).not_to_have_attribute("data-pair", pair)
                decided.append((left, right, decision))
            assert int(page.locator("#count-mine").inner_text()) == 5
            page.keyboard.press("z")
            expect(page.locator(".notice")).to_contain_text("Undid your last decision")
            assert int(page.locator("#count-mine").inner_text()) == 4
            undone = decided.pop()

            page.get_by_placeholder("M000000001").fill(master_a)
            page.keyboard.press("Enter")
            page.wait_for_url(f"**/masters/{master_a}")
            expect(page.get_by_role("heading", name=f"Master {master_a}")).to_be_visible()
            page.locator("#merge-form input[name=other]").fill(master_b)
            page.locator("#merge-form").get_by_role("button", name="Merge").click()
            expect(page.locator("#flash")).to_contain_text(f"Merge of {master_a} and {master_b} recorded")

            # The Data Docs link of the run's quality_report metadata opens here and renders offline.
            docs = urllib.parse.urlsplit(_data_docs_link(project))
            assert docs.path == "/quality/data-docs/index.html"
            page.goto(f"{base}{docs.path}")
            expect(page.get_by_role("heading", name="Validation results")).to_be_visible()
            expect(page.get_by_role("link", name="result").first).to_be_visible()
            assert remote == [], f"the workbench asked other hosts: {remote}"
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(tmp_path / "failure.png"))
                ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp_path / "failure.png", ARTIFACT.with_name("failure.png"))
            raise
        finally:
            browser.close()
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tmp_path / "review_queue.png", ARTIFACT)
    ARTIFACT.with_name("failure.png").unlink(missing_ok=True)
    _kill_group(server)  # the next run must not wait for the web app (it does not hold the warehouse anyway)

    _run(project.base_dir / "cmdm.yaml", tmp_path / "run.log")
    keys = sorted({k for left, right, _ in decided for k in (left, right)} | set(merge_records.values()))
    now = _masters(project, keys)
    for left, right, decision in decided:
        if decision == "same":
            assert now[left] == now[right], f"`same` on {left} / {right} did not link them"
        else:
            assert now[left] != now[right], f"`different` on {left} / {right} did not keep them apart"
    assert now[merge_records[master_a]] == now[merge_records[master_b]], "the merged masters are not one"
    store = open_warehouse(project)
    lineage = store.query("SELECT event, master_id, related_master_id FROM master_id_lineage WHERE event = 'merged'")
    merged = {(m, r) for _, m, r in lineage.iter_rows()}
    assert (master_a, master_b) in merged or (master_b, master_a) in merged, f"no merge in master_id_lineage: {merged}"
    audit = store.query("SELECT action, actor, detail FROM audit_log WHERE actor = 'web:steward'")
    actions = audit["action"].to_list()
    assert actions.count("steward_decision") >= len(decided) + 1 + 1, actions  # four in force, the merge, the undone one
    assert "steward_decision_undone" in actions, actions
    assert "personal_data_viewed" in actions, actions
    assert undone  # the undone decision is not asserted on the masters: the model may decide either way


def _records_of(config: ProjectConfig, *masters: str) -> list[str]:
    store = open_warehouse(config)
    xref = store.query("SELECT master_id, source_system || ':' || source_record_id AS k FROM customer_xref")
    first = {}
    for master, key in sorted(xref.iter_rows(), key=lambda row: row[1]):
        first.setdefault(master, key)
    return [first[m] for m in masters]
