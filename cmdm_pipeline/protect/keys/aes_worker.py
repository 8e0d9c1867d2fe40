"""AES-GCM over many values, and a worker process that takes part of a large call.

``cryptography`` holds the GIL while it encrypts, so a second thread gains nothing (measured: 300k
values in 0.18 s on one thread, 0.19 s on two). A large call therefore queues its batches for one
spawned worker process and does from the last as many as it reaches first (:mod:`.sharing`). A batch
goes as Arrow arrays (a few buffers each: pickling a list of millions of small ``bytes`` objects instead
cost more than the AES work it moved), with the keys from the first to the last it uses. Keys reach the worker through the
pipe to a child of this process, never a file. If the worker cannot start or dies, its batches are done
here.

The worker imports this module: it must not import Polars, DuckDB or the rest of the package.
"""

from __future__ import annotations

import array
import itertools
import logging
import multiprocessing
import operator
import os
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

T = TypeVar("T")
KEY_BYTES = 32
NONCE_BYTES = 12  # the 96-bit nonce GCM is specified for
#: Values per batch: bounds the AESGCM objects alive at once (at most 65,536 x 2.4 KB = 160 MB).
CHUNK_VALUES = 65_536
#: Below this many values, starting or feeding the worker costs more than it saves.
WORKER_MIN_VALUES = 400_000


class Failed(Exception):
    """The value at this position (counted from the first value given) does not decrypt."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


# --- the work, on Python lists ------------------------------------------------------------------------


def seal(keys: Sequence[bytes], prefixes: Sequence[bytes], positions: list[int], nonces: list[bytes],
         values: list[bytes], aads: list[bytes], chunks: KeyChunks) -> list[bytes]:
    """``prefix + nonce + AES-GCM(value)`` of each value, under the key at its position."""
    # map() over the unbound method runs the loop in C: no Python bytecode per value.
    bodies = map(AESGCM.encrypt, pick(chunks.load(positions), positions), nonces, values, aads)
    return list(map(operator.add, map(operator.add, pick(prefixes, positions), nonces), bodies))


def open_(positions: list[int], nonces: list[bytes], bodies: list[bytes], aads: list[bytes],
          chunks: KeyChunks) -> list[bytes]:
    """The plaintext of each ciphertext; raises :class:`Failed` naming the first that does not open."""
    aeads = pick(chunks.load(positions), positions)
    try:
        return list(map(AESGCM.decrypt, aeads, nonces, bodies, aads))
    except InvalidTag:
        # Slow path, errors only: find the first value that fails, to say where it is.
        bad = next(i for i, args in enumerate(zip(aeads, nonces, bodies, aads, strict=True)) if not opens(*args))
        raise Failed(bad) from None


class KeyChunks:
    """AESGCM objects for the keys one batch uses, by key position; released batch by batch.

    At ~2.4 KB of OpenSSL state each, a million AESGCM objects at once would take 2.4 GB.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = keys
        self.aeads: list[AESGCM | None] = [None] * len(keys)
        self.loaded: set[int] = set()

    def load(self, positions: Iterable[int]) -> list[AESGCM]:
        wanted = set(positions)
        for position in self.loaded - wanted:
            self.aeads[position] = None
        for position in wanted - self.loaded:
            self.aeads[position] = AESGCM(self.keys[position])
        self.loaded = wanted
        return self.aeads  # type: ignore[return-value]

    def __enter__(self) -> KeyChunks:
        return self

    def __exit__(self, *_: object) -> None:
        self.aeads.clear()


def pick(items: Sequence[T], index: list[int]) -> Sequence[T]:
    """``[items[i] for i in index]``, in C."""
    if len(index) < 2:
        return [items[i] for i in index]
    return operator.itemgetter(*index)(items)


def random_nonces(count: int) -> list[bytes]:
    """``count`` random 96-bit nonces: one getrandom call, split by Arrow (a call per nonce costs more)."""
    pool = pa.py_buffer(os.urandom(NONCE_BYTES * count))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(NONCE_BYTES), count, [None, pool])
    return fixed.cast(pa.binary()).to_pylist()


def opens(aead: AESGCM, nonce: bytes, blob: bytes, aad: bytes) -> bool:
    """Whether ``blob`` decrypts; for finding the one value that failed, after a batch raised."""
    try:
        aead.decrypt(nonce, blob, aad)
    except InvalidTag:
        return False
    return True


# --- the worker's half, on Arrow arrays ---------------------------------------------------------------


def associated_data(heads: pa.Array, columns: pa.Array, record_ids: pa.Array, rows: pa.Array) -> pa.Array:
    """``<table>|<column>|<record id>`` of each value, from its column and row: the worker builds its own, so
    only these small arrays cross the pipe, not a copy of the record id per value."""
    return pc.binary_join_element_wise(heads.take(columns), record_ids.take(rows), pa.scalar(b"", heads.type))


