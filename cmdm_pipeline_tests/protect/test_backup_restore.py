"""A warehouse backup taken before an erasure, restored with the current key store: the next run finishes the
erasure again from what the key store keeps (destroyed owners, a copy of the tombstones), nothing fails to
decrypt, and the subject does not come back from the sources."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.backup import backup_warehouse
from cmdm_pipeline.config import load_config
from cmdm_pipeline.protect.erasure.apply import rows_erased
from cmdm_pipeline.protect.erasure.subjects import TOMBSTONE_COLUMNS, UTC
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline_tests.protect.test_consent_job import run
from cmdm_pipeline_tests.protect.test_erasure_crash import (
    REQUEST,
    assert_nothing_of_the_canary,
    canary_master,
    canary_project,
)

STONES = pl.DataFrame(
    {"tombstone": [b"\x01" * 32, b"\x02" * 32], "kind": ["record", "email"], "request_id": ["T-1", "T-1"],
     "created_at": [dt.datetime(2026, 6, 1, 9, 30, tzinfo=dt.UTC)] * 2, "run_id": ["r1", "r1"]},
    schema=TOMBSTONE_COLUMNS,
)


def test_the_key_store_keeps_tombstones_once_across_a_rebuild_also_when_made_before_the_table(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keystore.duckdb", None)
    assert keys.kept_tombstones().is_empty()  # no store yet: nothing kept, nothing created
    assert keys.destroyed_owners() == []
    keys.store_id()  # creates the file
    with duckdb.connect(str(keys.path)) as con:
        con.execute("DROP TABLE erasure_tombstones")  # a store made before the table existed

    assert keys.keep_tombstones(STONES) == 2
    assert keys.keep_tombstones(STONES) == 0  # a rerun after a kill adds nothing
    keys.compact()  # erasure rebuilds the store: the copies survive it
    assert keys.kept_tombstones().sort("kind").equals(STONES.sort("kind").cast({"created_at": UTC}))


@pytest.mark.integration
def test_a_backup_from_before_an_erasure_restored_is_erased_again_and_stays_erased(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    canary_project(root)
    config = load_config(root / "cmdm.yaml")
    run(root)
    master = canary_master(config)
    backup = backup_warehouse(config, tmp_path / "backups" / "before.duckdb").path

    (root / "erasure.csv").write_text(REQUEST, encoding="utf-8")
    run(root)
    store = open_warehouse(config)
    stones = store.read("erasure_tombstones").sort("tombstone")
    # crm 7's record key, and its own e-mail and phone: those only the key store's copy can give back
    assert sorted(stones.select("kind", "request_id").rows()) == [("email", "T-1"), ("phone", "T-1"), ("record", "T-1")]

    shutil.copyfile(backup, config.warehouse_path)  # restored; the key store is the current one
    assert store.read("erasure_tombstones").is_empty() and store.read("erasure_log").is_empty()
    assert store.read("customer_xref").filter(pl.col("master_id") == master).height == 1  # the canary is back

    result, said = run(root)  # raises if the run fails (a ciphertext under a destroyed key would)
    assert "restored from a backup older than its key store: deleting any rows of the 2 data-key owners erased so " \
        "far, restoring 3 tombstones of 1 requests and 1 erasure_log rows" in said
    assert store.read("erasure_tombstones").sort("tombstone").equals(stones)
    log = store.read("erasure_log")
    assert log.select("request_id", "status", "tombstones_added").rows() == [("T-1", "erased", 3)]
    assert rows_erased(store, result.run_id) == {"crm": 1}  # crm 7 is still in the source: dropped on extract
    assert_nothing_of_the_canary(config, master)

    _, said = run(root)  # the next night finds nothing to restore
    assert "restored from a backup" not in said and store.read("erasure_log").height == 1
