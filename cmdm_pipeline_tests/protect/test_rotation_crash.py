"""A kill -9 during `cmdm keys rotate` or `cmdm keys new-store` leaves a state the next command completes or
cleans: no half-built store file left for good, every value still decrypts, the index key's copy follows."""

from __future__ import annotations

import polars as pl
import pytest

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.kek import key_file_ids, key_file_path, load_keyring
from cmdm_pipeline.protect.keys.keystore import KeyStore, keystore_path
from cmdm_pipeline.protect.keys.pairing import read_warehouse_side
from cmdm_pipeline_tests.crash import cmdm

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_kek_in_environment")]

GOLDEN = pl.DataFrame({"master_id": ["M1", "M2"], "email": ["ada@example.org", "alan@example.org"],
                       "valid_from": ["2026-01-01", "2026-01-01"]})


def _leftovers(config: ProjectConfig) -> list[str]:
    folder = keystore_path(config).parent
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".rebuild", ".wal", ".new", ".tmp")))


@pytest.mark.parametrize("point", ["keys.rebuild_written", "keys.rotate_key_file_written", "keys.rebuild_replaced"])
def test_a_killed_rotation_is_cleaned_then_completed(make_project, point: str) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    open_warehouse(config).replace({"golden_customers": GOLDEN})
    config_path = config.base_dir / "cmdm.yaml"
    cmdm(config_path, "keys", "rotate", crash_at=point)
    if point == "keys.rebuild_written":
        assert _leftovers(config) == ["keystore.duckdb.rebuild"]  # the state the issue reported

    status = cmdm(config_path, "keys", "status")
    assert status.returncode == 0, status.stderr
    assert _leftovers(config) == []  # the next command that opens the store cleaned it
    assert open_warehouse(config).read("golden_customers")["email"].equals(GOLDEN["email"])  # every key unwraps

    done = cmdm(config_path, "keys", "rotate")
    assert done.returncode == 0, done.stderr
    active = load_keyring(config).active_id
    store = KeyStore.for_config(config, load_keyring(config))
    assert set(store.status().live_by_kek) == {active}  # everything under one key now
    assert read_warehouse_side(config.warehouse_path).index_key[1] == active  # type: ignore[index]
    for old in key_file_ids(key_file_path(config)):
        if old != active:
            assert cmdm(config_path, "keys", "retire", old).returncode == 0
    assert key_file_ids(key_file_path(config)) == [active]
    assert open_warehouse(config).read("golden_customers")["email"].equals(GOLDEN["email"])
    assert _leftovers(config) == []


def test_a_killed_new_store_is_finished_by_running_it_again(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    open_warehouse(config).replace({"golden_customers": GOLDEN})
    keystore_path(config).unlink()
    config_path = config.base_dir / "cmdm.yaml"
    cmdm(config_path, "keys", "new-store", "--discard-encrypted-data", crash_at="keys.new_store_paired")
    assert not keystore_path(config).exists()
    refused = cmdm(config_path, "keys", "status")
    assert refused.returncode == 2 and "cmdm keys new-store --discard-encrypted-data" in refused.stderr
    again = cmdm(config_path, "keys", "new-store", "--discard-encrypted-data")
    assert again.returncode == 0, again.stderr
    assert _leftovers(config) == []
    assert read_warehouse_side(config.warehouse_path).store_id == KeyStore.for_config(config, None).store_id()
    assert cmdm(config_path, "keys", "status").returncode == 0
