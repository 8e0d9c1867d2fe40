"""`cmdm backup`: a consistent copy of the warehouse without the key store, so an erasure after the backup
shreds the subject in the backup too."""

from __future__ import annotations

import argparse
import shutil
import stat
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.backup import BackupRefused, backup_warehouse
from cmdm_pipeline.cli.backup import EXIT_OK, EXIT_REFUSED, backup_command
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.erasure.apply import marker_path
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.kek import DecryptionError
from cmdm_pipeline.protect.keys.keystore import INDEX_KEY_OWNER, keystore_path
from cmdm_pipeline.protect.keys.pairing import read_warehouse_side

pytestmark = pytest.mark.usefixtures("no_kek_in_environment")

GOLDEN = pl.DataFrame({"master_id": ["M1", "M2"], "email": ["ada@example.org", "alan@example.org"],
                       "valid_from": ["2026-01-01", "2026-01-01"]})


@pytest.fixture
def project(make_project) -> ProjectConfig:  # type: ignore[no-untyped-def]
    config = make_project()
    open_warehouse(config).replace({"golden_customers": GOLDEN})
    return config


def test_a_backup_is_the_warehouse_without_the_key_store(project: ProjectConfig, tmp_path: Path) -> None:
    done = backup_warehouse(project, tmp_path / "backups" / "nightly.duckdb")
    assert stat.S_IMODE(done.path.stat().st_mode) == 0o600 and done.size == done.path.stat().st_size
    assert done.store_id == read_warehouse_side(project.warehouse_path).store_id
    with duckdb.connect(str(keystore_path(project)), read_only=True) as con:
        wrapped = [row[0] for row in con.execute("SELECT wrapped_key FROM data_keys WHERE owner <> $index",
                                                 {"index": INDEX_KEY_OWNER}).fetchall()]
    copy = done.path.read_bytes()
    # No data key is in the backup (only the warehouse's wrapped copy of the blind-index key, which decrypts nothing).
    assert wrapped and not [w for w in wrapped if w in copy]
    with duckdb.connect(str(done.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM golden_customers").fetchall() == [(2,)]
    assert not list(done.path.parent.glob(".*partial"))


def test_an_erasure_after_the_backup_shreds_the_subject_in_it(project: ProjectConfig, tmp_path: Path) -> None:
    done = backup_warehouse(project, tmp_path / "before-erasure.duckdb")
    open_warehouse(project).at_rest.keys.destroy(["master/M1"])  # type: ignore[union-attr]
    shutil.copyfile(done.path, project.warehouse_path)  # the backup restored
    store = open_warehouse(project)
    with pytest.raises(DecryptionError, match="golden_customers.email of record M1.* was destroyed"):
        store.read("golden_customers")
    assert store.read("golden_customers", where=pl.col("master_id") == "M2")["email"].to_list() == ["alan@example.org"]


def _refusal(project: ProjectConfig, tmp_path: Path, case: str) -> Path:
    dest = tmp_path / "backup.duckdb"
    if case == "no warehouse":
        project.warehouse_path.unlink()
    elif case == "dest exists":
        dest.write_bytes(b"keep me")
    elif case == "erasure pending":
        marker_path(open_warehouse(project)).write_text('{"owners": []}')
    elif case == "the warehouse itself":
        dest = project.warehouse_path
    return dest


@pytest.mark.parametrize("case, message", [
    ("no warehouse", "no warehouse at"), ("dest exists", "exists; refusing to overwrite"),
    ("erasure pending", "an erasure is half done"), ("the warehouse itself", "exists; refusing"),
])
def test_refusals_write_nothing(project: ProjectConfig, tmp_path: Path, case: str, message: str) -> None:
    dest = _refusal(project, tmp_path, case)
    before = dest.read_bytes() if dest.exists() else None
    with pytest.raises(BackupRefused, match=message):
        backup_warehouse(project, dest)
    assert (dest.read_bytes() if dest.exists() else None) == before


def test_the_command_prints_where_and_exits(project: ProjectConfig, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(dest=str(tmp_path / "b.duckdb"), config=str(project.base_dir / "cmdm.yaml"))
    assert backup_command(args) == EXIT_OK
    said = capsys.readouterr()
    assert f"to {tmp_path / 'b.duckdb'}" in said.out and "not in the backup" in said.err
    assert backup_command(args) == EXIT_REFUSED
    assert "refusing to overwrite" in capsys.readouterr().err
