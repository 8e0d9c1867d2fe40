"""Erasure survives a kill -9: a real `cmdm run` is killed at each named point of erasure (and of lens
publication); the next run completes, the subject is gone from every table and lens file, and every
other encrypted value still decrypts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from cmdm_pipeline.config import ProjectConfig, load_config
from cmdm_pipeline.protect.erasure.apply import marker_path
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.keystore import KeyStore, keystore_path
from cmdm_pipeline_tests.conftest import SCHEMA, csv_source
from cmdm_pipeline_tests.crash import cmdm
from cmdm_pipeline_tests.protect.test_consent_job import run
from cmdm_pipeline_tests.protect.test_erasure_job import CANARY_CSV, ERASURE, scan

pytestmark = pytest.mark.integration

LENSES = [
    {"name": "desk", "description": "service desk", "purpose": None,
     "columns": {"master_id": "reveal", "first_name": "mask", "country": "reveal"}, "formats": ["duckdb", "csv"]},
    {"name": "service", "description": "named service", "purpose": None,
     "columns": {"first_name": "reveal", "last_name": "reveal", "email": "reveal"}},
]
LENS_FILES = ["desk.csv", "desk.duckdb", "service.parquet"]
REQUEST = "Ticket,Email,Phone,Master,System,Record,When\nT-1,,,,crm,7,2026-06-01T09:00:00Z\n"
#: The canary's data keys: its master's and its record's.
CANARY_KEYS = 2


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encrypted project after one run: six customers (the canary is crm 7), two lenses, no request yet."""
    root = canary_project(tmp_path_factory.mktemp("ingested"))
    run(root)
    return root


def canary_project(root: Path) -> Path:
    """Write the tiny encrypted project (the canary is crm 7, two lenses, an empty request file) into ``root``."""
    (root / "crm.csv").write_text(CANARY_CSV, encoding="utf-8")
    (root / "erasure.csv").write_text(REQUEST.splitlines()[0] + "\n", encoding="utf-8")
    document = {"warehouse": {"path": "warehouse/cmdm.duckdb"}, "schema": SCHEMA, "sources": [csv_source()],
                "erasure": ERASURE, "lenses": LENSES,
                "quality": {"max_match_rate_drift": 1, "max_cluster_size_drift": 1, "max_quarantine_rate": 1}}
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return root


@pytest.fixture
def project(ingested: Path, tmp_path: Path) -> ProjectConfig:
    """A copy of the ingested project with the canary's erasure request filed."""
    root = tmp_path / "project"
    shutil.copytree(ingested, root)
    (root / "erasure.csv").write_text(REQUEST, encoding="utf-8")
    return load_config(root / "cmdm.yaml")


def canary_master(config: ProjectConfig) -> str:
    xref = open_warehouse(config).read("customer_xref")
    return str(xref.filter(pl.col("source_record_id") == "7")["master_id"][0])


@pytest.mark.parametrize("point", [
    "erasure.marker_written", "erasure.rows_deleted", "erasure.keys_destroyed",
    "lenses.file_replaced",  # the republication erasure makes after rebuilding the files, before the marker goes
])
def test_a_kill_during_erasure_leaves_a_state_the_next_run_completes(project: ProjectConfig, point: str) -> None:
    master = canary_master(project)
    cmdm(project.base_dir / "cmdm.yaml", "run", crash_at=point)
    assert marker_path(open_warehouse(project)).exists()  # the erasure was under way

    run(project.base_dir)  # in this process (quicker): raises if the run fails
    assert_erased_and_the_rest_readable(project, master)


def test_a_warehouse_wedged_by_the_old_order_is_finished(project: ProjectConfig) -> None:
    """The state the old order left (keys destroyed before the rows were deleted, a marker of owners only,
    the request not logged) no longer fails every later run: the rows those keys opened are deleted."""
    master = canary_master(project)
    owners = [f"master/{master}", "record/crm/7"]
    assert KeyStore.for_config(project, None).destroy(owners) == CANARY_KEYS
    marker_path(open_warehouse(project)).write_text(json.dumps({"owners": owners}), encoding="utf-8")

    run(project.base_dir)  # in this process (quicker): raises if the run fails
    store = open_warehouse(project)
    assert not marker_path(store).exists()
    assert_nothing_of_the_canary(project, master)
    assert store.read("erasure_tombstones").filter(pl.col("kind") == "record").height == 1  # crm 7 stays out


