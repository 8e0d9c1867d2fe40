"""Rotation and retirement of key-encryption keys: re-wrap data keys, never re-encrypt data.

**Key file** (``cmdm keys rotate``): a new KEK is generated, every live data key is unwrapped with the
KEK that wraps it and wrapped by the new one into a fresh key-store file, the new KEK is added to the
key file as active, and only then is the fresh store renamed over the old one. A failure before the
rename leaves the old wrapping; a failure after the key file was written leaves both KEKs in the file,
so every data key still unwraps. Old and new work side by side until ``cmdm keys retire OLD``, which
refuses while the old KEK is active or wraps any data key.

**Environment**: set ``CMDM_KEK`` to the new key and ``CMDM_KEK_PREVIOUS`` to the old one (and
their ``_ID`` variables if the ids are set by hand), run ``cmdm keys rotate`` (re-wraps everything under
``CMDM_KEK``), then ``cmdm keys retire OLD_ID`` and remove ``CMDM_KEK_PREVIOUS``. Pipeline runs in
between work, with both keys loaded.

Blind indexes do not change: their root key is a data key, re-wrapped like the others; the warehouse's
copy of it (:mod:`.pairing`) is refreshed right after, and on any later opening if a crash came
between.

**A kill mid-rotation** leaves the old store whole (the swap is one rename) and, at worst, the half-built
``keystore.duckdb.rebuild``, which the next command that opens the store removes; a key file already
holding the new KEK keeps both, so every data key still unwraps, and ``cmdm keys rotate`` again finishes
the job (crash points ``keys.rebuild_written``, ``keys.rotate_key_file_written``, ``keys.rebuild_replaced``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.protect.keys.kek import (
    KeyInUseError,
    KeyMissingError,
    Keyring,
    add_to_key_file,
    development_mode,
    key_file_is_default,
    load_keyring,
    new_kek_id,
    new_key,
    remove_from_key_file,
)
from cmdm_pipeline.protect.keys.keystore import KeyStore, StoreStatus, keystore_path

if TYPE_CHECKING:
    from cmdm_pipeline.config import ProjectConfig


@dataclass(frozen=True)
class Rotation:
    active_id: str  # the KEK that now wraps every data key
    added_to: Path | None  # the key file the new KEK was added to (None: environment mode)
    rewrapped: dict[str, int]  # previous KEK id -> data keys re-wrapped from it
    seconds: float


def rotate(config: ProjectConfig, environ: Mapping[str, str] | None = None) -> Rotation:
    """Re-wrap every data key under a new KEK (key file) or under ``CMDM_KEK`` (environment)."""
    started = time.perf_counter()
    keyring = load_keyring(config, environ=environ)
    store = KeyStore.for_config(config, keyring)
    if keyring.key_file is None:
        counts = store.rewrap(keyring)
        KeyStore.for_config(config, keyring)  # the warehouse's copy of the index key follows the new wrapping
        return Rotation(keyring.active_id, None, counts, time.perf_counter() - started)
    key_file = keyring.key_file
    kek_id, key = new_kek_id(), new_key()

    def write_key_file() -> None:
        add_to_key_file(key_file, kek_id, key)
        crash_point("keys.rotate_key_file_written")

    counts = store.rewrap(keyring.with_kek(kek_id, key, active=True), write_key_file)
    KeyStore.for_config(config, load_keyring(config, environ=environ))
    return Rotation(kek_id, key_file, counts, time.perf_counter() - started)


def audit_rotation(config: ProjectConfig, rotation: Rotation, actor: str, now: dt.datetime | None = None) -> None:
    """Log the rotation in ``audit_log``: key ids and counts, never key material."""
    import json

    import polars as pl

    from cmdm_pipeline.protect.audit import append_audit
    from cmdm_pipeline.warehouse import Warehouse

    detail = {"active_kek": rotation.active_id, "rewrapped_from": rotation.rewrapped,
              "data_keys": sum(rotation.rewrapped.values())}
    row = pl.DataFrame({"event_time": [now or dt.datetime.now(dt.UTC)], "run_id": [None], "actor": [actor],
                        "action": ["key_rotated"], "master_id": [None], "detail": [json.dumps(detail, sort_keys=True)]},
                       schema_overrides={"run_id": pl.String, "master_id": pl.String})
    append_audit(Warehouse(config.warehouse_path), row)


@dataclass(frozen=True)
class Retirement:
    kek_id: str
    removed_from: Path | None  # the key file it was removed from (None: environment mode)


def retire(config: ProjectConfig, kek_id: str, environ: Mapping[str, str] | None = None) -> Retirement:
    """Retire a KEK nothing uses: marked retired in the key store (no new key is wrapped by it), and
    removed from the key file. Refuses (:class:`KeyInUseError`) while it is active or wraps data keys."""
    keyring = load_keyring(config, environ=environ)
    store = KeyStore.for_config(config, keyring)
    known = {row[0] for row in store.status().keks}
    if not keyring.has(kek_id) and kek_id not in known:
        raise KeyMissingError(f"no key-encryption key {kek_id} (loaded: {', '.join(keyring.ids)})")
    if kek_id == keyring.active_id:
        raise KeyInUseError(f"key-encryption key {kek_id} is the active one: rotate to a new key first")
    in_use = store.retire(kek_id)
    if in_use:
        raise KeyInUseError(
            f"key-encryption key {kek_id} still wraps {in_use:,} data keys: run `cmdm keys rotate` first"
        )
    if keyring.key_file is not None and keyring.has(kek_id):
        remove_from_key_file(keyring.key_file, kek_id)
        return Retirement(kek_id, keyring.key_file)
    return Retirement(kek_id, None)


@dataclass(frozen=True)
class KeyStatus:
    keyring: Keyring | None
    problem: str | None  # why no keyring could be loaded or verified
    store: StoreStatus


def key_status(config: ProjectConfig, environ: Mapping[str, str] | None = None) -> KeyStatus:
    """KEK ids and data-key counts; with the keys verified against the store when they load."""
    from cmdm_pipeline.errors import ProtectionError
    from cmdm_pipeline.protect.keys.pairing import paired_store

    try:
        keyring: Keyring | None = load_keyring(config, environ=environ)
        paired_store(config, keyring, environ=environ, create=False)  # verifies, and creates nothing
        problem = None
    except ProtectionError as exc:
        keyring, problem = None, str(exc)
    # Counts only: read straight from the file where the keys are (a refused store is still counted).
    development = keyring.key_file is not None and key_file_is_default(config) if keyring else development_mode(config, environ)
    path = keystore_path(config, development=development)
    return KeyStatus(keyring, problem, KeyStore(path, None, create=False).status())
