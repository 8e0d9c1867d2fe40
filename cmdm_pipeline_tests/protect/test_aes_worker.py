"""Large encrypt and decrypt calls share their batches with a worker process: same results, same errors."""

from __future__ import annotations

import os
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.protect.keys import aes_worker, crypto
from cmdm_pipeline.protect.keys.crypto import decrypt_frame, encrypt_frame
from cmdm_pipeline.protect.keys.kek import DecryptionError, init_key_file, read_key_file
from cmdm_pipeline.protect.keys.keystore import KeyStore, master_owner

TABLE, COLUMNS = "golden_customers", ["first_name", "email"]
ROWS = 500  # 1,000 values, a row's two values together: 40 batches of 25
FRAME = pl.DataFrame({
    "master_id": [f"M{i:04d}" for i in range(ROWS)],
    "first_name": [f"name {i}" for i in range(ROWS)],
    "email": [f"person{i}@example.org" for i in range(ROWS)],
})


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    monkeypatch.setattr(aes_worker, "CHUNK_VALUES", 25)
    monkeypatch.setattr(aes_worker, "WORKER_MIN_VALUES", 100)
    monkeypatch.setattr(aes_worker, "_FAILURES", 0)  # workers killed by other tests do not count
    key_file = tmp_path / "keys" / "dev.kek.json"
    init_key_file(key_file)
    return KeyStore(tmp_path / "keys" / "keystore.duckdb", read_key_file(key_file))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no second core, so no worker process")