def test_a_kill_mid_lens_publication_is_replaced_by_the_next_publication(ingested: Path, tmp_path: Path) -> None:
    root = tmp_path / "project"
    shutil.copytree(ingested, root)
    config = load_config(root / "cmdm.yaml")
    cmdm(root / "cmdm.yaml", "run", crash_at="lenses.file_replaced")
    folder = root / "warehouse" / "lenses"
    assert any(p.name.startswith(".") for p in folder.iterdir())  # files of the killed publication left over

    run(root)
    assert sorted(p.name for p in folder.iterdir()) == LENS_FILES
    masters = open_warehouse(config).read("golden_customers")["master_id"].sort().to_list()
    assert pl.read_csv(folder / "desk.csv")["master_id"].sort().to_list() == masters


def assert_erased_and_the_rest_readable(config: ProjectConfig, master: str) -> None:
    store = open_warehouse(config)
    assert not marker_path(store).exists()
    log = store.read("erasure_log")
    assert log.select("request_id", "status", "keys_destroyed").rows() == [("T-1", "erased", CANARY_KEYS)]
    assert store.read("audit_log").filter(pl.col("action") == "erased").height == 1
    assert_nothing_of_the_canary(config, master)
    folder = config.warehouse_path.parent / "lenses"
    assert sorted(p.name for p in folder.iterdir()) == LENS_FILES  # replaced, never just removed
    desk = pl.read_csv(folder / "desk.csv")
    assert master not in desk["master_id"].to_list() and desk.height == store.read("golden_customers").height


def assert_nothing_of_the_canary(config: ProjectConfig, master: str) -> None:
    """Every table reads (each other ciphertext decrypts), none names the canary; its keys are destroyed."""
    store = open_warehouse(config)
    text = " ".join(f"{table}: {store.read(table).rows()}" for table in store.tables()).lower()
    for value in ("zebulon", "quxworthy", "442079460999"):
        assert value not in text, value
    assert "lovelace" in text  # the others are still there and decrypt
    assert store.read("customer_xref").filter(pl.col("master_id") == master).is_empty()
    assert scan(config.warehouse_path.parent) == {}  # no plaintext of the canary left in any file
    with duckdb.connect(str(keystore_path(config)), read_only=True) as con:
        live = con.execute("SELECT count(*) FROM data_keys WHERE owner IN ($1, $2) AND wrapped_key IS NOT NULL",
                           [f"master/{master}", "record/crm/7"]).fetchall()[0][0]
    assert live == 0


def test_a_kill_before_the_golden_write_commits_leaves_last_nights_tables(ingested: Path, tmp_path: Path) -> None:
    """The golden records, their history and the lookup index are one transaction: a kill before its
    commit leaves last night's tables whole and readable, and the next run writes tonight's."""
    root = tmp_path / "project"
    shutil.copytree(ingested, root)
    config = load_config(root / "cmdm.yaml")
    before = open_warehouse(config).read("golden_customers").sort("master_id")
    crm = root / "crm.csv"
    crm.write_text(crm.read_text(encoding="utf-8").replace("Hopper", "Hopper-Murray"), encoding="utf-8")

    cmdm(root / "cmdm.yaml", "run", crash_at="warehouse.before_commit.golden_customers")
    assert open_warehouse(config).read("golden_customers").sort("master_id").equals(before)

    run(root)
    after = open_warehouse(config).read("golden_customers")
    assert "hopper-murray" in " ".join(map(str, after.rows())).lower()
    assert after.height == before.height


def test_a_kill_while_the_match_tables_are_written_in_parts_leaves_last_nights(ingested: Path, tmp_path: Path) -> None:
    """The four match tables are one transaction, the pairs written a part at a time: a kill before its commit
    leaves last night's four tables whole."""
    root = tmp_path / "project"
    shutil.copytree(ingested, root)
    config = load_config(root / "cmdm.yaml")
    tables = ("match_pairs", "match_review_queue", "customer_clusters", "match_summary")
    before = {t: open_warehouse(config).read(t) for t in tables}
    crm = root / "crm.csv"
    crm.write_text(crm.read_text(encoding="utf-8").replace("Hopper", "Hopper-Murray"), encoding="utf-8")

    cmdm(root / "cmdm.yaml", "run", crash_at="warehouse.before_commit.match_pairs")
    after = {t: open_warehouse(config).read(t) for t in tables}
    # match_summary holds the run id: a committed write would have changed it.
    assert all(after[t].equals(before[t]) for t in tables) and before["match_summary"].height == 1
