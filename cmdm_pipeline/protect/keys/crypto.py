"""Column encryption: AES-256-GCM per value, whole columns at a time, under each owner's data key.

**Ciphertext** (Binary, DuckDB BLOB; 45 bytes more than the UTF-8 plaintext)::

    0x01 (format version) | data key id (16 bytes) | nonce (12 random bytes) | ciphertext | GCM tag (16)

The data key id says which key (and through the key store, which owner) to decrypt with; the
version lets a later format live beside this one. Associated data is ``"<table>|<column>|<record id>"``:
a value copied to another row, column or table fails to decrypt, with an error naming where (table,
column, record id), never what (the value). Null stays null. Values are encrypted as their text
(``cast(pl.String)``: a date as ``YYYY-MM-DD``); ``decrypt_*`` casts back when given a dtype.

**Speed.** Per pass the key store is asked once for every owner's key (one DuckDB query, each key
unwrapped once). Values go row-major (a record's values one after another under its key, while its
AES state is in the CPU cache) in batches of ``aes_worker.CHUNK_VALUES``, with one AESGCM object per
key of the batch (each holds ~2.4 KB of OpenSSL state, so not a million at once). Nonces come from
one ``os.urandom`` call per batch, associated data from Polars (in the worker, from pyarrow), and the
AES-GCM calls run through ``map(AESGCM.encrypt, ...)``: no Python bytecode per value.
``cryptography`` holds the GIL, so a large call shares its batches with a worker process
(:mod:`.aes_worker`) on the second core: the worker takes them from the first, this process from the
last (:mod:`.sharing`; ``python -m cmdm_pipeline.protect.keys.bench`` prints the figures). Large tables go
``ROWS_PER_PASS`` rows at a time, and each batch becomes Arrow as it is made, so the working copies
stay a fraction of the table; while the worker seals or opens one pass, this process resolves the
next pass's keys. Use the ``*_frame`` functions for tables with several PII columns: keys are
resolved once for all of them. Record ids must be unique within a call, or two rows could swap values
unnoticed (for a history table, use the master id *and* the version, e.g. ``valid_from``).

**Nights without change.** :func:`encrypt_changed` carries last night's ciphertext over for rows whose
keyed digest (owner + PII values, see :mod:`.blind_index`) did not change, and encrypts only the rest.
On a first night there is nothing to compare, and the digests are computed while the worker encrypts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import polars as pl
import pyarrow as pa

from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.keys import aes_worker, sharing
from cmdm_pipeline.protect.keys.aes_worker import random_nonces
from cmdm_pipeline.protect.keys.blind_index import expand, row_digests
from cmdm_pipeline.protect.keys.kek import DecryptionError
from cmdm_pipeline.protect.keys.keystore import DATA_KEY_ID_BYTES, KeyStore

FORMAT_VERSION = 1
_VERSION = bytes([FORMAT_VERSION])
_NONCE_AT = 1 + DATA_KEY_ID_BYTES
_BODY_AT = _NONCE_AT + 12
OVERHEAD = _BODY_AT + 16  # header, nonce and tag
DIGEST_COLUMN = "pii_digest"
#: DuckDB's row group (its default ``row_group_size``).
DUCKDB_ROW_GROUP = 122_880
#: Rows encrypted or decrypted per pass over a large table (each pass still uses the worker). Whole DuckDB
#: row groups: a sealed table is written as one Arrow chunk per pass, and a chunk ending mid row group
#: leaves partial groups that DuckDB merges, compressing the ciphertext again, when the connection closes
#: (530k golden records: 4.5-7.5 s more with 250,000 rows per pass).
ROWS_PER_PASS = 2 * DUCKDB_ROW_GROUP

OnDestroyed = Literal["raise", "null"]
T = TypeVar("T")


# --- single columns ---------------------------------------------------------------------------------


def encrypt_column(
    values: pl.Series, owners: pl.Series, table: str, column: str, record_ids: pl.Series, keys: KeyStore
) -> pl.Series:
    """Binary ciphertext per value (null stays null), under the data key of each row's owner."""
    frame = pl.DataFrame({"__v": values, "__o": owners, "__r": record_ids})
    return encrypt_frame(frame, ["__v"], table, "__o", "__r", keys, names={"__v": column})["__v"].rename(values.name)