def test_both_processes_take_batches_and_the_result_is_the_same(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    here: list[int] = []
    seal, open_ = aes_worker.seal, aes_worker.open_

    # This process takes 0.05 s a batch (the worker imports its own, unpatched module), and the worker is
    # kept busy for 0.5 s when a call begins: this process does the last batches until the worker is free,
    # and the worker the first ones while this process is still on its way.
    def slow(work):  # type: ignore[no-untyped-def]
        def run(*args):  # type: ignore[no-untyped-def]
            here.append(len(args[-2]))
            time.sleep(0.05)
            return work(*args)
        return run

    monkeypatch.setattr(aes_worker, "seal", slow(seal))
    monkeypatch.setattr(aes_worker, "open_", slow(open_))
    assert aes_worker.submit(aes_worker.random_nonces, 1).result()  # started, and this module imported there
    busy = aes_worker.submit(time.sleep, 0.5)
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    assert busy is not None and busy.done()
    sealed_here = len(here)
    aes_worker.submit(time.sleep, 0.5)
    assert decrypt_frame(sealed, COLUMNS, TABLE, "master_id", store).equals(FRAME)
    # Each process took some of the 40 batches, both times.
    assert 0 < sealed_here < 40 and 0 < len(here) - sealed_here < 40, here


@pytest.mark.parametrize("row", [10, 400], ids=["an early row", "a late row"])
def test_a_moved_ciphertext_is_named_wherever_it_is(store: KeyStore, row: int) -> None:
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    emails = sealed["email"].to_list()
    emails[row] = emails[row + 1]
    moved = sealed.with_columns(pl.Series("email", emails, dtype=pl.Binary))
    with pytest.raises(DecryptionError, match=rf"golden_customers\.email of record M{row:04d}: .*moved or altered"):
        decrypt_frame(moved, COLUMNS, TABLE, "master_id", store)


def test_a_dead_worker_leaves_the_work_to_this_process(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> Future[object]:
        future: Future[object] = Future()
        future.set_exception(BrokenProcessPool("worker died"))
        return future

    monkeypatch.setattr(aes_worker, "submit", broken)
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    assert decrypt_frame(sealed, COLUMNS, TABLE, "master_id", store).equals(FRAME)


def _worker_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == aes_worker.__name__]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no second core, so no worker process")
@pytest.mark.parametrize(
    ("failed_before", "then"), [(0, "until a new worker starts"), (aes_worker.MAX_FAILURES - 1, "from now on")],
    ids=["a first failure", "one failure too many"],
)
def test_a_worker_that_dies_is_logged_once_and_replaced_until_too_many_have(
    store: KeyStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, failed_before: int, then: str
) -> None:
    monkeypatch.setattr(aes_worker, "_FAILURES", failed_before)
    dying = aes_worker.submit(os._exit, 1)
    assert dying is not None
    with pytest.raises(BrokenProcessPool):
        dying.result()
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    assert decrypt_frame(sealed, COLUMNS, TABLE, "master_id", store).equals(FRAME)
    warnings = _worker_warnings(caplog)
    assert len(warnings) == 1 and "BrokenProcessPool" in warnings[0] and warnings[0].endswith(then), warnings
    again = aes_worker.submit(aes_worker.random_nonces, 2)
    if failed_before + 1 < aes_worker.MAX_FAILURES:
        assert again is not None and len(again.result()) == 2  # a new worker
    else:
        assert again is None  # this process does all the work from now on


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no second core, so no worker process")
def test_a_worker_dying_with_several_passes_queued_is_replaced_once(
    store: KeyStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crypto, "ROWS_PER_PASS", 100)  # 5 passes of 200 values, 8 batches each
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    started: list[object] = []
    pool = aes_worker.ProcessPoolExecutor

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(1)
        return pool(*args, **kwargs)

    monkeypatch.setattr(aes_worker, "ProcessPoolExecutor", counted)
    # The worker dies after this process has queued the first two passes on it: the first pass's batches
    # report it, then the second pass's (already given to a new worker's predecessor) must not drop the new one.
    assert aes_worker.submit(exec, "import os, time; time.sleep(0.3); os._exit(1)") is not None
    assert decrypt_frame(sealed, COLUMNS, TABLE, "master_id", store).equals(FRAME)
    assert len(_worker_warnings(caplog)) == 1
    assert len(started) == 1  # one new worker, kept: a late report of the dead one changed nothing


def _start_worker(stop: bool, pids) -> None:  # type: ignore[no-untyped-def]
    """In a multiprocessing child: start the AES worker, then end (stopping it first if ``stop``)."""
    aes_worker.submit(time.sleep, 0).result()
    pids.put(list(aes_worker._POOL._processes))  # type: ignore[union-attr]
    if stop:
        aes_worker.shutdown()


def _worker_dies_with_batches_in_the_pipe() -> None:
    """In a multiprocessing child: the worker dies while batches larger than the pipe holds wait for it, some
    taken back (as :func:`sharing.gather` does); this process learns it from a batch, then ends."""
    dying = aes_worker.submit(exec, "import time, os; time.sleep(0.5); os._exit(1)")
    queued = [aes_worker.submit(len, bytes(8 << 20)) for _ in range(6)]
    for future in queued[2:]:
        assert future is not None
        future.cancel()
    assert dying is not None
    try:
        dying.result()
    except BrokenProcessPool as error:
        aes_worker.worker_failed(error, dying)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no second core, so no worker process")
def test_a_process_whose_worker_died_mid_send_still_ends() -> None:
    import multiprocessing

    # Python 3.11 and 3.12's executor leave the pipe to the dead worker open in this case, and the queue's
    # feeder thread blocked on it: the process hung at exit, for ever.
    child = multiprocessing.get_context("spawn").Process(target=_worker_dies_with_batches_in_the_pipe)
    child.start()
    child.join(timeout=60)
    try:
        assert child.exitcode == 0
    finally:
        child.kill()
        child.join()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no second core, so no worker process")
@pytest.mark.parametrize("stop", [True, False])
def test_a_process_that_started_the_worker_ends_only_once_it_stops_it(stop: bool) -> None:
    import multiprocessing
    import signal

    # A multiprocessing child waits on exit for its own children: the worker waits for work forever.
    context = multiprocessing.get_context("spawn")
    pids = context.Queue()
    child = context.Process(target=_start_worker, args=(stop, pids))
    child.start()
    workers = pids.get(timeout=60)
    child.join(timeout=60 if stop else 10)  # stopped: ends within seconds; not stopped: never
    try:
        assert child.is_alive() is not stop
    finally:
        for pid in workers:  # a worker left behind would outlive the test run
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.kill()
        child.join()
