"""The workbench snapshot: what `cmdm serve` reads, published by every run beside the lenses.

The web application never opens the warehouse (DuckDB allows one writer; the nightly run must never wait
for it). Each publication writes the tables the workbench and the resolve API need as Parquet files with
modular encryption (AES-256-GCM, every column, encrypted footer) under a key made for that publication,
into a new folder ``<warehouse folder>/web/<publication>/``, then swaps ``manifest.json`` (which holds the
key, wrapped by the key-encryption key) in one rename and removes older folders: a reader sees one whole
publication or the one before. An erasure republishes it without the subject, as it does the lenses.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from cmdm_pipeline.protect.keys.kek import Keyring
from cmdm_pipeline.protect.lenses.build import read_encrypted_parquet

#: Warehouse tables the workbench reads, under the same names.
SNAPSHOT_TABLES = (
    "validated_customers", "customer_xref", "match_review_queue", "match_pairs", "golden_customers",
    "golden_attribute_lineage", "golden_customers_history", "master_id_lineage", "consent_current", "match_summary",
)
FOLDER = "web"
MANIFEST = "manifest.json"
_KEY_OWNER = "web/snapshot"


class SnapshotMissingError(FileNotFoundError):
    """No run has published a snapshot yet (or it cannot be read)."""


def snapshot_folder(warehouse_path: Path) -> Path:
    return warehouse_path.parent / FOLDER


@dataclass
class Snapshot:
    """One publication loaded into an in-memory DuckDB database, a table per :data:`SNAPSHOT_TABLES` entry."""

    con: duckdb.DuckDBPyConnection
    model: dict[str, Any] | None
    run_id: str
    published_at: str
    publication: str
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows
    token_keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # lens -> its token key (tokenise)

    def frame(self, table: str) -> pl.DataFrame:
        return self.con.sql(f'SELECT * FROM "{table}"').pl()  # noqa: S608 - table names are constants


def batch_calibration(snapshot: Snapshot) -> dict[str, float]:
    """The run's ``match_prior`` and ``link_threshold`` (its ``match_summary`` row, the latest; this run's when
    present) as ``prior`` / ``link_threshold``; a value the snapshot lacks is left out."""
    if "match_summary" not in snapshot.tables:
        return {}
    rows = snapshot.frame("match_summary")
    if rows.is_empty():
        return {}
    if "run_id" in rows.columns and (rows["run_id"] == snapshot.run_id).any():
        rows = rows.filter(pl.col("run_id") == snapshot.run_id)
    last = (rows.sort("run_at") if "run_at" in rows.columns else rows).row(-1, named=True)
    found = {"prior": last.get("match_prior"), "link_threshold": last.get("link_threshold")}
    return {k: float(v) for k, v in found.items() if v is not None and math.isfinite(v)}


def publish_snapshot(frames: Mapping[str, pl.DataFrame | Callable[[], pl.DataFrame]], model: dict[str, Any] | None, folder: Path,
                     keyring: Keyring, run_id: str, now: dt.datetime, token_keys: Mapping[str, bytes] | None = None) -> Path:
    """Write ``frames`` (table -> rows, or a function reading them: then one table is in memory at a time) and
    the match model as a new publication; returns the manifest.

    ``token_keys`` (lens -> key) go in the manifest wrapped like the file key, so the workbench tokenises
    a value as that lens's published files do."""
    folder.mkdir(parents=True, exist_ok=True)
    publication = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"
    target = folder / publication
    building = folder / f".{publication}.building"
    file_key, key_id = secrets.token_bytes(32), secrets.token_bytes(16)
    try:
        building.mkdir()
        properties = pqe.create_encryption_properties(file_key)
        rows = {}
        for table, source in frames.items():
            frame = source() if callable(source) else source
            pq.write_table(frame.to_arrow(), building / f"{table}.parquet", compression="zstd",
                           encryption_properties=properties)
            rows[table] = frame.height
            del frame
        if model is not None:
            pq.write_table(pl.DataFrame({"model": [json.dumps(model)]}).to_arrow(), building / "match_model.parquet",
                           encryption_properties=properties)
        building.rename(target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    manifest = {
        "publication": publication, "run_id": run_id, "published_at": now.isoformat(),
        "tables": rows, "model": model is not None,
        "key": _wrapped(keyring, _KEY_OWNER, file_key, key_id),
        "token_keys": {lens: _wrapped(keyring, f"{_KEY_OWNER}/token/{lens}", key, secrets.token_bytes(16))
                       for lens, key in (token_keys or {}).items()},
    }
    staged = folder / f".{MANIFEST}.tmp"
    staged.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(staged, folder / MANIFEST)
    for old in folder.iterdir():  # earlier publications, and leftovers of a run that died mid-write
        if old.is_dir() and old.name != publication:
            shutil.rmtree(old, ignore_errors=True)
    return folder / MANIFEST


def _wrapped(keyring: Keyring, owner: str, key: bytes, key_id: bytes) -> dict[str, str]:
    nonces, wrapped = keyring.wrap(pl.Series([key_id]), pl.Series([owner]), [key])
    return {"kek_id": keyring.active_id, "key_id": key_id.hex(), "nonce": nonces[0].hex(), "wrapped": wrapped[0].hex()}


def _unwrapped(keyring: Keyring, owner: str, key: Mapping[str, str]) -> bytes:
    return keyring.unwrap(key["kek_id"], pl.Series([bytes.fromhex(key["key_id"])]), pl.Series([owner]),
                          [bytes.fromhex(key["nonce"])], [bytes.fromhex(key["wrapped"])])[0]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise SnapshotMissingError(f"{path}: no workbench snapshot yet; run the pipeline first (`cmdm run`)")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def load_snapshot(folder: Path, keyring: Keyring) -> Snapshot:
    """The current publication, decrypted into memory (raises :class:`SnapshotMissingError`)."""
    manifest = read_manifest(folder)
    file_key = _unwrapped(keyring, _KEY_OWNER, manifest["key"])
    token_keys = {lens: _unwrapped(keyring, f"{_KEY_OWNER}/token/{lens}", key)
                  for lens, key in manifest.get("token_keys", {}).items()}
    files = folder / manifest["publication"]
    if not files.is_dir():
        raise SnapshotMissingError(f"{files}: the publication the manifest names is gone (replaced meanwhile?)")
    con = duckdb.connect()
    tables = {}
    for table in manifest["tables"]:
        frame = read_encrypted_parquet(files / f"{table}.parquet", file_key)
        con.register("__cmdm_snapshot", frame.to_arrow())
        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM __cmdm_snapshot')  # noqa: S608 - names from the manifest we wrote
        con.unregister("__cmdm_snapshot")
        tables[table] = frame.height
    model = None
    if manifest.get("model"):
        model = json.loads(read_encrypted_parquet(files / "match_model.parquet", file_key)["model"][0])
    return Snapshot(con, model, manifest["run_id"], manifest["published_at"], manifest["publication"], tables,
                    token_keys)


def snapshot_from_frames(frames: Mapping[str, pl.DataFrame], model: dict[str, Any] | None = None,
                         token_keys: Mapping[str, bytes] | None = None) -> Snapshot:
    """A snapshot held in memory only (tests, and tools that read the warehouse themselves)."""
    con = duckdb.connect()
    for table, frame in frames.items():
        con.register("__cmdm_snapshot", frame.to_arrow())
        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM __cmdm_snapshot')  # noqa: S608 - constant names
        con.unregister("__cmdm_snapshot")
    return Snapshot(con, model, "in-memory", dt.datetime.now(dt.UTC).isoformat(), "in-memory",
                    {t: f.height for t, f in frames.items()}, dict(token_keys or {}))
