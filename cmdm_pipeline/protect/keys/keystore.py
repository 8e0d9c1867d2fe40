"""Data keys: one AES-256 key per owner, stored wrapped by a key-encryption key, in their own DuckDB file.

**Owners.** A master customer owns one data key (``master/<master_id>``: golden records and their
history), and so does every source record (``record/<source_system>/<source_record_id>``: raw,
standardised, validated and quarantined rows, which exist before, or without, a master id). A record's
key never changes owner when masters merge or split, and erasing a person destroys the keys of their
master id(s) and of each of their source records (found through ``customer_xref``, or by blind index
for quarantined rows): every ciphertext of that person becomes undecryptable and nobody else's does.
Shared keys (a per-run staging key, hashed buckets) would shred other people's data or none.

**Where.** ``protection.keystore``, else (:func:`keystore_path`) ``<warehouse dir>/keys/keystore.duckdb``
with the development key file, and ``<warehouse dir>-keys/keystore.duckdb``, outside the warehouse folder,
with ``CMDM_KEK`` or a configured key file: a copy of the warehouse folder must not carry the keys that
erasure destroys. A file apart from the warehouse: DuckDB's DELETE leaves bytes behind, so erasure
rebuilds this small file (:meth:`KeyStore.compact`) instead of the warehouse. Table ``data_keys``:
``data_key_id`` (16 random bytes), ``owner``, ``kek_id``, ``nonce``, ``wrapped_key`` (AES-GCM under the
KEK, associated data = key id + owner), ``created_at``, ``destroyed_at``; table ``keks``: the KEK ids
that ever wrapped a key here, and when one was retired; table ``store_identity``: the store's id, which
the warehouse records too (:mod:`.pairing`): a missing or different store is refused, never
silently created, except for a brand-new project; table ``erasure_tombstones``: a copy of every erasure
tombstone (digests and ids, no personal data), so an erasure is finished again on a warehouse restored
from a backup taken before it (:func:`cmdm_pipeline.protect.erasure.apply.restore_erasures`).

Every access takes an exclusive lock file beside the store, so a pipeline run, ``cmdm keys rotate``
and a rebuild never interleave (a rebuild replaces the file by rename). Opening a store with a keyring
checks that every KEK still wrapping data keys is loaded and right: a wrong or missing key fails there,
before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.protect.keys.kek import (
    KEY_BYTES,
    KeyMissingError,
    Keyring,
    KeyStoreBusyError,
    KeyStoreMissingError,
    private_folder,
)
from cmdm_pipeline.sql import statement

if TYPE_CHECKING:
    from cmdm_pipeline.config import ProjectConfig

DATA_KEY_ID_BYTES = 16
DEFAULT_KEYSTORE = Path("keys/keystore.duckdb")  # development: relative to the warehouse folder
#: Elsewhere: ``<warehouse folder><suffix>/keystore.duckdb``, beside the warehouse folder, not inside it.
OUTSIDE_SUFFIX = "-keys"
#: The owner of the blind-index root key: a data key like the others, so rotation re-wraps it unchanged.
INDEX_KEY_OWNER = "__cmdm_blind_index__"



def master_owner(master_id: str | pl.Expr = "master_id") -> pl.Expr:
    """The data-key owner of a master customer's rows: ``master/<master_id>``."""
    column = pl.col(master_id) if isinstance(master_id, str) else master_id
    return pl.concat_str(pl.lit("master/"), column)


def record_owner(source_system: str | pl.Expr = "source_system", source_record_id: str | pl.Expr = "source_record_id") -> pl.Expr:
    """The data-key owner of a source record's rows: ``record/<source_system>/<source_record_id>``.

    Unambiguous: source names are lower_snake_case, so the first '/' after the prefix ends the system.
    """
    system = pl.col(source_system) if isinstance(source_system, str) else source_system
    record = pl.col(source_record_id) if isinstance(source_record_id, str) else source_record_id
    return pl.concat_str(pl.lit("record/"), system, pl.lit("/"), record)


