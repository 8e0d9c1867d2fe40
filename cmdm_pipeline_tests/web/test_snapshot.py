"""The workbench snapshot: published whole and encrypted, read back only with the key-encryption key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.protect.keys.kek import KeyMissingError, init_key_file, read_key_file
from cmdm_pipeline.web.snapshot import MANIFEST, SnapshotMissingError, load_snapshot, publish_snapshot

NOW = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)
GOLDEN = pl.DataFrame({"master_id": ["M1", "M2"], "last_name": ["Qzcanaryname", "Turing"]})


def _keyring(folder: Path):  # type: ignore[no-untyped-def]
    init_key_file(folder / "kek.json")
    return read_key_file(folder / "kek.json")


def test_a_publication_reads_back_whole_and_holds_no_value_in_clear(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    folder = tmp_path / "web"
    publish_snapshot({"golden_customers": GOLDEN}, {"comparisons": []}, folder, keyring, "run-1", NOW,
                     token_keys={"marketing": b"k" * 32})
    snapshot = load_snapshot(folder, keyring)
    assert snapshot.frame("golden_customers").equals(GOLDEN) and snapshot.model == {"comparisons": []}
    assert snapshot.run_id == "run-1" and snapshot.token_keys == {"marketing": b"k" * 32}
    stored = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert b"Qzcanaryname" not in stored and (b"k" * 32) not in stored


def test_a_new_publication_replaces_the_old_one_and_leaves_no_other_folder(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    folder = tmp_path / "web"
    publish_snapshot({"golden_customers": GOLDEN}, None, folder, keyring, "run-1", NOW)
    (folder / ".crashed.building").mkdir()  # a run that died mid-write
    publish_snapshot({"golden_customers": GOLDEN.head(1)}, None, folder, keyring, "run-2", NOW)
    assert load_snapshot(folder, keyring).tables == {"golden_customers": 1}
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 1 and (folder / MANIFEST).is_file()


def test_without_a_publication_or_with_another_key_nothing_is_read(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    with pytest.raises(SnapshotMissingError, match="cmdm run"):
        load_snapshot(tmp_path / "web", keyring)
    publish_snapshot({"golden_customers": GOLDEN}, None, tmp_path / "web", keyring, "run-1", NOW)
    (tmp_path / "other").mkdir()
    with pytest.raises(KeyMissingError):
        load_snapshot(tmp_path / "web", _keyring(tmp_path / "other"))
