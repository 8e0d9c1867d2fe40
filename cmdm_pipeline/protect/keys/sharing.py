"""The batches of one AES call, shared between this process and the worker process without a fixed split.

Every batch is queued for the worker, first to last. This process does batches from the last, taking
each back from the queue (``Future.cancel``) until it meets one handed to the worker (the executor hands
over up to two ahead of the one running); the worker has all the earlier ones, as it takes them in
order. The two meet wherever their speeds put them, so there is no share to tune per machine, and this
process may first do other work (the next pass's keys, a first night's digests) and join in later. A batch the worker could not do (it died, or never started) is done
here instead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from cmdm_pipeline.protect.keys import aes_worker


@dataclass(frozen=True)
class Batch:
    lo: int
    hi: int
    queued: Future[pa.Array] | None  # the worker's run of it; None when this process does it


def queue(count: int, send: Callable[[int, int], Future[pa.Array] | None]) -> list[Batch]:
    """Values ``0..count`` in batches of ``aes_worker.CHUNK_VALUES``, each sent to the worker by
    ``send(lo, hi)``; none when the call is too small to be worth it, or there is no worker."""
    batches: list[Batch] = []
    worker, size = count >= aes_worker.WORKER_MIN_VALUES, aes_worker.CHUNK_VALUES
    try:
        for lo in range(0, count, size):
            hi = min(lo + size, count)
            queued = send(lo, hi) if worker else None
            worker = queued is not None
            batches.append(Batch(lo, hi, queued))
    except BaseException:
        cancel(batches)
        raise
    return batches


def gather(batches: list[Batch], here: Callable[[int, int], pl.Series]) -> pl.Series:
    """The results of all ``batches`` in order: this process does ``here(lo, hi)`` from the last batch
    until it meets one handed to the worker, then collects the worker's. A value that does not decrypt
    raises :class:`aes_worker.Failed`, counted from the first value of the call."""
    done: list[pl.Series | None] = [None] * len(batches)
    try:
        for i in reversed(range(len(batches))):
            queued = batches[i].queued
            if queued is not None and not queued.cancel():
                break
            done[i] = _here(batches[i], here)
        parts = [part if part is not None else _from_worker(batch, here) for part, batch in zip(done, batches, strict=True)]
    except BaseException:
        cancel(batches)
        raise
    return pl.concat(parts, rechunk=True) if parts else pl.Series(dtype=pl.Binary)


def cancel(batches: list[Batch]) -> None:
    """Take back the batches the worker has not begun (after an error: nobody will collect them)."""
    for batch in batches:
        if batch.queued is not None:
            batch.queued.cancel()


def _here(batch: Batch, here: Callable[[int, int], pl.Series]) -> pl.Series:
    try:
        return here(batch.lo, batch.hi)
    except aes_worker.Failed as failed:
        raise aes_worker.Failed(batch.lo + failed.value) from None


def _from_worker(batch: Batch, here: Callable[[int, int], pl.Series]) -> pl.Series:
    assert batch.queued is not None
    try:
        return pl.Series(pl.from_arrow(batch.queued.result())).cast(pl.Binary)
    except aes_worker.Failed as failed:
        raise aes_worker.Failed(batch.lo + failed.value) from None
    except Exception as error:  # noqa: BLE001 - the worker died or could not run: do its batch here
        aes_worker.worker_failed(error, batch.queued)
        return _here(batch, here)
