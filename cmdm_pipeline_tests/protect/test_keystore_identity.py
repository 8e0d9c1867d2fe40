"""The warehouse knows its key store: a lost, swapped or recreated store, or another key, is refused before
anything is read or written; only a brand-new project gets a store silently; `cmdm keys new-store` keeps the
tombstones' key."""

from __future__ import annotations

import argparse
import base64
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.cli.keys import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, keys_command
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.erasure.subjects import record_digest_key
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.blind_index import blind_index
from cmdm_pipeline.protect.keys.kek import (
    KEK_ENV,
    KeyMissingError,
    KeyStoreExistsError,
    KeyStoreMismatchError,
    KeyStoreMissingError,
    load_keyring,
    new_key,
)
from cmdm_pipeline.protect.keys.keystore import KeyStore, keystore_path
from cmdm_pipeline.protect.keys.pairing import KEY_STORE_TABLE, new_store, read_warehouse_side

pytestmark = pytest.mark.usefixtures("no_kek_in_environment")

GOLDEN = pl.DataFrame({"master_id": ["M1", "M2"], "email": ["ada@example.org", "alan@example.org"]})


@pytest.fixture
def project(make_project) -> ProjectConfig:  # type: ignore[no-untyped-def]
    return make_project()


def _open(config: ProjectConfig, environ: dict[str, str] | None = None) -> KeyStore:
    return KeyStore.for_config(config, load_keyring(config, create_dev_key=environ is None, environ=environ), environ=environ)


def _written(config: ProjectConfig) -> KeyStore:
    """A project after its first run: a paired store with keys, a warehouse with a table of ciphertext."""
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN.with_columns(valid_from=pl.lit("2026-01-01"))})
    return store.at_rest.keys  # type: ignore[union-attr]


def _files(config: ProjectConfig) -> dict[str, bytes]:
    folder = config.warehouse_path.parent
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_a_brand_new_project_gets_a_store_and_the_warehouse_records_its_id(project: ProjectConfig) -> None:
    store = _open(project)
    side = read_warehouse_side(project.warehouse_path)
    assert store.path.exists() and side.store_id == store.store_id() and side.store_id.startswith("ks-")
    assert side.index_key == store.index_key_row()  # the copy of the blind-index key, still wrapped


def test_a_lost_store_is_refused_before_anything_is_read_or_written(project: ProjectConfig) -> None:
    _written(project)
    store_path = keystore_path(project)
    store_path.unlink()
    before = _files(project)
    with pytest.raises(KeyStoreMissingError) as caught:
        open_warehouse(project).read("golden_customers")
    message = str(caught.value)
    assert str(store_path) in message and str(project.warehouse_path) in message
    assert "Restore the key store from its backup" in message and "cmdm keys new-store --discard-encrypted-data" in message
    assert not store_path.exists() and _files(project) == before  # nothing created, nothing changed


def test_a_different_store_is_refused(project: ProjectConfig, tmp_path: Path) -> None:
    original = _written(project)
    aside = tmp_path / "aside.duckdb"
    shutil.move(original.path, aside)
    other = KeyStore(original.path, load_keyring(project))  # another store at the same place: another id
    other.index_key()
    before = _files(project)
    with pytest.raises(KeyStoreMismatchError, match=f"paired with store {read_warehouse_side(project.warehouse_path).store_id}"):
        open_warehouse(project).tables()
    assert _files(project) == before
    shutil.move(aside, original.path)  # the right one back: accepted
    assert open_warehouse(project).read("golden_customers")["email"].to_list() == GOLDEN["email"].to_list()


def test_another_key_is_refused_by_a_paired_store(project: ProjectConfig) -> None:
    environ = {KEK_ENV: base64.b64encode(new_key()).decode()}
    _open(project, environ)
    with pytest.raises(KeyMissingError, match="which is not loaded"):
        _open(project, {KEK_ENV: base64.b64encode(new_key()).decode()})


@pytest.mark.parametrize("table", ["cmdm_encrypted_columns", "erasure_tombstones"])
def test_a_warehouse_with_keyed_data_and_no_store_is_refused_even_before_ids(project: ProjectConfig, table: str) -> None:
    project.warehouse_path.parent.mkdir(parents=True)
    with duckdb.connect(str(project.warehouse_path)) as con:  # written before warehouses recorded their store
        con.execute(f"CREATE TABLE {table} AS SELECT 'x'::BLOB AS tombstone")
    with pytest.raises(KeyStoreMissingError, match="holds data keyed by its key store"):
        _open(project)
    assert not keystore_path(project).exists()


def test_plaintext_tables_alone_need_no_store_yet(project: ProjectConfig) -> None:
    project.warehouse_path.parent.mkdir(parents=True)
    with duckdb.connect(str(project.warehouse_path)) as con:  # encryption off: the first key comes later
        con.execute("CREATE TABLE customer_xref (master_id VARCHAR)")
    store = _open(project)
    assert read_warehouse_side(project.warehouse_path).store_id == store.store_id()


