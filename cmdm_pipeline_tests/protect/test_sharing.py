"""Batches shared with the worker: this process takes them back from the last until it meets one begun."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import polars as pl
import pyarrow as pa
import pytest

from cmdm_pipeline.protect.keys import aes_worker, sharing


def queued(count: int, begun: int, monkeypatch: pytest.MonkeyPatch) -> list[sharing.Batch]:
    """``count`` values in batches of 10, all queued; the worker has begun the first ``begun`` batches."""
    monkeypatch.setattr(aes_worker, "CHUNK_VALUES", 10)
    monkeypatch.setattr(aes_worker, "WORKER_MIN_VALUES", 1)
    futures: list[Future[pa.Array]] = []

    def send(lo: int, hi: int) -> Future[pa.Array]:
        future: Future[pa.Array] = Future()
        if len(futures) < begun:
            future.set_running_or_notify_cancel()
        futures.append(future)
        return future

    return sharing.queue(count, send)


def work(lo: int, hi: int) -> pl.Series:
    return pl.Series([f"v{i}".encode() for i in range(lo, hi)], dtype=pl.Binary)


def test_this_process_takes_back_the_batches_not_begun_from_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    batches = queued(45, begun=2, monkeypatch=monkeypatch)
    assert [(b.lo, b.hi) for b in batches] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 45)]
    for batch in batches[:2]:
        assert batch.queued is not None
        batch.queued.set_result(work(batch.lo, batch.hi).to_arrow())
    done_here: list[int] = []
    result = sharing.gather(batches, lambda lo, hi: done_here.append(lo) or work(lo, hi))
    assert done_here == [40, 30, 20]
    assert [b.queued.cancelled() for b in batches if b.queued] == [False, False, True, True, True]
    assert result.equals(work(0, 45))


def test_a_batch_the_worker_could_not_do_is_done_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aes_worker, "worker_failed", lambda error, future: None)
    batches = queued(30, begun=3, monkeypatch=monkeypatch)
    for batch, outcome in zip(batches, ["ok", "died", "ok"], strict=True):
        assert batch.queued is not None
        if outcome == "ok":
            batch.queued.set_result(work(batch.lo, batch.hi).to_arrow())
        else:
            batch.queued.set_exception(BrokenProcessPool("worker died"))
    done_here: list[int] = []
    assert sharing.gather(batches, lambda lo, hi: done_here.append(lo) or work(lo, hi)).equals(work(0, 30))
    assert done_here == [10]


@pytest.mark.parametrize("where", ["worker", "here"])
def test_a_value_that_does_not_decrypt_is_counted_from_the_first_value(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = queued(30, begun=2 if where == "worker" else 0, monkeypatch=monkeypatch)
    if where == "worker":
        assert batches[0].queued is not None and batches[1].queued is not None
        batches[0].queued.set_result(work(0, 10).to_arrow())
        batches[1].queued.set_exception(aes_worker.Failed(3))
        failing_lo, expected = -1, 13
    else:
        failing_lo, expected = 20, 27

    def here(lo: int, hi: int) -> pl.Series:
        if lo == failing_lo:
            raise aes_worker.Failed(7)
        return work(lo, hi)

    with pytest.raises(aes_worker.Failed) as failed:
        sharing.gather(batches, here)
    assert failed.value.value == expected
    assert all(b.queued.done() for b in batches if b.queued)  # nothing left queued for nobody


def test_batches_sent_before_an_error_are_taken_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aes_worker, "CHUNK_VALUES", 10)
    monkeypatch.setattr(aes_worker, "WORKER_MIN_VALUES", 1)
    sent: list[Future[pa.Array]] = []

    def send(lo: int, hi: int) -> Future[pa.Array]:
        if lo == 20:
            raise RuntimeError("cannot send")
        sent.append(Future())
        return sent[-1]

    with pytest.raises(RuntimeError):
        sharing.queue(40, send)
    assert len(sent) == 2 and all(future.cancelled() for future in sent)


def test_a_small_call_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aes_worker, "WORKER_MIN_VALUES", 100)
    sent: list[int] = []
    batches = sharing.queue(99, lambda lo, hi: sent.append(lo))  # type: ignore[func-returns-value]
    assert sent == [] and all(b.queued is None for b in batches)
    assert sharing.gather(batches, work).equals(work(0, 99))