def seal_arrays(keys: bytes, prefixes: bytes, prefix_bytes: int, positions: pa.Array, values: pa.Array,
                aad: tuple[pa.Array, pa.Array, pa.Array, pa.Array]) -> pa.Array:
    """:func:`seal` of one batch, from and to Arrow arrays (``keys``, ``prefixes``: fixed-width, joined;
    ``aad``: the arguments of :func:`associated_data`)."""
    key_list, prefix_list = _split(keys, KEY_BYTES), _split(prefixes, prefix_bytes)
    with KeyChunks(key_list) as chunks:
        return _binary(seal(key_list, prefix_list, positions.to_pylist(), random_nonces(len(values)), values.to_pylist(),
                            associated_data(*aad).to_pylist(), chunks))


def open_arrays(keys: bytes, positions: pa.Array, nonces: pa.Array, bodies: pa.Array,
                aad: tuple[pa.Array, pa.Array, pa.Array, pa.Array]) -> pa.Array:
    """:func:`open_` of one batch, from and to Arrow arrays; :class:`Failed` counts from its first value."""
    key_list = _split(keys, KEY_BYTES)
    with KeyChunks(key_list) as chunks:
        return _binary(open_(positions.to_pylist(), nonces.to_pylist(), bodies.to_pylist(),
                             associated_data(*aad).to_pylist(), chunks))


def _binary(values: list[bytes]) -> pa.Array:
    """Arrow from bytes objects, built from its buffers: ``pa.array`` imports pandas (~1.7 s on a worker's
    first batch)."""
    offsets = array.array("q", itertools.accumulate(map(len, values), initial=0))
    return pa.Array.from_buffers(pa.large_binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def _split(joined: bytes, width: int) -> list[bytes]:
    return [joined[i:i + width] for i in range(0, len(joined), width)]


_POOL: ProcessPoolExecutor | None = None
_POOL_OF: weakref.WeakKeyDictionary[Future, ProcessPoolExecutor] = weakref.WeakKeyDictionary()
_FAILURES = 0
#: Workers that may fail in one process before it stops starting new ones: one killed (say, for memory) is
#: replaced, one that cannot start stops costing a spawn per call.
MAX_FAILURES = 3


def submit(function, *args) -> Future | None:
    """``function(*args)`` in the worker process, or None when there is no second core or no worker."""
    global _POOL
    if (os.cpu_count() or 1) < 2 or _FAILURES >= MAX_FAILURES:
        return None
    try:
        if _POOL is None:
            # spawn, not fork: the pipeline runs threads (Dagster, DuckDB) that a fork would copy mid-lock.
            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = _POOL.submit(function, *args)
    except Exception as error:  # noqa: BLE001 - no worker (e.g. a broken pool): the caller does the work itself
        _drop_worker(error)
        return None
    _POOL_OF[future] = _POOL
    return future


def shutdown() -> None:
    """Stop the worker process, if one runs. A process that is itself a multiprocessing worker (the
    benchmark runs each data set in one) must call this before it ends: such a process waits for its
    children on exit, and the worker would wait for work forever."""
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
    _POOL = None


def worker_failed(error: BaseException, future: Future) -> None:
    """The worker could not run the batch sent as ``future``: drop that worker (its pending batches are
    cancelled: callers do them themselves) and the next :func:`submit` starts a new one. A failure of a
    worker already replaced (a batch of an earlier pass, reported late) changes nothing."""
    pool = _POOL_OF.get(future)
    if pool is not None and pool is _POOL:
        _drop_worker(error)


def _drop_worker(error: BaseException) -> None:
    global _POOL, _FAILURES
    _FAILURES += 1
    last = _FAILURES >= MAX_FAILURES
    # The error's type only: a message could quote values.
    log.warning("the AES worker process failed (%s): this process does its batches, more slowly, %s",
                type(error).__name__, "from now on" if last else "until a new worker starts")
    if _POOL is not None:
        _abandon(_POOL)
        _POOL.shutdown(wait=False, cancel_futures=True)
    _POOL = None


def _abandon(pool: ProcessPoolExecutor) -> None:
    """Let this process exit without sending the dead worker what is still queued for it. On CPython before
    3.13 the executor's own clean-up fails when a batch was taken back (``InvalidStateError`` on a cancelled
    future) before it closes the pipe; its queue's feeder then stays blocked on a pipe nobody reads, and the
    process would hang at exit."""
    queue = getattr(pool, "_call_queue", None)  # private, as the clean-up it stands in for
    if queue is not None:
        queue.cancel_join_thread()