def test_a_store_and_warehouse_from_before_ids_are_paired_on_first_sight(project: ProjectConfig) -> None:
    store = _written(project)
    with duckdb.connect(str(store.path)) as con:
        con.execute("DROP TABLE store_identity")
    with duckdb.connect(str(project.warehouse_path)) as con:
        con.execute(f"DROP TABLE {KEY_STORE_TABLE}")
    again = _open(project)
    assert read_warehouse_side(project.warehouse_path).store_id == again.store_id()


@pytest.mark.parametrize("environ, inside", [(None, True), ({KEK_ENV: "x"}, False)], ids=["development", "CMDM_KEK"])
def test_the_default_store_is_outside_the_warehouse_folder_unless_development(
        project: ProjectConfig, environ: dict[str, str] | None, inside: bool) -> None:
    path = keystore_path(project, environ or {})
    assert path.is_relative_to(project.warehouse_path.parent) is inside
    assert path.name == "keystore.duckdb"


def test_a_configured_key_file_is_not_development(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = make_project(protection={"key_file": "secrets/kek.json"})
    assert keystore_path(config, {}) == tmp_path / "warehouse-keys" / "keystore.duckdb"


def test_a_store_left_at_the_other_mode_s_place_is_pointed_at(project: ProjectConfig) -> None:
    _written(project)  # development: the store is in the warehouse folder
    environ = {KEK_ENV: base64.b64encode(new_key()).decode()}
    with pytest.raises(KeyStoreMissingError, match=f"A key store is at {keystore_path(project)}"):
        _open(project, environ)


# --- a new store, after a lost one ---------------------------------------------------------------------


def test_new_store_keeps_the_index_key_and_drops_what_can_never_be_read(project: ProjectConfig) -> None:
    keys = _written(project)
    tombstone_key, index = record_digest_key(keys), blind_index(pl.Series(["ada@example.org"]), "email", keys)
    old_id = keys.store_id()
    keys.path.unlink()
    result = new_store(project)
    assert result.dropped == ["golden_customers"] and result.kept_index_key and result.store_id != old_id
    assert read_warehouse_side(project.warehouse_path).store_id == result.store_id
    again = _open(project)
    assert record_digest_key(again) == tombstone_key  # tombstones keep matching
    assert blind_index(pl.Series(["ada@example.org"]), "email", again).equals(index)
    assert "golden_customers" not in open_warehouse(project).tables()


def test_new_store_refuses_where_a_store_is(project: ProjectConfig) -> None:
    keys = _written(project)
    before = keys.path.read_bytes()
    with pytest.raises(KeyStoreExistsError, match="new-store only replaces a lost one"):
        new_store(project)
    assert keys.path.read_bytes() == before


def test_new_store_refuses_when_tombstones_would_stop_matching(project: ProjectConfig) -> None:
    keys = _written(project)
    keys.path.unlink()
    with duckdb.connect(str(project.warehouse_path)) as con:  # a warehouse from before the index key's copy
        con.execute(f"UPDATE {KEY_STORE_TABLE} SET index_key_id = NULL, kek_id = NULL, nonce = NULL, wrapped_key = NULL")
        con.execute("CREATE TABLE erasure_tombstones AS SELECT 'x'::BLOB AS tombstone")
    with pytest.raises(ProtectionError, match="1 erasure tombstones .* would let erased people back in"):
        new_store(project)
    assert not keys.path.exists()


def test_new_store_needs_the_key_that_wraps_the_index_key(project: ProjectConfig) -> None:
    keys = _written(project)
    keys.path.unlink()
    with pytest.raises(KeyMissingError, match="not loaded"):
        new_store(project, {KEK_ENV: base64.b64encode(new_key()).decode()})
    assert not keys.path.exists() and not list(keys.path.parent.glob("*.new"))


def test_the_cli_refuses_then_starts_a_new_store(project: ProjectConfig, capsys: pytest.CaptureFixture[str]) -> None:
    keys = _written(project)
    args = argparse.Namespace(keys_action="new-store", config=str(project.base_dir / "cmdm.yaml"))
    assert keys_command(args) == EXIT_REFUSED
    assert "new-store only replaces a lost one" in capsys.readouterr().err
    keys.path.unlink()
    assert keys_command(argparse.Namespace(keys_action="status", config=args.config)) == EXIT_USAGE
    assert "cmdm keys new-store --discard-encrypted-data" in capsys.readouterr().err
    assert keys_command(args) == EXIT_OK
    assert "dropped 1 tables" in capsys.readouterr().out
    assert keys_command(argparse.Namespace(keys_action="status", config=args.config)) == EXIT_OK


def test_status_of_a_brand_new_project_creates_nothing(project: ProjectConfig) -> None:
    load_keyring(project, create_dev_key=True)
    assert keys_command(argparse.Namespace(keys_action="status", config=str(project.base_dir / "cmdm.yaml"))) == EXIT_OK
    assert not keystore_path(project).exists() and not project.warehouse_path.exists()