def decrypt_column(
    ciphertexts: pl.Series, table: str, column: str, record_ids: pl.Series, keys: KeyStore,
    dtype: pl.DataType | None = None, destroyed: OnDestroyed = "raise",
) -> pl.Series:
    """The plaintext of each ciphertext (String, or ``dtype``); raises :class:`DecryptionError` if one was
    moved or altered. A value whose data key was destroyed raises, or is null with ``destroyed="null"``."""
    frame = pl.DataFrame({"__v": ciphertexts, "__r": record_ids})
    dtypes = {"__v": dtype} if dtype is not None else None
    out = decrypt_frame(frame, ["__v"], table, "__r", keys, dtypes, destroyed, names={"__v": column})
    return out["__v"].rename(ciphertexts.name)


# --- frames -----------------------------------------------------------------------------------------


def encrypt_frame(
    frame: pl.DataFrame, columns: Sequence[str], table: str, owner: str | pl.Expr, record_id: str | pl.Expr,
    keys: KeyStore, names: dict[str, str] | None = None, *, bound_as: str | None = None,
) -> pl.DataFrame:
    """``frame`` with each of ``columns`` replaced by its ciphertext; other columns untouched.

    ``owner`` (e.g. ``master_owner()``) picks each row's data key, ``record_id`` goes into the
    associated data. ``names`` maps a frame column to the column name bound into the associated data
    (default: itself), for callers whose working names differ from the stored ones; ``bound_as`` is the
    table name bound (default: ``table``), for two tables that hold the same rows.
    """
    _record_ids(frame, record_id)
    return _encrypt(frame, columns, table, owner, record_id, keys, names, bound_as=bound_as)[0]


