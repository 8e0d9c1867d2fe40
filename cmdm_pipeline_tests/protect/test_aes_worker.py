"""Large encrypt and decrypt calls share their values with a worker process: same results, same errors."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.protect import aes_worker, crypto
from cmdm_pipeline.protect.crypto import decrypt_frame, encrypt_frame
from cmdm_pipeline.protect.keys import DecryptionError, init_key_file, read_key_file
from cmdm_pipeline.protect.keystore import KeyStore, master_owner

TABLE, COLUMNS = "golden_customers", ["first_name", "email"]
ROWS = 500  # 1,000 values, a row's two values together: batches of 50, the worker takes the first 400 (rows 0-199)
FRAME = pl.DataFrame({
    "master_id": [f"M{i:04d}" for i in range(ROWS)],
    "first_name": [f"name {i}" for i in range(ROWS)],
    "email": [f"person{i}@example.org" for i in range(ROWS)],
})


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyStore:
    monkeypatch.setattr(crypto, "CHUNK_VALUES", 50)
    monkeypatch.setattr(aes_worker, "WORKER_MIN_VALUES", 100)
    key_file = tmp_path / "keys" / "dev.kek.json"
    init_key_file(key_file)
    return KeyStore(tmp_path / "keys" / "keystore.duckdb", read_key_file(key_file))


def test_the_worker_takes_a_share_and_the_result_is_the_same(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    used = []
    submit = aes_worker.submit
    monkeypatch.setattr(aes_worker, "submit", lambda *args: used.append(len(args[-1])) or submit(*args))
    sealed = encrypt_frame(FRAME, COLUMNS, TABLE, master_owner(), "master_id", store)
    assert decrypt_frame(sealed, COLUMNS, TABLE, "master_id", store).equals(FRAME)
    assert used == [400, 400]  # the worker encrypted, then decrypted, the first 400 of 1,000 values


@pytest.mark.parametrize("row", [10, 400], ids=["in the worker's share", "in this process's share"])
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