def keystore_path(config: ProjectConfig, environ: Mapping[str, str] | None = None,
                  development: bool | None = None) -> Path:
    """``protection.keystore``, else the default of the key mode (``development``: the embedded key file, no
    ``CMDM_KEK``; None: read from ``environ``, default the process environment)."""
    from cmdm_pipeline.protect.keys.kek import development_mode

    configured = config.protection.keystore
    if configured:
        return config.resolve(configured)
    folder = config.warehouse_path.parent
    if development is None:
        development = development_mode(config, environ)
    if development:
        return folder / DEFAULT_KEYSTORE
    return folder.with_name(folder.name + OUTSIDE_SUFFIX) / DEFAULT_KEYSTORE.name


@dataclass(frozen=True)
class DataKeys:
    """Data keys resolved for a batch: ``index`` gives, per input row, the position of its key.

    Keys are kept as bytes: an AESGCM object holds ~2.4 KB of OpenSSL state, so a million of them at
    once would take 2.4 GB. Callers build AESGCM objects a chunk of rows at a time.
    """

    index: pl.Series  # UInt32 per input row; null where the key is destroyed
    key_ids: list[bytes]
    keys: list[bytes] = field(repr=False)


@dataclass(frozen=True)
class StoreStatus:
    path: Path
    exists: bool
    live_by_kek: dict[str, int]
    destroyed: int
    keks: list[tuple[str, dt.datetime, dt.datetime | None]]  # id, registered, retired


