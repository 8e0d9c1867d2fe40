"""Column encryption, incremental re-encryption and blind indexes."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.keys import aes_worker, crypto, sharing
from cmdm_pipeline.protect.keys.blind_index import blind_index, normalise
from cmdm_pipeline.protect.keys.crypto import (
    OVERHEAD,
    decrypt_column,
    decrypt_frame,
    encrypt_changed,
    encrypt_column,
    encrypt_frame,
)
from cmdm_pipeline.protect.keys.kek import DecryptionError, KeyMissingError, init_key_file, read_key_file
from cmdm_pipeline.protect.keys.keystore import KeyStore, master_owner, record_owner

TABLE = "golden_customers"
PII = ["first_name", "email", "date_of_birth"]
GOLDEN = pl.DataFrame(
    {
        "master_id": ["M1", "M2", "M3", "M4"],
        "first_name": ["Ada", "Grace", "Zoë", ""],
        "email": ["ada@example.org", None, "zoe@example.org", "x@example.org"],
        "date_of_birth": [dt.date(1815, 12, 10), dt.date(1906, 12, 9), None, None],
        "country": ["GB", "US", "FR", "DE"],
    }
)
DTYPES = {"date_of_birth": pl.Date()}


def _store(folder: Path) -> KeyStore:
    key_file = folder / "keys" / "dev.kek.json"
    init_key_file(key_file)
    return KeyStore(folder / "keys" / "keystore.duckdb", read_key_file(key_file))


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return _store(tmp_path)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return _store(tmp_path_factory.mktemp("keys"))


def _seal(store: KeyStore, frame: pl.DataFrame = GOLDEN) -> pl.DataFrame:
    return encrypt_frame(frame, PII, TABLE, master_owner(), "master_id", store)


def _open(store: KeyStore, frame: pl.DataFrame, table: str = TABLE) -> pl.DataFrame:
    return decrypt_frame(frame, PII, table, "master_id", store, DTYPES)


# --- round trips ---------------------------------------------------------------------------------------


def test_round_trip_keeps_nulls_types_and_other_columns(store: KeyStore) -> None:
    sealed = _seal(store)
    assert [sealed[c].dtype for c in PII] == [pl.Binary] * 3 and sealed["country"].equals(GOLDEN["country"])
    assert [sealed[c].null_count() for c in PII] == [GOLDEN[c].null_count() for c in PII]
    assert sealed["email"][0][0] == 1 and len(sealed["email"][0]) == OVERHEAD + len(b"ada@example.org")
    assert _open(store, sealed).equals(GOLDEN)


def test_the_same_value_never_encrypts_the_same_way(store: KeyStore) -> None:
    twice = pl.concat([GOLDEN, GOLDEN.with_columns(pl.col("master_id") + "b")])
    twice = twice.with_columns(pl.lit("M1").alias("owner"))
    sealed = encrypt_frame(twice, ["email"], TABLE, master_owner("owner"), "master_id", store)
    assert sealed["email"].drop_nulls().n_unique() == 6  # fresh nonce per value, even under one key


def test_column_functions_round_trip(store: KeyStore) -> None:
    owners = GOLDEN.select(record_owner(pl.lit("crm"), "master_id")).to_series()
    sealed = encrypt_column(GOLDEN["date_of_birth"], owners, "raw_crm", "DOB", GOLDEN["master_id"], store)
    assert sealed.name == "date_of_birth" and sealed.dtype == pl.Binary
    opened = decrypt_column(sealed, "raw_crm", "DOB", GOLDEN["master_id"], store, dtype=pl.Date())
    assert opened.equals(GOLDEN["date_of_birth"])


def test_batches_sharing_keys(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aes_worker, "CHUNK_VALUES", 3)  # owners straddle batch boundaries
    frame = pl.DataFrame({"record": [f"r{i}" for i in range(10)], "email": [f"{i}@example.org" for i in range(10)],
                          "note": [None, "x", None, "é", "", None, "y", "z", None, "w"],
                          "owner": ["a", "b", "a", "c", "a", "b", "d", "d", "d", "a"]})
    sealed = encrypt_frame(frame, ["email", "note"], "t", "owner", "record", store)
    assert decrypt_frame(sealed, ["email", "note"], "t", "record", store).equals(frame)
    emails = sealed["email"].to_list()
    emails[8], emails[9] = emails[9], emails[8]  # in a later batch
    with pytest.raises(DecryptionError, match="t.email of record r8: the ciphertext was not made"):
        decrypt_frame(sealed.with_columns(pl.Series("email", emails)), ["email", "note"], "t", "record", store)


def test_a_pass_is_whole_duckdb_row_groups(tmp_path: Path) -> None:
    # A pass ending mid row group costs a merge when DuckDB checkpoints: the pass size assumes DuckDB's size.
    con = duckdb.connect(str(tmp_path / "t.duckdb"))
    con.execute(f"CREATE TABLE t AS SELECT range AS i FROM range({crypto.ROWS_PER_PASS + 5})")
    sizes = con.sql("SELECT row_group_id, max(count) FROM pragma_storage_info('t') GROUP BY 1 ORDER BY 1").fetchall()
    assert [n for _, n in sizes] == [crypto.DUCKDB_ROW_GROUP] * (crypto.ROWS_PER_PASS // crypto.DUCKDB_ROW_GROUP) + [5]
    assert crypto.ROWS_PER_PASS % crypto.DUCKDB_ROW_GROUP == 0


def test_large_tables_go_in_passes_of_rows(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "ROWS_PER_PASS", 3)  # 10 rows: passes of 3, 3, 3 and 1
    frame = pl.DataFrame({"record": [f"r{i}" for i in range(10)], "email": [f"{i}@example.org" for i in range(10)],
                          "owner": ["a", "b", "a", "c", "a", "b", "d", "d", "d", "a"]})
    first = encrypt_changed(frame, None, ["email"], "t", "owner", "record", store)
    assert (first.encrypted, first.reused) == (10, 0) and first.frame["record"].equals(frame["record"])
    assert decrypt_frame(first.frame, ["email"], "t", "record", store).drop("pii_digest").equals(frame)
    changed = frame.with_columns(pl.when(pl.col("record") == "r7").then(pl.lit("new@example.org")).otherwise("email").alias("email"))
    night = encrypt_changed(changed, first.frame, ["email"], "t", "owner", "record", store)
    assert (night.encrypted, night.reused) == (1, 9)
    emails = first.frame["email"].to_list()
    emails[7], emails[8] = emails[8], emails[7]  # both in the third pass
    with pytest.raises(DecryptionError, match="t.email of record r7: the ciphertext was not made"):
        decrypt_frame(first.frame.with_columns(pl.Series("email", emails)), ["email"], "t", "record", store)
    # Record ids are unique over the whole table, not only within a pass.
    with pytest.raises(ProtectionError, match="record ids must be unique"):
        encrypt_frame(frame.with_columns(pl.when(pl.col("record") == "r9").then(pl.lit("r0")).otherwise("record").alias("record")),
                      ["email"], "t", "owner", "record", store)
    # A destroyed key in a later pass: named, or its values null while the other passes' stay readable.
    store.destroy(["d"])
    with pytest.raises(DecryptionError, match="t.email of record r6: its data key .* was destroyed"):
        decrypt_frame(first.frame, ["email"], "t", "record", store)
    opened = decrypt_frame(first.frame, ["email"], "t", "record", store, destroyed="null")
    assert opened["email"].to_list() == [None if o == "d" else e for o, e in zip(frame["owner"], frame["email"], strict=True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=12))
def test_any_text_round_trips(shared_store: KeyStore, values: list[str | None]) -> None:
    ids = pl.Series([f"R{i}" for i in range(len(values))])
    column = pl.Series("comment", values, dtype=pl.String)
    owners = pl.Series([f"record/survey/{i % 3}" for i in range(len(values))])
    sealed = encrypt_column(column, owners, "validated_customers", "nps_comment", ids, shared_store)
    assert decrypt_column(sealed, "validated_customers", "nps_comment", ids, shared_store).to_list() == values


# --- moved, altered or foreign ciphertexts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("move", "where"),
    [
        (lambda f: f.with_columns(pl.col("email").reverse()), "golden_customers.email of record M1"),
        (lambda f: f.with_columns(pl.col("email").alias("first_name")), "golden_customers.first_name of record M1"),
        (lambda f: f.with_columns(pl.col("email").shift(1)), "golden_customers.email of record M2"),
    ],
    ids=["swapped between rows", "moved to another column", "shifted one row"],
)
def test_a_moved_ciphertext_fails_naming_where_not_what(store: KeyStore, move, where: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DecryptionError) as caught:
        _open(store, move(_seal(store)))
    message = str(caught.value)
    assert message.startswith(f"cannot decrypt {where}: ") and "moved or altered" in message
    assert not [v for v in GOLDEN["email"].drop_nulls() if v in message]


def test_a_ciphertext_moved_to_another_table_fails(store: KeyStore) -> None:
    with pytest.raises(DecryptionError, match="cannot decrypt golden_customers_history.first_name of record M1"):
        _open(store, _seal(store), table="golden_customers_history")


def test_an_altered_byte_fails(store: KeyStore) -> None:
    sealed = _seal(store)
    blob = bytearray(sealed["email"][2])
    blob[-1] ^= 1
    altered = sealed.with_columns(pl.Series("email", [sealed["email"][0], None, bytes(blob), sealed["email"][3]]))
    with pytest.raises(DecryptionError, match="golden_customers.email of record M3"):
        _open(store, altered)


def test_plaintext_or_another_format_is_not_taken_for_a_ciphertext(store: KeyStore) -> None:
    with pytest.raises(DecryptionError, match="golden_customers.first_name is String, not encrypted"):
        _open(store, GOLDEN)
    fake = _seal(store).with_columns(pl.Series("email", [b"\x02" + b"x" * 60, None, None, None]))
    with pytest.raises(DecryptionError, match="email of record M1 is not a cmdm ciphertext"):
        _open(store, fake)


def test_a_ciphertext_from_another_key_store_names_the_unknown_key(store: KeyStore, tmp_path: Path) -> None:
    other = _store(tmp_path / "other")
    with pytest.raises(KeyMissingError, match=r"data key \w{32} is not in the key store .*other"):
        _open(other, _seal(store))


def test_record_ids_must_be_unique(store: KeyStore) -> None:
    with pytest.raises(ProtectionError, match=r"record ids must be unique \(1 repeated\)"):
        _seal(store, GOLDEN.with_columns(pl.lit("M1").alias("master_id")))


def test_names_bound_into_the_associated_data_hold_no_separator(store: KeyStore) -> None:
    with pytest.raises(ProtectionError, match="may not be empty or hold '|'"):
        encrypt_frame(GOLDEN, ["email"], "golden|customers", master_owner(), "master_id", store)


# --- nights without change --------------------------------------------------------------------------


def test_unchanged_rows_keep_their_ciphertext(store: KeyStore) -> None:
    first = encrypt_changed(GOLDEN, None, PII, TABLE, master_owner(), "master_id", store)
    assert (first.encrypted, first.reused) == (4, 0)
    again = encrypt_changed(GOLDEN, first.frame, PII, TABLE, master_owner(), "master_id", store)
    assert (again.encrypted, again.reused) == (0, 4) and again.frame.equals(first.frame)  # byte-equal
    changed = GOLDEN.with_columns(
        pl.when(pl.col("master_id") == "M3").then(pl.lit("zoe@example.net")).otherwise("email").alias("email")
    ).reverse()  # row order does not matter
    night = encrypt_changed(changed, first.frame, PII, TABLE, master_owner(), "master_id", store)
    assert (night.encrypted, night.reused) == (1, 3)
    by_id = {row["master_id"]: row for row in night.frame.iter_rows(named=True)}
    before = {row["master_id"]: row for row in first.frame.iter_rows(named=True)}
    assert [m for m in by_id if by_id[m]["email"] != before[m]["email"]] == ["M3"]
    assert night.frame["master_id"].to_list() == changed["master_id"].to_list()
    assert _open(store, night.frame.drop("pii_digest")).equals(changed)


def test_a_record_moving_to_another_owner_is_encrypted_again(store: KeyStore) -> None:
    rows = GOLDEN.with_columns(pl.col("master_id").alias("record"), pl.col("master_id").alias("owner"))
    first = encrypt_changed(rows, None, PII, "t", master_owner("owner"), "record", store)
    merged = rows.with_columns(pl.when(pl.col("owner") == "M2").then(pl.lit("M1")).otherwise("owner").alias("owner"))
    night = encrypt_changed(merged, first.frame, PII, "t", master_owner("owner"), "record", store)
    assert (night.encrypted, night.reused) == (1, 3)
    m2 = night.frame.filter(pl.col("record") == "M2")["first_name"][0]
    m1 = night.frame.filter(pl.col("record") == "M1")["first_name"][0]
    assert m2[1:17] == m1[1:17]  # now under M1's data key


def test_a_digest_the_rows_carry_is_compared_as_given(store: KeyStore) -> None:
    # As the golden records' version digest: no second digest is made or stored.
    rows = GOLDEN.with_columns(pl.Series("version", [b"1", b"2", b"3", b"4"]))
    first = encrypt_changed(rows, None, PII, TABLE, master_owner(), "master_id", store, "version", given=True)
    assert first.frame.columns == rows.columns and first.frame["version"].equals(rows["version"])
    # M2's values changed but its given digest did not: the digest is what is trusted.
    night = rows.with_columns(
        pl.when(pl.col("master_id") == "M3").then(pl.lit(b"3b")).otherwise("version").alias("version"),
        pl.when(pl.col("master_id") == "M2").then(pl.lit("Anne")).otherwise("first_name").alias("first_name"),
    )
    again = encrypt_changed(night, first.frame, PII, TABLE, master_owner(), "master_id", store, "version", given=True)
    assert (again.encrypted, again.reused) == (1, 3)
    assert (again.frame["first_name"] == first.frame["first_name"]).to_list() == [True, True, False, True]
    with pytest.raises(ProtectionError, match="has no version column"):
        encrypt_changed(GOLDEN, None, PII, TABLE, master_owner(), "master_id", store, "version", given=True)


def test_plaintext_stored_before_encryption_is_never_taken_for_ciphertext(store: KeyStore) -> None:
    rows = GOLDEN.with_columns(pl.Series("version", [b"1", b"2", b"3", b"4"]))
    night = encrypt_changed(rows, rows, PII, TABLE, master_owner(), "master_id", store, "version", given=True)
    assert (night.encrypted, night.reused) == (4, 0)
    assert _open(store, night.frame.drop("version")).equals(GOLDEN)


def test_digests_are_keyed(store: KeyStore, tmp_path: Path) -> None:
    mine = encrypt_changed(GOLDEN, None, PII, TABLE, master_owner(), "master_id", store).frame["pii_digest"]
    theirs = encrypt_changed(GOLDEN, None, PII, TABLE, master_owner(), "master_id", _store(tmp_path / "b"))
    assert mine.n_unique() == 4 and not (mine == theirs.frame["pii_digest"]).any()


# --- blind indexes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "same", "different", "country"),
    [
        ("email", [" Ada@Example.org ", "ada@example.org", "ADA@EXAMPLE.ORG"], "ada@example.com", None),
        ("phone", ["+44 20 7946 0018", "020 7946 0018", "+442079460018"], "+442079460019", "GB"),
        ("national_id", ["ab 12-34-56 c", "AB123456C", "AB.123456/C"], "AB123456D", None),
    ],
)
def test_blind_index_is_equal_for_values_that_normalise_equal(
    store: KeyStore, kind: str, same: list[str], different: str, country: str | None
) -> None:
    index = blind_index(pl.Series([*same, different, None]), kind, store, country=country)  # type: ignore[arg-type]
    assert index.dtype == pl.Binary and len(index[0]) == 16
    assert index[: len(same)].n_unique() == 1 and index[len(same)] != index[0] and index[-1] is None


def test_blind_indexes_differ_by_kind_and_by_key(store: KeyStore, tmp_path: Path) -> None:
    text = pl.Series(["AB123456C"])
    assert blind_index(text, "email", store)[0] != blind_index(text, "national_id", store)[0]
    assert blind_index(text, "email", store)[0] != blind_index(text, "email", _store(tmp_path / "b"))[0]


def test_blind_indexes_survive_rotation(store: KeyStore) -> None:
    from cmdm_pipeline.protect.keys.kek import new_kek_id, new_key

    emails = pl.Series(["ada@example.org", "grace@example.org"])
    before = blind_index(emails, "email", store)
    assert store.keyring is not None
    rotated = store.keyring.with_kek(new_kek_id(), new_key(), active=True)
    store.rewrap(rotated)
    assert blind_index(emails, "email", KeyStore(store.path, rotated)).equals(before)


def test_unreadable_phones_and_empty_ids_get_no_index() -> None:
    assert normalise(pl.Series(["12", None]), "phone", "GB").to_list() == [None, None]
    assert normalise(pl.Series([" - ", "x-1"]), "national_id").to_list() == [None, "X1"]


def test_the_worker_builds_the_same_associated_data_as_this_process() -> None:
    frame = pl.DataFrame({"a": [b"x", None, b"y", b"z", None], "b": [b"1", b"2", None, b"3", b"4"]})
    flat = crypto._Flat.of(frame)
    heads = crypto._aad_heads("golden_customers", ["a", "b"], {"b": "email"})
    ids = pl.Series(["M1", "M2", "Mé|3", "M4", "M5"])
    for lo, hi in [(0, 7), (2, 5), (3, 4), (5, 7)]:  # slices that start and end inside a row
        assert aes_worker.associated_data(*flat.aad_parts(heads, ids, lo, hi)).to_pylist() == flat.aads(heads, ids, lo, hi)


def test_each_pass_starts_before_the_one_ahead_finishes_and_a_failure_takes_back_queued_batches() -> None:
    events: list[str] = []
    works: list[Work] = []

    @dataclass
    class Work:
        part: pl.DataFrame
        batches: list[sharing.Batch]

    def start(part: pl.DataFrame) -> Work:
        events.append(f"start {part['i'][0]}")
        if part["i"][0] == 2:
            raise RuntimeError("the third pass failed")
        works.append(Work(part, [sharing.Batch(0, 1, Future())]))
        return works[-1]

    def finish(work: Work) -> pl.DataFrame:
        events.append(f"finish {work.part['i'][0]}")
        return work.part

    parts = [pl.DataFrame({"i": [k]}) for k in range(4)]
    done, _ = crypto._overlapped(parts[:2], start, finish)
    assert done["i"].to_list() == [0, 1] and events == ["start 0", "start 1", "finish 0", "finish 1"]
    events.clear()
    works.clear()
    with pytest.raises(RuntimeError, match="third pass"):
        crypto._overlapped(parts, start, finish)
    assert events == ["start 0", "start 1", "finish 0", "start 2"]
    # The finished pass's batches were gathered; the started one's, queued for the worker, are taken back.
    assert [w.batches[0].queued.cancelled() for w in works] == [False, True]  # type: ignore[union-attr]


def test_row_digests_made_in_chunks_are_those_made_at_once(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from cmdm_pipeline.protect.keys import blind_index

    frame = pl.DataFrame({"a": ["x", None, "y", "x", "z"], "b": [1, 2, None, 1, 5]})
    whole = blind_index.row_digests(frame, ["a", "b"], "t", store)
    monkeypatch.setattr(blind_index, "DIGEST_ROWS", 2)
    assert blind_index.row_digests(frame, ["a", "b"], "t", store).equals(whole)
    assert whole[0] == whole[3] and whole.n_unique() == 4  # equal rows, equal digests
    assert blind_index.row_digests(frame.clear(), ["a", "b"], "t", store).dtype == pl.Binary