def _by_rows(frame: pl.DataFrame, work: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """``work`` on ``ROWS_PER_PASS`` rows at a time: its copies of the values (stacked, sealed or opened,
    unstacked) then take a fraction of the memory a whole large table's would."""
    if frame.height <= ROWS_PER_PASS:
        return work(frame)
    return pl.concat([work(rows) for rows in _passes(frame)])


def _encrypt(
    frame: pl.DataFrame, columns: Sequence[str], table: str, owner: str | pl.Expr, record_id: str | pl.Expr,
    keys: KeyStore, names: dict[str, str] | None = None, meanwhile: Callable[[pl.DataFrame], T] | None = None,
    bound_as: str | None = None,
) -> tuple[pl.DataFrame, list[T]]:
    """:func:`encrypt_frame` ``ROWS_PER_PASS`` rows at a time, plus ``meanwhile(rows)`` of each pass.

    Passes overlap (:func:`_overlapped`), and ``meanwhile`` runs while the worker seals. (Later nights
    encrypt only the changed rows, pass by pass without this overlap.)
    """
    names, bound_as = names or {}, bound_as or table
    _check_names(bound_as, [names.get(c, c) for c in columns])
    if frame.is_empty():
        empty = frame.with_columns(pl.col(c).cast(pl.String).cast(pl.Binary) for c in columns)
        return empty, [meanwhile(frame)] if meanwhile else []
    heads = _aad_heads(bound_as, columns, names)
    return _overlapped(
        _passes(frame), lambda rows: _SealPass.start(rows, columns, owner, record_id, keys, heads),
        lambda work: work.finish(columns), meanwhile,
    )


class _Pass(Protocol):
    batches: list[sharing.Batch]


P = TypeVar("P", bound=_Pass)


def _passes(frame: pl.DataFrame) -> list[pl.DataFrame]:
    return [frame.slice(lo, ROWS_PER_PASS) for lo in range(0, frame.height, ROWS_PER_PASS)]


def _overlapped(
    parts: list[pl.DataFrame], start: Callable[[pl.DataFrame], P], finish: Callable[[P], pl.DataFrame],
    meanwhile: Callable[[pl.DataFrame], T] | None = None,
) -> tuple[pl.DataFrame, list[T]]:
    """``finish(start(part))`` of every part, concatenated, plus ``meanwhile(part)`` of each.

    Each part is started (keys resolved, batches queued for the worker) before the one ahead of it is
    finished (this process joins in from its last batch), so the worker does not wait while this process
    prepares a pass. Only two passes are alive at once.
    """
    done, extras = [], []
    current: P | None
    ahead: P | None
    current = ahead = start(parts[0])
    try:
        for i, part in enumerate(parts):
            ahead = start(parts[i + 1]) if i + 1 < len(parts) else None
            if meanwhile:
                extras.append(meanwhile(part))
            assert current is not None  # None only once the last part is finished
            done.append(finish(current))
            current = ahead  # the finished pass's working copies go
    except BaseException:
        for queued in (current, ahead):
            if queued is not None:
                sharing.cancel(queued.batches)
        raise
    return (done[0] if len(done) == 1 else pl.concat(done)), extras


@dataclass
class _SealPass:
    """One pass of :func:`_encrypt`: its values, keys and associated data, its batches queued for the worker."""

    frame: pl.DataFrame
    flat: _Flat
    keys: list[bytes]
    prefixes: list[bytes]
    key_of_value: pl.Series
    record_ids: pl.Series
    heads: pl.Series
    batches: list[sharing.Batch] = field(default_factory=list)

    @classmethod
    def start(
        cls, frame: pl.DataFrame, columns: Sequence[str], owner: str | pl.Expr, record_id: str | pl.Expr,
        keys: KeyStore, heads: pl.Series,
    ) -> _SealPass:
        record_ids = _ids(frame, record_id)  # checked unique over the whole table by the caller
        owners = frame.select(_expr(owner)).to_series().cast(pl.String)
        data_keys = keys.keys_for_owners(owners)
        flat = _Flat.of(frame.select(pl.col(c).cast(pl.String).cast(pl.Binary) for c in columns))
        prefixes = [_VERSION + key_id for key_id in data_keys.key_ids]
        work = cls(frame, flat, data_keys.keys, prefixes, data_keys.index.gather(flat.rows), record_ids, heads)
        work.batches.extend(sharing.queue(flat.values.len(), work.send))
        return work

    def send(self, lo: int, hi: int) -> Future[pa.Array] | None:
        """Values ``lo`` to ``hi`` to the worker, with the keys from the first to the last they use."""
        used, positions = _window(self.key_of_value.slice(lo, hi - lo))
        return aes_worker.submit(
            aes_worker.seal_arrays, b"".join(self.keys[used]), b"".join(self.prefixes[used]),
            len(_VERSION) + DATA_KEY_ID_BYTES, positions,
            self.flat.values.slice(lo, hi - lo).to_arrow(), self.flat.aad_parts(self.heads, self.record_ids, lo, hi),
        )

    def finish(self, columns: Sequence[str]) -> pl.DataFrame:
        """This process's batches from the last, then the worker's, back into the frame."""
        with aes_worker.KeyChunks(self.keys) as chunks:
            def here(lo: int, hi: int) -> pl.Series:
                positions = self.key_of_value.slice(lo, hi - lo).to_list()
                values = self.flat.values.slice(lo, hi - lo).to_list()
                aads = self.flat.aads(self.heads, self.record_ids, lo, hi)
                sealed = aes_worker.seal(self.keys, self.prefixes, positions, random_nonces(len(values)), values, aads, chunks)
                return pl.Series(sealed, dtype=pl.Binary)

            return self.frame.with_columns(self.flat.unflatten(sharing.gather(self.batches, here), columns))


def decrypt_frame(
    frame: pl.DataFrame, columns: Sequence[str], table: str, record_id: str | pl.Expr, keys: KeyStore,
    dtypes: dict[str, pl.DataType] | None = None, destroyed: OnDestroyed = "raise",
    names: dict[str, str] | None = None, *, bound_as: str | None = None,
) -> pl.DataFrame:
    """``frame`` with each ciphertext column of ``columns`` decrypted (String, or its dtype in ``dtypes``);
    ``bound_as``: the table name bound into the associated data, if not ``table``."""
    names, dtypes = names or {}, dtypes or {}
    _check_names(bound_as or table, [names.get(c, c) for c in columns])
    if frame.is_empty():
        return frame.with_columns(pl.col(c).cast(dtypes.get(c, pl.String())) for c in columns)
    _record_ids(frame, record_id)
    opened, _ = _overlapped(
        _passes(frame),
        lambda rows: _OpenPass.start(rows, columns, table, record_id, keys, destroyed, names, bound_as or table),
        lambda work: work.finish(columns, dtypes),
    )
    return opened


@dataclass
class _OpenPass:
    """One pass of :func:`decrypt_frame`: its ciphertexts and keys, its batches queued for the worker."""

    frame: pl.DataFrame
    flat: _Flat
    keys: list[bytes]
    key_of_value: pl.Series
    record_ids: pl.Series
    heads: pl.Series
    where: Callable[[int], str]  # the table, column and record of a value, for errors
    batches: list[sharing.Batch] = field(default_factory=list)

    @classmethod
    def start(
        cls, frame: pl.DataFrame, columns: Sequence[str], table: str, record_id: str | pl.Expr, keys: KeyStore,
        destroyed: OnDestroyed, names: dict[str, str], bound_as: str,
    ) -> _OpenPass:
        record_ids = _ids(frame, record_id)
        for c in columns:
            _check_format(frame[c], table, names.get(c, c), record_ids)
        flat = _Flat.of(frame.select(columns))
        data_keys, gone = keys.keys_by_id(flat.values.bin.slice(1, DATA_KEY_ID_BYTES))
        shredded = data_keys.index.is_null()
        if shredded.any():
            if destroyed == "raise":
                at = int(shredded.arg_max())  # type: ignore[arg-type]
                key_id = flat.values[at][1:_NONCE_AT]
                raise DecryptionError(
                    f"cannot decrypt {flat.where(at, table, columns, names, record_ids)}: its data key "
                    f"{key_id.hex()} was destroyed on {gone[key_id]:%Y-%m-%d %H:%M} UTC (crypto-shredded)"
                )
            flat = flat.without(shredded)
        work = cls(frame, flat, data_keys.keys, data_keys.index.filter(~shredded), record_ids,
                   _aad_heads(bound_as, columns, names), lambda at: flat.where(at, table, columns, names, record_ids))
        work.batches.extend(sharing.queue(flat.values.len(), work.send))
        return work

    def send(self, lo: int, hi: int) -> Future[pa.Array] | None:
        blobs, (used, positions) = self.flat.values.slice(lo, hi - lo), _window(self.key_of_value.slice(lo, hi - lo))
        return aes_worker.submit(
            aes_worker.open_arrays, b"".join(self.keys[used]), positions,
            blobs.bin.slice(_NONCE_AT, _BODY_AT - _NONCE_AT).to_arrow(), blobs.bin.slice(_BODY_AT).to_arrow(),
            self.flat.aad_parts(self.heads, self.record_ids, lo, hi),
        )

    def finish(self, columns: Sequence[str], dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
        """This process's batches from the last, then the worker's, back into the frame as plaintext."""
        with aes_worker.KeyChunks(self.keys) as chunks:
            def here(lo: int, hi: int) -> pl.Series:
                blobs = self.flat.values.slice(lo, hi - lo)
                nonces, bodies = blobs.bin.slice(_NONCE_AT, _BODY_AT - _NONCE_AT).to_list(), blobs.bin.slice(_BODY_AT).to_list()
                positions = self.key_of_value.slice(lo, hi - lo).to_list()
                aads = self.flat.aads(self.heads, self.record_ids, lo, hi)
                return pl.Series(aes_worker.open_(positions, nonces, bodies, aads, chunks), dtype=pl.Binary)

            try:
                plain = sharing.gather(self.batches, here)
            except aes_worker.Failed as failed:
                raise DecryptionError(
                    f"cannot decrypt {self.where(failed.value)}: the ciphertext was not made for this table, column "
                    "and record (moved or altered)"
                ) from None
        columns_out = self.flat.unflatten(plain.cast(pl.String), columns)
        return self.frame.with_columns(_typed(series, dtypes.get(series.name)) for series in columns_out)


@dataclass(frozen=True)
class _Flat:
    """The non-null values of several columns in row-major order, and where each came from.

    Row-major, because then each data key encrypts a record's values one after the other while its
    AES state is in the CPU cache: a third faster than column by column through a million keys.
    """

    values: pl.Series  # non-null values, a row's values together
    rows: pl.Series  # row of each value
    cols: pl.Series  # column position of each value
    present: list[pl.Series]  # per column: the rows that hold a value

    @classmethod
    def of(cls, frame: pl.DataFrame) -> _Flat:
        # Stacked and stably sorted by row: Polars' concat_list + explode is 15x slower on Binary.
        parts = [
            frame.select(pl.col(c).alias("v")).with_row_index("r").with_columns(c=pl.lit(j, pl.UInt32)).drop_nulls("v")
            for j, c in enumerate(frame.columns)
        ]
        long = pl.concat(parts).sort("r", maintain_order=True)
        return cls(long["v"], long["r"], long["c"], [frame[c].is_not_null() for c in frame.columns])

    def aads(self, heads: pl.Series, record_ids: pl.Series, lo: int, hi: int) -> list[bytes]:
        """``<table>|<column>|<record id>`` of values ``lo`` to ``hi``."""
        column = heads.gather(self.cols.slice(lo, hi - lo))
        return (column + record_ids.gather(self.rows.slice(lo, hi - lo))).cast(pl.Binary).to_list()

    def aad_parts(self, heads: pl.Series, record_ids: pl.Series, lo: int, hi: int) -> tuple[pa.Array, ...]:
        """What :func:`aes_worker.associated_data` needs for values ``lo`` to ``hi``: only their rows' ids."""
        used, rows = _window(self.rows.slice(lo, hi - lo))
        # Cast, so the slice is copied: pickling an Arrow view of a numeric column sends its whole buffer.
        return (heads.cast(pl.Binary).to_arrow(), self.cols.slice(lo, hi - lo).cast(pl.UInt16).to_arrow(),
                record_ids[used].cast(pl.Binary).to_arrow(), rows)

    def where(self, value: int, table: str, columns: Sequence[str], names: dict[str, str], record_ids: pl.Series) -> str:
        column = columns[self.cols[value]]
        return f"{table}.{names.get(column, column)} of record {record_ids[self.rows[value]]}"

    def without(self, dropped: pl.Series) -> _Flat:
        present = [
            mask.clone().scatter(self.rows.filter(dropped & (self.cols == j)), False)
            for j, mask in enumerate(self.present)
        ]
        keep = ~dropped
        return _Flat(self.values.filter(keep), self.rows.filter(keep), self.cols.filter(keep), present)

    def unflatten(self, values: pl.Series, columns: Sequence[str]) -> list[pl.Series]:
        """One Series per column from values in this order (nulls back where they were)."""
        # One gather per column, of its values' positions: filtering the values themselves per column would
        # read every value once per column, and a gather from several chunks is ~10x slower than from one.
        values, positions = values.rechunk(), pl.int_range(values.len(), dtype=pl.UInt32, eager=True)
        return [
            values.gather(expand(positions.filter(self.cols == j), mask)).alias(column)
            for j, (column, mask) in enumerate(zip(columns, self.present, strict=True))
        ]


def _window(positions: pl.Series) -> tuple[slice, pa.Array]:
    """Which entries (keys, record ids) a batch uses, first to last, and its positions counted from the first:
    only those cross the pipe to the worker."""
    first = int(positions.min())  # type: ignore[arg-type]
    return slice(first, int(positions.max()) + 1), (positions - first).to_arrow()  # type: ignore[arg-type]


def _aad_heads(table: str, columns: Sequence[str], names: dict[str, str]) -> pl.Series:
    return pl.Series([f"{table}|{names.get(c, c)}|" for c in columns], dtype=pl.String)


# --- incremental ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encrypted:
    frame: pl.DataFrame  # the rows, PII columns as ciphertext, plus the digest column
    encrypted: int  # rows encrypted this time
    reused: int  # rows whose previous ciphertext was kept


def encrypt_changed(
    current: pl.DataFrame, previous: pl.DataFrame | Sequence[pl.DataFrame] | None, columns: Sequence[str], table: str,
    owner: str | pl.Expr, record_id: str | pl.Expr, keys: KeyStore, digest_column: str = DIGEST_COLUMN,
    *, bound_as: str | None = None, given: bool = False,
) -> Encrypted:
    """Encrypt ``current`` (plaintext), keeping ``previous`` (last stored, encrypted) ciphertext where
    nothing changed.

    A row is unchanged when its keyed digest of owner + ``columns`` equals the previous row's with the
    same record id: same values, same owner (so same data key). A record that moved to another master
    is re-encrypted under the new master's key. ``previous`` may be several frames bound the same way
    (a table as stored, and the rows of a table ``bound_as`` it just sealed); the first holding a record
    id is used. The result has ``digest_column`` for the next night. ``given``: ``current`` already holds
    ``digest_column``, a keyed digest that changes whenever the owner or one of ``columns`` does (the
    golden records' version digest), compared as it is instead of digesting every row again.
    """
    bound = bound_as or table
    _record_ids(current, record_id)  # unique, or the join below would multiply rows
    if given and digest_column not in current.columns:
        raise ProtectionError(f"{table} has no {digest_column} column to compare with last night's")
    earlier = _earlier(previous, columns, record_id, digest_column)
    if earlier is None:
        # Nothing to compare with: digests not given are made (for the next night) while the worker encrypts.
        def digest(rows: pl.DataFrame) -> pl.Series:
            return row_digests(_narrow(rows, owner, record_id, columns), ["__owner", *columns], bound, keys)

        sealed, made = _encrypt(current, columns, table, owner, record_id, keys, bound_as=bound,
                                meanwhile=None if given else digest)
        return Encrypted(sealed if given else sealed.with_columns(pl.concat(made).alias(digest_column)), current.height, 0)
    counts = [0, 0]

    def rows(part: pl.DataFrame) -> pl.DataFrame:
        out = _encrypt_changed(part, earlier, columns, table, owner, record_id, keys, digest_column, bound, given)
        counts[0] += out.encrypted
        counts[1] += out.reused
        return out.frame

    frame = _by_rows(current, rows)
    return Encrypted(frame, counts[0], counts[1])


def _narrow(frame: pl.DataFrame, owner: str | pl.Expr, record_id: str | pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
    # Only the record id, owner and personal columns are worked on: the other columns are never copied.
    return frame.select(_expr(record_id).cast(pl.String).alias("__rid"), _expr(owner).cast(pl.String).alias("__owner"),
                        *columns)


def _encrypt_changed(
    current: pl.DataFrame, earlier: pl.DataFrame, columns: Sequence[str], table: str, owner: str | pl.Expr,
    record_id: str | pl.Expr, keys: KeyStore, digest_column: str, bound: str, given: bool,
) -> Encrypted:
    narrow = _narrow(current, owner, record_id, columns)
    digests = (current[digest_column] if given else row_digests(narrow, ["__owner", *columns], bound, keys)).alias(digest_column)
    joined = narrow.with_columns(digests).join(earlier, on="__rid", how="left", maintain_order="left")
    same = (joined["__digest_before"] == joined[digest_column]).fill_null(False)
    changed = encrypt_frame(joined.filter(~same).select("__rid", "__owner", *columns), columns, table, "__owner",
                            "__rid", keys, bound_as=bound)
    # Written into a copy of last night's column: a when/then over every row costs ~20x more on Binary.
    rows = (~same).arg_true()
    sealed = [joined[f"__before_{c}"].clone().scatter(rows, changed[c]).alias(c) for c in columns]
    return Encrypted(current.with_columns(*sealed, digests), changed.height, current.height - changed.height)


def _earlier(
    previous: pl.DataFrame | Sequence[pl.DataFrame] | None, columns: Sequence[str], record_id: str | pl.Expr,
    digest_column: str,
) -> pl.DataFrame | None:
    """Record id, digest and ciphertexts of the previous frames that can be compared; None if there are none."""
    frames = [previous] if isinstance(previous, pl.DataFrame) else list(previous or [])
    # A frame stored by an older version may lack a record id column, or hold plaintext (written before
    # encryption was switched on): it is just not compared with.
    needed = {digest_column, *columns, *_expr(record_id).meta.root_names()}
    usable = [
        f for f in frames
        if needed <= set(f.columns) and not f.is_empty() and all(f.schema[c] == pl.Binary for c in columns)
    ]
    if not usable:
        return None
    parts = [
        f.select(
            _expr(record_id).cast(pl.String).alias("__rid"),
            pl.col(digest_column).alias("__digest_before"),
            *[pl.col(c).alias(f"__before_{c}") for c in columns],
        )
        for f in usable
    ]
    earlier = parts[0]
    for part in parts[1:]:
        # Only the record ids not seen yet: copying the rest would double the ciphertext in memory.
        earlier = pl.concat([earlier, part.join(earlier.select("__rid"), on="__rid", how="anti")])
    return earlier


# --- helpers ----------------------------------------------------------------------------------------


def _expr(column: str | pl.Expr) -> pl.Expr:
    return pl.col(column) if isinstance(column, str) else column


def _ids(frame: pl.DataFrame, record_id: str | pl.Expr) -> pl.Series:
    return frame.select(_expr(record_id).cast(pl.String)).to_series()


def checked_record_ids(frame: pl.DataFrame, record_id: str | pl.Expr) -> pl.Series:
    """Each row's record id; raises :class:`ProtectionError` if one is missing or repeated."""
    return _record_ids(frame, record_id)


def _record_ids(frame: pl.DataFrame, record_id: str | pl.Expr) -> pl.Series:
    ids = _ids(frame, record_id)
    if ids.null_count():
        raise ProtectionError("every row to encrypt or decrypt needs a record id")
    if ids.is_duplicated().any():
        raise ProtectionError(
            f"record ids must be unique ({ids.filter(ids.is_duplicated()).n_unique():,} repeated): otherwise two "
            "rows could swap values unnoticed"
        )
    return ids


def _check_names(table: str, columns: Sequence[str]) -> None:
    # '|' separates the parts of the associated data; a name holding one could impersonate another.
    wrong = [name for name in [table, *columns] if "|" in name or not name]
    if wrong:
        raise ProtectionError(f"table and column names bound to ciphertexts may not be empty or hold '|': {wrong}")


def _check_format(blobs: pl.Series, table: str, column: str, record_ids: pl.Series) -> None:
    if blobs.dtype != pl.Binary:
        raise DecryptionError(f"{table}.{column} is {blobs.dtype}, not encrypted (Binary)")
    bad = blobs.is_not_null() & ((blobs.bin.size() < OVERHEAD) | ~blobs.bin.starts_with(_VERSION))
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        raise DecryptionError(
            f"{table}.{column} of record {record_ids[row]} is not a cmdm ciphertext (format {FORMAT_VERSION})"
        )


def _typed(text: pl.Series, dtype: pl.DataType | None) -> pl.Series:
    if dtype is None or dtype == pl.String:
        return text
    if dtype == pl.Date:
        return text.str.to_date("%Y-%m-%d")
    if isinstance(dtype, pl.Datetime) or dtype == pl.Datetime:
        return text.str.to_datetime(time_unit=getattr(dtype, "time_unit", None) or "us").cast(dtype)
    return text.cast(dtype)
