"""The warehouse knows its key store: an id recorded on both sides, checked before anything is read or written.

The key store holds its id in ``store_identity``; the warehouse holds the same id in ``cmdm_key_store``,
with a copy of the blind-index root key exactly as the store wraps it (under a key-encryption key, so it
opens nothing without one). Every production path opens the store through :func:`paired_store`
(``KeyStore.for_config``), and the warehouse opens it before its first connection
(:meth:`cmdm_pipeline.warehouse.Warehouse.connect`), so:

- a **missing** store is refused once the warehouse depends on one (it was paired, or holds ciphertext or
  erasure tombstones); only a brand-new project gets a store created silently. An empty store in place of a lost one would make
  every ciphertext unreadable and, worse, let erased people back in: erasure tombstones are keyed
  digests under the store's blind-index key;
- a **different** store (another id) is refused; a store or warehouse made before ids existed is paired on
  first sight;
- a **wrong key-encryption key** is refused by the store's own check (:meth:`KeyStore.verify`).

Recovery (the messages say it): restore the key store from its backup; or, lost for good,
``cmdm keys new-store --discard-encrypted-data`` (:func:`new_store`) starts a new store holding the
warehouse's copy of the blind-index key, so tombstones and blind indexes keep matching, and drops the
warehouse's encrypted tables, which no key can open any more; the next run rebuilds them from the sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.protect.keys.kek import (
    Keyring,
    KeyStoreBusyError,
    KeyStoreExistsError,
    KeyStoreMismatchError,
    KeyStoreMissingError,
    development_mode,
    key_file_is_default,
    load_keyring,
)
from cmdm_pipeline.protect.keys.keystore import KeyStore, keystore_path
from cmdm_pipeline.sql import quote_identifier, statement
from cmdm_pipeline.warehouse import ENCRYPTED_COLUMNS, Warehouse

if TYPE_CHECKING:
    from cmdm_pipeline.config import ProjectConfig

KEY_STORE_TABLE = "cmdm_key_store"
NEW_STORE_COMMAND = "cmdm keys new-store --discard-encrypted-data"
_TOMBSTONES = "erasure_tombstones"

IndexKeyRow = tuple[bytes, str, bytes, bytes]  # data key id, KEK id, nonce, wrapped key


@dataclass(frozen=True)
class WarehouseSide:
    """What the warehouse says about its key store."""

    path: Path
    tables: list[str]
    store_id: str | None  # None: a brand-new warehouse, or one from before ids
    index_key: IndexKeyRow | None
    tombstones: int

    @property
    def keyed(self) -> bool:
        """Whether anything here depends on a key store: a pairing, ciphertext, or tombstones. (With
        ``protection.encrypt`` off, a project's first key is needed only after its first tables.)"""
        return self.store_id is not None or ENCRYPTED_COLUMNS in self.tables or self.tombstones > 0


def read_warehouse_side(path: Path) -> WarehouseSide:
    if not path.exists():
        return WarehouseSide(path, [], None, None, 0)
    try:
        with Warehouse(path).connect(read_only=True) as con:
            tables = [r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()]
            rows = (con.execute(statement("warehouse/select_key_store", table=KEY_STORE_TABLE)).fetchall()
                    if KEY_STORE_TABLE in tables else [])
            tombstones = (con.execute(f"SELECT count(*) FROM {quote_identifier(_TOMBSTONES)}").fetchall()[0][0]  # noqa: S608 - identifiers are constants or quoted, values bound
                          if _TOMBSTONES in tables else 0)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise KeyStoreBusyError(f"the warehouse {path} is in use by another process; try again when it has "
                                    "finished") from None
        raise
    if len(rows) > 1:
        raise ProtectionError(f"{path}: table {KEY_STORE_TABLE} has {len(rows)} rows, one expected")
    store_id, *index_key = rows[0] if rows else (None, None)
    return WarehouseSide(path, tables, store_id, tuple(index_key) if rows and index_key[0] is not None else None,
                         int(tombstones))


def paired_store(config: ProjectConfig, keyring: Keyring | None, lock_timeout: float = 30.0,
                 environ: Mapping[str, str] | None = None, create: bool = True) -> KeyStore:
    """The project's key store, checked against the warehouse (see the module doc). ``create=False``: a
    brand-new project's store is not created here (``cmdm keys status``)."""
    development = _development(config, keyring, environ)
    path = keystore_path(config, development=development)
    side = read_warehouse_side(config.warehouse_path)
    if not path.exists():
        if side.keyed:
            raise KeyStoreMissingError(_missing(config, path, side, development))
        store = KeyStore(path, keyring, lock_timeout, create=create and keyring is not None)
        if store.create:
            store.index_key()  # creates the file with its id, and the blind-index key the warehouse keeps a copy of
            record_pairing(side.path, store.store_id(), store.index_key_row())
        return store
    store_id = KeyStore(path, None, lock_timeout, create=False).store_id()
    if side.store_id is not None and side.store_id != store_id:
        raise KeyStoreMismatchError(
            f"the key store {path} is store {store_id}, but the warehouse {side.path} was paired with store "
            f"{side.store_id}: refusing it (its keys do not open this warehouse's data, and erasure tombstones "
            f"would not match); nothing was read or written. Put this warehouse's own key store (store "
            f"{side.store_id}) back at {path} from its backup. Lost for good: move {path} aside and run "
            f"`{NEW_STORE_COMMAND}` (read `cmdm keys new-store --help` first)."
        )
    store = KeyStore(path, keyring, lock_timeout, create=False)  # checks the key-encryption keys
    row = store.index_key_row()
    if side.store_id is None or (row is not None and row != side.index_key):
        # First sight (a store or warehouse from before ids), or the store re-wrapped its index key (rotation).
        record_pairing(side.path, store_id, row or side.index_key)
    return store


def record_pairing(warehouse: Path, store_id: str, index_key: IndexKeyRow | None) -> None:
    """Write the key store's id and the copy of its blind-index key into the warehouse (one transaction)."""
    with Warehouse(warehouse).connect() as con:
        con.begin()
        _write_pairing(con, store_id, index_key)
        con.commit()


def _write_pairing(con: duckdb.DuckDBPyConnection, store_id: str, index_key: IndexKeyRow | None) -> None:
    from cmdm_pipeline.protect.keys.keystore import _utcnow

    data_key_id, kek_id, nonce, wrapped = index_key or (None, None, None, None)
    con.execute(statement("warehouse/create_key_store", table=KEY_STORE_TABLE))
    con.execute(statement("warehouse/insert_key_store", table=KEY_STORE_TABLE), {
        "store_id": store_id, "index_key_id": data_key_id, "kek_id": kek_id, "nonce": nonce, "wrapped_key": wrapped,
        "now": _utcnow()})


def _development(config: ProjectConfig, keyring: Keyring | None, environ: Mapping[str, str] | None) -> bool:
    if keyring is not None:
        return keyring.key_file is not None and key_file_is_default(config)
    return development_mode(config, environ)


def _missing(config: ProjectConfig, path: Path, side: WarehouseSide, development: bool) -> str:
    paired = f"store {side.store_id}" if side.store_id else "its key store"
    message = (
        f"the key store {path} is missing, but the warehouse {side.path} holds data keyed by {paired}: refusing "
        f"to start an empty one, which would leave every encrypted value unreadable and let erased people back "
        f"in; nothing was read or written. Restore the key store from its backup to {path}. Lost for good: "
        f"`{NEW_STORE_COMMAND}` starts a new one (the encrypted tables are dropped and rebuilt from the sources "
        f"by the next run; erasure tombstones keep working; read `cmdm keys new-store --help` first)."
    )
    other = keystore_path(config, development=not development)
    if other != path and other.exists():
        mode = "development key file" if not development else "CMDM_KEK or a configured key file"
        message += (f" A key store is at {other}, the default with the {mode}: the keys changed mode? "
                    f"Move it to {path}, or set protection.keystore to it.")
    return message


# --- a new store, after a lost one -------------------------------------------------------------------


@dataclass(frozen=True)
class NewStore:
    path: Path
    store_id: str
    dropped: list[str]  # the warehouse tables that held ciphertext
    kept_index_key: bool  # the warehouse's copy of the blind-index key went into the new store


def new_store(config: ProjectConfig, environ: Mapping[str, str] | None = None) -> NewStore:
    """Start a new key store in place of a lost one: the warehouse's copy of the blind-index key goes in
    (tombstones and blind indexes keep matching), and the warehouse's encrypted tables are dropped, in one
    transaction with the new pairing. Refuses where a store exists, and where tombstones would stop matching."""
    keyring = load_keyring(config, environ=environ)
    path = keystore_path(config, development=_development(config, keyring, environ))
    if path.exists():
        raise KeyStoreExistsError(
            f"a key store is at {path}: new-store only replaces a lost one. If it is not this warehouse's "
            f"store, move it aside first (keep it: it may be the only copy of someone's keys)."
        )
    side = read_warehouse_side(config.warehouse_path)
    if side.index_key is None and side.tombstones:
        raise ProtectionError(
            f"the warehouse {side.path} has {side.tombstones:,} erasure tombstones keyed by the lost store and no "
            f"copy of its blind-index key (it was written before warehouses kept one): a new store would let "
            f"erased people back in. Restore the key store from its backup to {path}."
        )
    holder = KeyStore(path, None, create=False)
    with holder._locked():
        fresh = KeyStore(path.with_name(path.name + ".new"), keyring, create=True)
        for leftover in (fresh.path, fresh.path.with_name(fresh.path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        if side.index_key is not None:
            fresh.put_index_key(side.index_key)  # refuses a KEK that cannot unwrap it
        else:
            fresh.index_key()
        store_id = fresh.store_id()
        dropped: list[str] = []
        if side.tables:
            with Warehouse(side.path).connect() as con:
                con.begin()
                dropped = _drop_encrypted_tables(con)
                _write_pairing(con, store_id, fresh.index_key_row())
                con.commit()
        else:
            record_pairing(side.path, store_id, fresh.index_key_row())
        crash_point("keys.new_store_paired")
        os.replace(fresh.path, path)
        fresh.path.with_name(fresh.path.name + ".lock").unlink(missing_ok=True)
    return NewStore(path, store_id, dropped, side.index_key is not None)


def _drop_encrypted_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    tables = {r[0] for r in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    if ENCRYPTED_COLUMNS not in tables:
        return []
    names = sorted(r[0] for r in con.sql(f"SELECT DISTINCT table_name FROM {ENCRYPTED_COLUMNS}").fetchall()  # noqa: S608 - identifiers are constants or quoted, values bound
                   if r[0] in tables)
    for name in names:
        con.execute(f"DROP TABLE {quote_identifier(name)}")
    con.execute(f"DELETE FROM {ENCRYPTED_COLUMNS}")  # noqa: S608 - identifiers are constants or quoted, values bound
    return names
