"""Encryption at rest through the warehouse: ciphertext in the file, plaintext in memory."""

from __future__ import annotations

import base64
import datetime as dt
import os

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from cmdm_pipeline import warehouse as warehouse_module
from cmdm_pipeline.assets.master import write_golden
from cmdm_pipeline.errors import ProtectionError
from cmdm_pipeline.protect.keys.at_rest import open_warehouse, plaintext_personal_columns
from cmdm_pipeline.protect.keys.kek import DecryptionError
from cmdm_pipeline.protect.lookup import lookup_index, probe
from cmdm_pipeline.quality.checks import personal_data_encrypted_verdict
from cmdm_pipeline.warehouse import ENCRYPTED_COLUMNS, Warehouse

GOLDEN = pl.DataFrame({
    "master_id": ["m1", "m2", "m3"],
    "first_name": ["Ada", "Alan", None],
    "date_of_birth": [dt.date(1985, 12, 10), None, dt.date(1956, 12, 9)],
    "country": ["GB", "GB", "US"],
    "valid_from": [dt.datetime(2026, 1, 5, tzinfo=dt.UTC)] * 3,
})


def stored(config, table: str) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table} ORDER BY master_id").pl()


def test_personal_columns_are_ciphertext_in_the_file_and_plaintext_when_read(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    raw = stored(config, "golden_customers")
    assert raw.schema["first_name"] == pl.Binary and raw.schema["date_of_birth"] == pl.Binary
    assert raw["country"].to_list() == ["GB", "GB", "US"]  # not personal: plaintext
    assert raw["first_name"].null_count() == 1  # null stays null
    assert b"Ada" not in raw["first_name"][0]
    assert store.read("golden_customers").equals(GOLDEN)
    assert store.read("golden_customers", ["master_id", "date_of_birth"]).equals(GOLDEN.select("master_id", "date_of_birth"))
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        recorded = dict(con.sql(f"SELECT column_name, plaintext_type FROM {ENCRYPTED_COLUMNS}").fetchall())
    assert recorded == {"first_name": "String", "date_of_birth": "Date"}


def test_ciphertext_columns_are_declared_uncompressed(make_project) -> None:  # type: ignore[no-untyped-def]
    # Random bytes do not compress, and DuckDB's analysis of them cost seconds per million values.
    config = make_project()
    store = open_warehouse(config)
    write_golden(store, GOLDEN.drop("valid_from"), {}, store.at_rest.keys, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "r1")  # type: ignore[union-attr]
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        ddl = dict(con.sql("SELECT table_name, sql FROM duckdb_tables()").fetchall())
    for table in ("golden_customers", "golden_customers_history"):
        assert "first_name BLOB USING COMPRESSION Uncompressed" in ddl[table]
        assert "date_of_birth BLOB USING COMPRESSION Uncompressed" in ddl[table]
        assert "country VARCHAR," in ddl[table]  # plaintext text keeps DuckDB's choice


def test_columns_read_for_presence_only_are_not_decrypted(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    with duckdb.connect(str(config.warehouse_path)) as con:  # m1's first name moved onto m2: it no longer decrypts
        con.execute("UPDATE golden_customers SET first_name = (SELECT first_name FROM golden_customers WHERE master_id = 'm1') "
                    "WHERE master_id = 'm2'")
    with pytest.raises(DecryptionError, match="golden_customers.first_name of record m2"):
        store.read("golden_customers")
    read = store.read("golden_customers", presence_only=["first_name", "country"])
    assert read["first_name"].to_list() == [True, True, None]  # which rows hold one, nothing decrypted
    assert read["country"].to_list() == ["GB", "GB", "US"]  # not encrypted: as stored
    assert read["date_of_birth"].equals(GOLDEN["date_of_birth"])


def test_a_night_without_change_keeps_each_unchanged_ciphertext(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    before = stored(config, "golden_customers")
    store.replace({"golden_customers": GOLDEN.with_columns(pl.when(pl.col("master_id") == "m2").then(pl.lit("Alan M."))
                                                           .otherwise(pl.col("first_name")).alias("first_name"))})
    after = stored(config, "golden_customers")
    assert after["first_name"][0] == before["first_name"][0]  # m1 unchanged: same bytes
    assert after["first_name"][1] != before["first_name"][1]  # m2 changed: encrypted again
    assert store.read("golden_customers")["first_name"].to_list() == ["Ada", "Alan M.", None]


def test_a_read_of_some_columns_loads_only_those_and_what_decrypting_them_needs(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    loaded = []
    opened = Warehouse._opened
    monkeypatch.setattr(Warehouse, "_opened", lambda self, name, frame, *rest: loaded.append(frame.columns) or opened(self, name, frame, *rest))
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    with duckdb.connect(str(config.warehouse_path)) as con:  # a broken ciphertext in a column not asked for
        con.execute("UPDATE golden_customers SET date_of_birth = 'x'::BLOB WHERE master_id = 'm1'")
    # The record id (master id and version) is loaded to decrypt, and the column `where` tests, but neither is
    # returned; date_of_birth is not loaded at all.
    read = store.read("golden_customers", ["first_name"], where=pl.col("country") == "GB")
    assert read.equals(GOLDEN.filter(pl.col("country") == "GB").select("first_name"))
    assert loaded[-1] == ["master_id", "first_name", "country", "valid_from"]  # in the table's order
    with pytest.raises(DecryptionError, match="date_of_birth"):
        store.read("golden_customers", ["master_id", "date_of_birth"])


def test_a_table_written_in_parts_is_whole_and_reuses_unchanged_ciphertext(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    before = stored(config, "golden_customers")
    changed = GOLDEN.with_columns(pl.when(pl.col("master_id") == "m3").then(pl.lit("Grace")).otherwise("first_name")
                                  .alias("first_name"))
    seen = []

    def parts(read):  # type: ignore[no-untyped-def]
        seen.append(read.read("golden_customers", ["master_id"]).height)  # the reader works while the write is open
        batches = read.batches("golden_customers", 2)  # and so do batches, from a cursor, across the parts
        first = next(batches)
        yield {"golden_customers": changed.slice(0, 2)}
        seen.append(pl.concat([first, *batches]))
        yield {"golden_customers": changed.slice(2)}

    store.replace_in_parts(parts)
    after = stored(config, "golden_customers")
    assert seen[0] == 3
    assert seen[1].equals(GOLDEN)  # the table as committed before this write, decrypted, in its order
    assert after["first_name"][0] == before["first_name"][0]  # m1 unchanged: same bytes
    assert after["first_name"][2] is not None and before["first_name"][2] is None
    assert store.read("golden_customers").sort("master_id").equals(changed)


def test_a_large_table_is_sealed_and_written_part_by_part(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    monkeypatch.setattr(warehouse_module, "PART_ROWS", 2)
    sealed = []
    seal = store.at_rest.seal  # type: ignore[union-attr]
    monkeypatch.setattr(store.at_rest, "seal", lambda table, frame, previous=(): sealed.append(frame.height) or seal(table, frame, previous))
    store.replace({"golden_customers": GOLDEN})
    before = stored(config, "golden_customers")
    store.replace({"golden_customers": GOLDEN.with_columns(
        pl.when(pl.col("master_id") == "m2").then(pl.lit("Alan M.")).otherwise("first_name").alias("first_name"))})
    after = stored(config, "golden_customers")
    assert sealed == [2, 1, 2, 1]
    # m1 (first part) and m3 (second) unchanged: their bytes are kept; m2 changed: encrypted again.
    assert after["date_of_birth"][0] == before["date_of_birth"][0] and after["date_of_birth"][2] == before["date_of_birth"][2]
    assert after["first_name"][1] != before["first_name"][1]
    assert store.read("golden_customers")["first_name"].to_list() == ["Ada", "Alan M.", None]
    with pytest.raises(ProtectionError, match="record ids must be unique"):
        store.replace({"golden_customers": pl.concat([GOLDEN.slice(0, 2), GOLDEN.slice(0, 1)])})


def test_a_large_table_is_decrypted_part_by_part_and_a_repeated_record_refused(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    monkeypatch.setattr(warehouse_module, "READ_ROWS", 2)
    opened = []
    open_ = store.at_rest.open  # type: ignore[union-attr]
    monkeypatch.setattr(store.at_rest, "open", lambda table, frame, types: opened.append(frame.height) or open_(table, frame, types))
    assert store.read("golden_customers").equals(GOLDEN)
    assert store.read("golden_customers", ["first_name"], where=pl.col("country") == "US")["first_name"].to_list() == [None]
    assert opened == [2, 1, 0, 1]  # filtered before decrypting
    assert store.read("golden_customers", ["country"]).equals(GOLDEN.select("country"))  # nothing to decrypt
    with duckdb.connect(str(config.warehouse_path)) as con:  # m1's row twice: one part each
        con.execute("INSERT INTO golden_customers SELECT * FROM golden_customers WHERE master_id = 'm1'")
    with pytest.raises(ProtectionError, match="record ids must be unique"):
        store.read("golden_customers")


def test_clear_columns_read_beside_ciphertext_are_copied_out_of_duckdbs_batch() -> None:
    # DuckDB's Arrow batch is freed as a whole: a kept column that shared it would keep every ciphertext too.
    batch = pa.record_batch({
        "master_id": ["m1", "m2"], "first_name": [b"\x01one", b"\x01two"], "valid_from": pa.array([1, 2], pa.int64()),
    })

    def buffers(of: pa.RecordBatch, column: str) -> set[int]:
        return {buffer.address for buffer in of.column(column).buffers() if buffer is not None}

    detached = warehouse_module._detached(batch, {"first_name": "String"})
    assert detached.equals(batch)
    assert not buffers(detached, "master_id") & buffers(batch, "master_id")
    assert not buffers(detached, "valid_from") & buffers(batch, "valid_from")
    assert buffers(detached, "first_name") == buffers(batch, "first_name")  # decrypted into new columns anyway
    assert warehouse_module._detached(batch, {}) is batch  # no ciphertext to keep alive: nothing copied


def test_parts_holding_one_record_twice_write_nothing(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    with pytest.raises(ProtectionError, match="record ids must be unique"):
        store.replace_in_parts(lambda read: iter([{"golden_customers": GOLDEN}, {"golden_customers": GOLDEN.slice(0, 1)}]))
    with pytest.raises(ValueError, match="same columns"):
        store.replace_in_parts(lambda read: iter([{"golden_customers": GOLDEN}, {"golden_customers": GOLDEN.drop("country")}]))
    assert store.read("golden_customers").equals(GOLDEN)  # the previous table is whole


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    with duckdb.connect(str(config.warehouse_path)) as con:
        con.execute("UPDATE golden_customers SET first_name = (SELECT first_name FROM golden_customers "
                    "WHERE master_id = 'm1') WHERE master_id = 'm2'")
    with pytest.raises(DecryptionError, match=r"golden_customers\.first_name of record m2") as failure:
        store.read("golden_customers")
    assert "Ada" not in str(failure.value)


def test_reading_ciphertext_without_a_key_says_so(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    open_warehouse(config).replace({"golden_customers": GOLDEN})
    with pytest.raises(ProtectionError, match="holds encrypted columns .* no key was given"):
        Warehouse(config.warehouse_path).read("golden_customers")


def test_a_wrong_key_is_refused_before_anything_is_written(make_project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The store's place set, so it does not move with the key mode (a moved store is refused as missing).
    config = make_project(protection={"keystore": "warehouse/keys/keystore.duckdb"})
    open_warehouse(config).replace({"golden_customers": GOLDEN})
    before = stored(config, "golden_customers")
    monkeypatch.setenv("CMDM_KEK", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(ProtectionError, match="not loaded"):
        open_warehouse(config).replace({"golden_customers": GOLDEN.head(1)})
    assert stored(config, "golden_customers").equals(before)
    with pytest.raises(ProtectionError, match="not loaded"):
        open_warehouse(config).read("golden_customers")


def test_encryption_off_stores_plaintext(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(protection={"encrypt": False})
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    assert stored(config, "golden_customers").drop("valid_from").equals(GOLDEN.drop("valid_from"))
    assert ENCRYPTED_COLUMNS not in store.tables()


def test_lookup_finds_a_customer_by_any_spelling_of_an_email_or_phone(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    keys = open_warehouse(config).at_rest.keys  # type: ignore[union-attr]
    records = pl.DataFrame({
        "source_system": ["crm", "shop", "crm"], "source_record_id": ["1", "9", "2"], "master_id": ["m1", "m1", "m2"],
        "email": ["ada@example.org", "ada@example.org", None], "phone": [None, "+442079460018", "+441614960000"],
        "country": ["GB", "GB", "GB"],
    })
    index = lookup_index(records, config.customer_schema, keys)
    assert index.height == 4 and set(index["kind"]) == {"email", "phone"}
    found = index.filter(pl.col("blind_index") == probe(" Ada@Example.ORG ", "email", keys))
    assert set(found["master_id"]) == {"m1"} and found.height == 2
    by_phone = index.filter(pl.col("blind_index") == probe("0161 496 0000", "phone", keys, country="GB"))
    assert by_phone["master_id"].to_list() == ["m2"]
    assert index.filter(pl.col("blind_index") == probe("nobody@example.org", "email", keys)).is_empty()


def test_the_check_names_personal_columns_stored_in_plaintext(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    store.replace({"golden_customers": GOLDEN})
    assert plaintext_personal_columns(store.at_rest, *store.column_types()) == []  # type: ignore[arg-type]
    # A table written around the protection (by hand, or by an older version) is caught.
    Warehouse(config.warehouse_path).replace({"validated_customers": pl.DataFrame(
        {"source_system": ["crm"], "source_record_id": ["1"], "email": ["ada@example.org"], "country": ["GB"]})})
    found = plaintext_personal_columns(store.at_rest, *store.column_types())  # type: ignore[arg-type]
    assert found == ["validated_customers.email"]
    verdict = personal_data_encrypted_verdict(found, 2, encrypt=True)
    assert not verdict.passed and not verdict.warn_only and "validated_customers.email" in verdict.description
    off = personal_data_encrypted_verdict(found, 2, encrypt=False)
    assert not off.passed and off.warn_only


def test_a_golden_version_is_encrypted_once_for_both_golden_and_history(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    plain = GOLDEN.drop("valid_from")

    def night(golden: pl.DataFrame, at: dt.datetime) -> None:
        write_golden(store, golden, {}, store.at_rest.keys, at, "run")  # type: ignore[union-attr]

    def history_rows() -> pl.DataFrame:
        with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
            return con.sql("SELECT * FROM golden_customers_history ORDER BY master_id, valid_from").pl()

    night(plain, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    golden, history = stored(config, "golden_customers"), history_rows()
    assert history["first_name"].to_list() == golden["first_name"].to_list()  # the same bytes: encrypted once

    renamed = plain.with_columns(pl.when(pl.col("master_id") == "m2").then(pl.lit("Alan M.")).otherwise("first_name").alias("first_name"))
    night(renamed, dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    after, history = stored(config, "golden_customers"), history_rows()
    assert after["first_name"][0] == golden["first_name"][0]  # m1 unchanged: its one version kept
    m2 = history.filter(pl.col("master_id") == "m2")
    assert m2["first_name"].to_list() == [golden["first_name"][1], after["first_name"][1]]  # old version kept, new shared
    assert store.read("golden_customers_history").filter(pl.col("master_id") == "m2")["first_name"].to_list() == ["Alan", "Alan M."]
    assert store.read("golden_customers")["first_name"].to_list() == ["Ada", "Alan M.", None]

    # A night without change keeps every ciphertext: the version digest tells, no other digest is stored.
    night(renamed, dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    assert stored(config, "golden_customers")["first_name"].to_list() == after["first_name"].to_list()
    assert "pii_digest" not in stored(config, "golden_customers").columns

    # A warehouse written before versions had digests: its current versions are digested once, from their
    # decrypted values, and an unchanged master keeps its version (its values are encrypted once more).
    with duckdb.connect(str(config.warehouse_path)) as con:
        con.execute("ALTER TABLE golden_customers DROP COLUMN version_digest")
        con.execute("ALTER TABLE golden_customers_history DROP COLUMN version_digest")
    versions = history_rows().height
    night(renamed, dt.datetime(2026, 1, 4, tzinfo=dt.UTC))
    assert history_rows().height == versions
    assert store.read("golden_customers")["first_name"].to_list() == ["Ada", "Alan M.", None]
    assert store.read("golden_customers_history")["first_name"].drop_nulls().sort().to_list() == ["Ada", "Alan", "Alan M."]

    # The current version's ciphertext copied over the old version does not decrypt there.
    with duckdb.connect(str(config.warehouse_path)) as con:
        con.execute("UPDATE golden_customers_history SET first_name = (SELECT first_name FROM golden_customers "
                    "WHERE master_id = 'm2') WHERE master_id = 'm2' AND valid_to IS NOT NULL")
    with pytest.raises(DecryptionError, match=r"golden_customers_history\.first_name of record m2\|2026-01-01"):
        store.read("golden_customers_history")


def test_a_history_written_in_plaintext_is_sealed_once_encryption_is_switched_on(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    encrypted = open_warehouse(config)
    keys = encrypted.at_rest.keys  # type: ignore[union-attr]
    plain = Warehouse(config.warehouse_path)  # protection.encrypt: false wrote these nights
    golden = GOLDEN.drop("valid_from")
    write_golden(plain, golden, {}, keys, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "r1")
    write_golden(plain, golden.with_columns(pl.lit("Ada L.").alias("first_name")), {}, keys,
                 dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "r2")
    write_golden(encrypted, golden.with_columns(pl.lit("Ada L.").alias("first_name")), {}, keys,
                 dt.datetime(2026, 1, 3, tzinfo=dt.UTC), "r3")
    assert plaintext_personal_columns(encrypted.at_rest, *encrypted.column_types()) == []  # type: ignore[arg-type]
    history = encrypted.read("golden_customers_history").sort("master_id", "valid_from")
    assert history.height == 6  # nothing changed on the third night: no version added
    assert history["first_name"].to_list() == ["Ada", "Ada L.", "Alan", "Ada L.", None, "Ada L."]
    raw = stored(config, "golden_customers_history")
    assert raw.schema["first_name"] == pl.Binary and b"Ada" not in b"".join(raw["first_name"].drop_nulls())


def test_an_attribute_dropped_or_retyped_keeps_its_old_versions_readable(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    store = open_warehouse(config)
    keys = store.at_rest.keys  # type: ignore[union-attr]
    golden = GOLDEN.drop("valid_from")
    write_golden(store, golden, {}, keys, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "r1")
    # date_of_birth becomes text, first_name leaves the schema.
    later = golden.drop("first_name").with_columns(pl.lit("unknown").alias("date_of_birth"))
    write_golden(store, later, {}, keys, dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "r2")
    history = store.read("golden_customers_history").sort("master_id", "valid_from")
    assert history["first_name"].to_list() == ["Ada", None, "Alan", None, None, None]
    assert history["date_of_birth"].to_list() == ["1985-12-10", "unknown", None, "unknown", "1956-12-09", "unknown"]
    assert store.read("golden_customers")["date_of_birth"].to_list() == ["unknown"] * 3