class KeyStore:
    """The wrapped data keys of one project. Without a keyring it can only report counts."""

    def __init__(self, path: Path, keyring: Keyring | None, lock_timeout: float = 30.0, create: bool = True) -> None:
        """``create``: whether a missing file may be created (else :class:`KeyStoreMissingError`)."""
        self.path = Path(path)
        self.keyring = keyring
        self.lock_timeout = lock_timeout
        self.create = create
        self._lock_depth = 0
        if keyring is not None and self.path.exists():
            self.verify()

    @classmethod
    def for_config(cls, config: ProjectConfig, keyring: Keyring | None, lock_timeout: float = 30.0,
                   environ: Mapping[str, str] | None = None) -> KeyStore:
        """The project's key store, checked against the warehouse it is paired with (refused if missing or
        different; created only for a brand-new project); see :mod:`.pairing`."""
        from cmdm_pipeline.protect.keys.pairing import paired_store

        return paired_store(config, keyring, lock_timeout, environ)

    # --- locking and connections ------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock file beside the store (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        private_folder(self.path.parent)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _acquire(fd, self.lock_timeout, self.path)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def _connect(self, path: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        path = path or self.path
        with self._locked():
            created = not path.exists()
            if path == self.path:
                self._clean_leftovers()
                if created and not self.create:
                    raise KeyStoreMissingError(f"no key store at {self.path}")
            try:
                con = duckdb.connect(str(path))
            except duckdb.IOException as exc:
                if "lock" in str(exc).lower():
                    raise KeyStoreBusyError(f"key store {path} is in use by another process") from None
                raise
            try:
                if created:
                    os.chmod(path, 0o600)
                con.execute(statement("keys/create_data_keys"))
                con.execute(statement("keys/create_keks"))
                con.execute(statement("keys/create_store_identity"))
                con.execute(statement("keys/create_erasure_tombstones"))  # a store made before it gets it here
                if created and path == self.path:
                    con.execute(statement("keys/insert_store_id"), {"store_id": _new_store_id(), "now": _utcnow()})
                yield con
                con.execute("CHECKPOINT")  # no WAL left behind: a rebuild replaces the file by rename
            finally:
                con.close()

    def _clean_leftovers(self) -> None:
        """Remove what a process killed while rebuilding this store left (we hold the lock, so it is dead):
        the file it was building, never swapped in. The store itself is whole: the swap is one rename."""
        for suffix in (".rebuild", ".rebuild.wal", ".new", ".new.wal"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    # --- identity -----------------------------------------------------------------------------------

    def store_id(self) -> str:
        """This store's id; a store made before ids existed gets one now."""
        with self._connect() as con:
            found = con.execute(statement("keys/select_store_id")).fetchall()
            if len(found) > 1:
                raise ProtectionError(f"key store {self.path} has {len(found)} ids: it was pieced together by hand")
            if found:
                return str(found[0][0])
            store_id = _new_store_id()
            con.execute(statement("keys/insert_store_id"), {"store_id": store_id, "now": _utcnow()})
            return store_id

    def index_key_row(self) -> tuple[bytes, str, bytes, bytes] | None:
        """The blind-index root key as stored (id, KEK id, nonce, wrapped key), None before it exists."""
        with self._connect() as con:
            found = con.execute(statement("keys/select_index_key"), {"owner": INDEX_KEY_OWNER}).fetchall()
        return tuple(found[0]) if found else None

    def put_index_key(self, row: tuple[bytes, str, bytes, bytes]) -> None:
        """Store the blind-index root key as it was wrapped elsewhere (a new store, after a lost one)."""
        data_key_id, kek_id, nonce, wrapped = row
        keyring = self._keyring()
        keyring.unwrap(kek_id, pl.Series([data_key_id], dtype=pl.Binary), pl.Series([INDEX_KEY_OWNER]), [nonce], [wrapped])
        with self._connect() as con:
            if con.execute(statement("keys/select_index_key"), {"owner": INDEX_KEY_OWNER}).fetchall():
                raise ProtectionError(f"key store {self.path} already has a blind-index key")
            now = _utcnow()
            con.execute(statement("keys/register_kek"), {"kek_id": kek_id, "now": now})
            con.execute(statement("keys/insert_index_key"), {
                "data_key_id": data_key_id, "owner": INDEX_KEY_OWNER, "kek_id": kek_id, "nonce": nonce,
                "wrapped_key": wrapped, "now": now})

    # --- checks -----------------------------------------------------------------------------------

    def verify(self) -> None:
        """Every KEK that wraps live data keys is loaded and can unwrap one of them; else raise."""
        keyring = self._keyring()
        with self._connect() as con:
            samples = con.sql(statement("keys/sample_key_per_kek")).pl()
        for kek_id, count, key_id, owner, nonce, wrapped in samples.iter_rows():
            if not keyring.has(kek_id):
                raise KeyMissingError(
                    f"{count:,} data keys in {self.path} are wrapped by key-encryption key {kek_id}, which is not "
                    f"loaded from the {keyring.source}: wrong key? (loaded: {', '.join(keyring.ids)})"
                )
            keyring.unwrap(kek_id, pl.Series([key_id], dtype=pl.Binary), pl.Series([owner]), [nonce], [wrapped])

    def _keyring(self) -> Keyring:
        if self.keyring is None:
            from cmdm_pipeline.protect.keys.kek import NO_KEK

            raise KeyMissingError(NO_KEK)
        return self.keyring

    # --- data keys --------------------------------------------------------------------------------

    def keys_for_owners(self, owners: pl.Series, create: bool = True) -> DataKeys:
        """The live data key of each row's owner, creating missing ones (all in one transaction).

        Keys are listed in the order owners first appear: rows sorted by owner then use their keys in
        sequence, which keeps AES-GCM faster than jumping between a million key objects.
        """
        if owners.null_count():
            raise ProtectionError("every row to encrypt needs an owner (a master id or a source record key)")
        keyring = self._keyring()
        distinct, index = _encode(owners)
        with self._connect() as con:
            found = self._select(con, "keys/select_keys_of_owners", owners=_numbered(distinct, "owner"))
            if found["pos"].n_unique() != found.height:
                raise ProtectionError(f"key store {self.path} holds two live data keys for one owner")
            missing = _absent(distinct.len(), found["pos"])
            if missing.len() and not create:
                raise KeyMissingError(f"{missing.len():,} owners have no data key in {self.path}")
            owners_missing = distinct.gather(missing).to_list()
            new_ids, new_keys = self._create(con, keyring, owners_missing) if owners_missing else ([], [])
        keys = _merge(distinct.len(), (found["pos"], self._unwrap(keyring, found)), (missing, new_keys))
        key_ids = _merge(distinct.len(), (found["pos"], found["data_key_id"].to_list()), (missing, new_ids))
        return DataKeys(index, key_ids, keys)

    def keys_by_id(self, key_ids: pl.Series) -> tuple[DataKeys, dict[bytes, dt.datetime]]:
        """The data keys named in ciphertexts, and the destroyed ones among them (id -> when)."""
        keyring = self._keyring()
        distinct, index = _encode(key_ids)
        if self.path.exists():
            with self._connect() as con:
                found = self._select(con, "keys/select_keys_by_id", ids=_numbered(distinct, "data_key_id"))
        else:
            found = pl.DataFrame(schema={"pos": pl.UInt32, "data_key_id": pl.Binary, "destroyed_at": pl.Datetime})
        unknown = _absent(distinct.len(), found["pos"])
        if unknown.len():
            raise KeyMissingError(
                f"data key {distinct[unknown[0]].hex()} is not in the key store {self.path} "
                f"({unknown.len():,} unknown): a different or lost key store?"
            )
        destroyed = found.filter(pl.col("destroyed_at").is_not_null())
        live = found.filter(pl.col("destroyed_at").is_null())
        # Renumber to the live keys only: the values of destroyed keys get a null index.
        live_position = pl.Series([None] * distinct.len(), dtype=pl.UInt32).scatter(
            live["pos"], pl.int_range(0, live.height, dtype=pl.UInt32, eager=True)
        )
        index = live_position.gather(index)
        gone = dict(zip(destroyed["data_key_id"].to_list(), destroyed["destroyed_at"].to_list(), strict=True))
        return DataKeys(index, live["data_key_id"].to_list(), self._unwrap(keyring, live)), gone

    def index_key(self) -> bytes:
        """The blind-index root key (random, wrapped like a data key, so KEK rotation leaves it unchanged)."""
        keyring = self._keyring()
        with self._connect() as con:
            owner = _numbered(pl.Series([INDEX_KEY_OWNER]), "owner")
            found = self._select(con, "keys/select_keys_of_owners", owners=owner)
            if found.height:
                return self._unwrap(keyring, found)[0]
            return self._create(con, keyring, [INDEX_KEY_OWNER])[1][0]

    @staticmethod
    def _select(con: duckdb.DuckDBPyConnection, name: str, **frames: pl.DataFrame) -> pl.DataFrame:
        """Run statement ``name`` with each frame registered under a scratch name."""
        scratch = {key: f"__cmdm_{key}" for key in frames}
        for key, frame in frames.items():
            con.register(scratch[key], frame.to_arrow())
        try:
            return con.sql(statement(name, **scratch)).pl()
        finally:
            for view in scratch.values():
                con.unregister(view)

    def _create(self, con: duckdb.DuckDBPyConnection, keyring: Keyring, owners: list[str]) -> tuple[list[bytes], list[bytes]]:
        """New data keys for ``owners``, wrapped by the active KEK, written in one transaction."""
        size = DATA_KEY_ID_BYTES + KEY_BYTES
        pool = secrets.token_bytes(size * len(owners))  # one call, sliced: cheaper than a call per key
        ids = [pool[i : i + DATA_KEY_ID_BYTES] for i in range(0, len(pool), size)]
        keys = [pool[i : i + KEY_BYTES] for i in range(DATA_KEY_ID_BYTES, len(pool), size)]
        nonces, wrapped = keyring.wrap(pl.Series(ids, dtype=pl.Binary), pl.Series(owners, dtype=pl.String), keys)
        now = _utcnow()
        staged = pl.DataFrame(
            {"data_key_id": ids, "owner": owners, "nonce": nonces, "wrapped_key": wrapped},
            schema={"data_key_id": pl.Binary, "owner": pl.String, "nonce": pl.Binary, "wrapped_key": pl.Binary},
        ).with_columns(kek_id=pl.lit(keyring.active_id), created_at=pl.lit(now))
        con.begin()
        try:
            # A KEK retired (by another process) after this keyring was loaded must not wrap new keys.
            if con.execute(statement("keys/select_kek_retired"), {"kek_id": keyring.active_id}).fetchall():
                raise KeyMissingError(
                    f"key-encryption key {keyring.active_id} was retired after it was loaded: start again"
                )
            con.execute(statement("keys/register_kek"), {"kek_id": keyring.active_id, "now": now})
            con.register("__cmdm_new_keys", staged.to_arrow())
            con.execute(statement("keys/insert_data_keys", staged="__cmdm_new_keys"))
            con.unregister("__cmdm_new_keys")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        return ids, keys

    @staticmethod
    def _unwrap(keyring: Keyring, rows: pl.DataFrame) -> list[bytes]:
        """Unwrap rows of (data_key_id, owner, kek_id, nonce, wrapped_key), one KEK at a time, in row order."""
        if rows.is_empty():
            return []
        kek_ids = rows["kek_id"].unique(maintain_order=True).to_list()
        if len(kek_ids) == 1:  # the usual case: no rotation under way
            return keyring.unwrap(kek_ids[0], rows["data_key_id"], rows["owner"], *_material(rows))
        numbered = rows.with_row_index("__row")
        out: list[bytes] = [b""] * rows.height
        for kek_id in kek_ids:
            group = numbered.filter(pl.col("kek_id") == kek_id)
            keys = keyring.unwrap(kek_id, group["data_key_id"], group["owner"], *_material(group))
            for position, key in zip(group["__row"].to_list(), keys, strict=True):
                out[position] = key
        return out

    # --- crypto-shredding -------------------------------------------------------------------------

    def live_keys(self, owners: Iterable[str]) -> int:
        """How many of ``owners`` hold a live data key: what :meth:`destroy` would destroy now."""
        names = pl.Series("owner", list(owners), dtype=pl.String).unique()
        if names.is_empty() or not self.path.exists():
            return 0
        with self._connect() as con:
            return self._select(con, "keys/select_keys_of_owners", owners=_numbered(names, "owner")).height

    def destroy(self, owners: Iterable[str], compact: bool = True) -> int:
        """Destroy the data keys of ``owners`` (crypto-shredding); returns how many were destroyed.

        The rows stay as proof (owner, key id, ``destroyed_at``) with the key columns null. DuckDB keeps
        updated bytes in the file, so ``compact`` (default) rebuilds it: only then are the keys gone.
        """
        names = pl.Series("owner", list(owners), dtype=pl.String).unique()
        if INDEX_KEY_OWNER in names.to_list():
            raise ProtectionError("the blind-index key belongs to nobody and cannot be destroyed per owner")
        with self._locked():
            with self._connect() as con:
                con.register("__cmdm_owners", names.to_frame().to_arrow())
                con.begin()
                count = con.execute(
                    statement("keys/destroy_keys_of_owners", owners="__cmdm_owners"), {"now": _utcnow()}
                ).fetchall()[0][0]
                con.commit()
                con.unregister("__cmdm_owners")
            if compact:
                self.compact()
        return int(count)

    def compact(self) -> None:
        """Rebuild the store file from its current rows, so destroyed or re-wrapped key bytes are gone."""
        if self.path.exists():
            self._rebuild(None)

    def _rebuild(self, rewrapped: pl.DataFrame | None, before_replace: Callable[[], None] | None = None,
                 register_kek: str | None = None) -> None:
        """Write a fresh store file from the current one (with new wrappings), then swap it in by rename.

        Anything failing before the rename leaves the current file as it was.
        """
        fresh = self.path.with_name(self.path.name + ".rebuild")
        with self._locked():
            with self._connect():
                pass  # checkpointed on close: the current file has no WAL the fresh one would miss
            for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
                leftover.unlink(missing_ok=True)
            staged = rewrapped if rewrapped is not None else pl.DataFrame(
                schema={"data_key_id": pl.Binary, "kek_id": pl.String, "nonce": pl.Binary, "wrapped_key": pl.Binary}
            )
            try:
                with self._connect(fresh) as con:
                    con.execute("ATTACH $path AS old (READ_ONLY)", {"path": str(self.path)})
                    con.register("__cmdm_rewrapped", staged.to_arrow())
                    con.execute(statement("keys/copy_data_keys", rewrapped="__cmdm_rewrapped"))
                    con.execute(statement("keys/copy_keks"))
                    con.execute(statement("keys/copy_store_identity"))
                    con.execute(statement("keys/copy_erasure_tombstones"))
                    if register_kek:
                        con.execute(statement("keys/register_kek"), {"kek_id": register_kek, "now": _utcnow()})
                    con.unregister("__cmdm_rewrapped")
                    con.execute("DETACH old")
                crash_point("keys.rebuild_written")
                if before_replace is not None:
                    before_replace()
                os.replace(fresh, self.path)
                crash_point("keys.rebuild_replaced")
            finally:
                fresh.unlink(missing_ok=True)

    # --- erasure tombstones (see the module doc) ------------------------------------------------------

    def keep_tombstones(self, tombstones: pl.DataFrame) -> int:
        """Copy erasure tombstones (``TOMBSTONE_COLUMNS``) not held yet; returns how many were added."""
        staged = tombstones.with_columns(pl.col("created_at").dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        with self._connect() as con:
            con.register("__cmdm_tombstones", staged.to_arrow())
            try:
                return int(con.execute(statement("keys/insert_erasure_tombstones", staged="__cmdm_tombstones"))
                           .fetchall()[0][0])
            finally:
                con.unregister("__cmdm_tombstones")

    def kept_tombstones(self) -> pl.DataFrame:
        """Every erasure tombstone copied here (``created_at`` in UTC); empty without a store."""
        schema = {"tombstone": pl.Binary(), "kind": pl.String(), "request_id": pl.String(),
                  "created_at": pl.Datetime("us"), "run_id": pl.String()}
        if not self.path.exists():
            kept = pl.DataFrame(schema=schema)
        else:
            with self._connect() as con:
                kept = con.sql(statement("keys/select_erasure_tombstones")).pl()
        return kept.with_columns(pl.col("created_at").dt.replace_time_zone("UTC"))

    def destroyed_owners(self) -> list[str]:
        """The owners whose data key was destroyed (erased masters, records, events); empty without a store."""
        if not self.path.exists():
            return []
        with self._connect() as con:
            return [row[0] for row in con.execute(statement("keys/select_destroyed_owners")).fetchall()]

    # --- rotation ---------------------------------------------------------------------------------

    def rewrap(self, new_keyring: Keyring, before_replace: Callable[[], None] | None = None) -> dict[str, int]:
        """Re-wrap every live data key not under ``new_keyring``'s active KEK; counts per previous KEK.

        All or nothing: the re-wrapped store is built apart and renamed over the old one; ``before_replace``
        (writing the key file) runs just before the rename, so a failure anywhere leaves the old wrapping.
        """
        keyring = self._keyring()
        with self._locked():
            if not self.path.exists():
                if before_replace is not None:
                    before_replace()
                return {}
            with self._connect() as con:
                rows = con.sql(statement("keys/select_keys_to_rewrap"), params={"active": new_keyring.active_id}).pl()
            keys = self._unwrap(keyring, rows)
            nonces, wrapped = new_keyring.wrap(rows["data_key_id"], rows["owner"], keys)
            rewrapped = rows.select("data_key_id").with_columns(
                kek_id=pl.lit(new_keyring.active_id),
                nonce=pl.Series(nonces, dtype=pl.Binary),
                wrapped_key=pl.Series(wrapped, dtype=pl.Binary),
            )
            self._rebuild(rewrapped, before_replace, register_kek=new_keyring.active_id)
            counts = rows.group_by("kek_id").len()
        return dict(zip(counts["kek_id"].to_list(), counts["len"].to_list(), strict=True))

    def retire(self, kek_id: str) -> int:
        """Mark a KEK retired here; returns the live data keys it still wraps (0, or nothing is marked)."""
        with self._connect() as con:
            in_use = con.execute(statement("keys/count_keys_of_kek"), {"kek_id": kek_id}).fetchall()[0][0]
            if not in_use:
                con.execute(statement("keys/retire_kek"), {"kek_id": kek_id, "now": _utcnow()})
        return int(in_use)

    # --- reporting ----------------------------------------------------------------------------------

    def status(self) -> StoreStatus:
        """Counts only: data keys per KEK, destroyed keys, KEK ids. Never key material."""
        if not self.path.exists():
            return StoreStatus(self.path, False, {}, 0, [])
        with self._connect() as con:
            counts = con.sql(statement("keys/count_keys_per_kek")).pl()
            keks = con.sql(statement("keys/select_keks")).fetchall()
        live = {k: int(n) for k, n in zip(counts["kek_id"], counts["live"], strict=True) if k is not None and n}
        return StoreStatus(self.path, True, live, int(counts["destroyed"].sum()), [tuple(row) for row in keks])


def _merge(size: int, *parts: tuple[pl.Series, list[bytes]]) -> list[bytes]:
    """One list of ``size`` from (positions, values) parts that together cover every position, each part's
    positions ascending and distinct."""
    for positions, values in parts:
        if positions.len() == size:  # the usual case, all keys found (or all new): already in order
            return values
    out: list[bytes] = [b""] * size
    for positions, values in parts:
        for position, value in zip(positions.to_list(), values, strict=True):
            out[position] = value
    return out


def _material(rows: pl.DataFrame) -> tuple[list[bytes], list[bytes]]:
    return rows["nonce"].to_list(), rows["wrapped_key"].to_list()


def _numbered(values: pl.Series, name: str) -> pl.DataFrame:
    return values.alias(name).to_frame().with_row_index("pos")


def _absent(size: int, present: pl.Series) -> pl.Series:
    """The positions in ``range(size)`` that are not in ``present``."""
    found = pl.Series([False] * size, dtype=pl.Boolean).scatter(present, True) if present.len() else None
    everything = pl.int_range(0, size, dtype=pl.UInt32, eager=True)
    return everything if found is None else everything.filter(~found)


def _encode(values: pl.Series) -> tuple[pl.Series, pl.Series]:
    """The distinct values in order of first appearance, and each value's position among them (null: null).

    Rows usually come grouped by key (one golden record per master, a record's values together): then
    the runs of equal values are the distinct values, and no hash join is needed.
    """
    if not values.null_count():
        runs = values.rle_id()
        starts = values.filter(runs.is_first_distinct())
        if starts.n_unique() == starts.len():
            return starts, runs.cast(pl.UInt32)
    distinct = values.drop_nulls().unique(maintain_order=True)
    numbered = distinct.alias("v").to_frame().with_row_index("__k")
    return distinct, values.alias("v").to_frame().join(numbered, on="v", how="left", maintain_order="left")["__k"]


def _acquire(fd: int, timeout: float, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: DuckDB's own file lock is the only guard
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise KeyStoreBusyError(
                    f"key store {path} is in use by another process (a pipeline run or `cmdm keys`) "
                    f"for over {timeout:.0f}s; try again when it has finished"
                ) from None
            time.sleep(0.05)


def _new_store_id() -> str:
    return "ks-" + secrets.token_hex(8)


def _utcnow() -> dt.datetime:
    # DuckDB TIMESTAMP columns hold naive UTC.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
