"""Benchmark of encryption, blind indexes and key rotation: ``python -m cmdm_pipeline.protect.keys.bench``.

Prints seconds per operation on synthetic golden records (one master, hence one data key, per
record; the PII columns of the shipped ``cmdm.yaml`` filled at realistic shares). Keys live in a
temporary folder, deleted afterwards. Not a test: run it on purpose (about a minute at 1M rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from cmdm_pipeline.protect.keys.blind_index import blind_index, version_digests
from cmdm_pipeline.protect.keys.crypto import (
    decrypt_column,
    decrypt_frame,
    encrypt_changed,
    encrypt_column,
    encrypt_frame,
)
from cmdm_pipeline.protect.keys.kek import init_key_file, new_kek_id, new_key, read_key_file
from cmdm_pipeline.protect.keys.keystore import KeyStore, master_owner
from cmdm_pipeline.stages.history import VERSION_DIGEST

T = TypeVar("T")

#: Share of golden records holding each PII attribute of the shipped schema, and a typical length.
PII_SHARES: dict[str, tuple[float, int]] = {
    "first_name": (0.97, 7), "middle_name": (0.10, 6), "last_name": (0.98, 8), "date_of_birth": (0.60, 10),
    "gender": (0.45, 5), "email": (0.85, 24), "phone": (0.55, 13), "mobile_phone": (0.50, 13),
    "address_line_1": (0.75, 22), "address_line_2": (0.12, 10), "postcode": (0.80, 7), "national_id": (0.05, 11),
    "nps_comment": (0.08, 60),
}


def golden_records(rows: int, seed: int) -> pl.DataFrame:
    """Synthetic golden records: a master id and the PII columns, nulls at the shares above."""
    frame = pl.DataFrame({"master_id": pl.int_range(rows, eager=True).cast(pl.String).str.zfill(9)})
    frame = frame.with_columns(("M" + pl.col("master_id")).alias("master_id"))
    columns = []
    for i, (name, (share, length)) in enumerate(PII_SHARES.items()):
        noise = pl.int_range(rows).hash(seed + i)
        text = pl.concat_str(pl.lit(name[:3]), noise.cast(pl.String)).str.slice(0, length).str.pad_end(length, "x")
        if name == "date_of_birth":
            text = (pl.lit(dt.date(1940, 1, 1)) + pl.duration(days=noise % 25_000)).cast(pl.String)
        elif name in ("phone", "mobile_phone"):
            text = pl.concat_str(pl.lit("+44"), (noise % 10**10).cast(pl.String).str.zfill(10))
        elif name == "email":
            text = pl.concat_str(pl.lit("user"), (noise % 10**9).cast(pl.String), pl.lit("@example.org"))
        keep = (noise % 1000) < int(share * 1000)
        columns.append(pl.when(keep).then(text).alias(name))
    return frame.with_columns(columns)


SECONDS: dict[str, float] = {}


def timed(label: str, action: Callable[[], T]) -> T:
    """Run ``action``, print its wall time and this process's CPU time (other work on the machine shows as
    wall > CPU; DuckDB's threads as CPU > wall)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = action()
    SECONDS[label] = time.perf_counter() - started
    print(f"  {label:<62}{SECONDS[label]:>7.2f} s {time.process_time() - cpu:>7.2f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cmdm_pipeline.protect.keys.bench", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="golden records (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows, columns = args.rows, list(PII_SHARES)
    golden = golden_records(rows, args.seed)
    values = sum(golden[c].len() - golden[c].null_count() for c in columns)
    print(f"{rows:,} golden records, {len(columns)} PII columns, {values:,} non-null values "
          f"({values / rows:.1f} per record)\n{'':<64}{'wall':>7} {'CPU':>9}")
    with tempfile.TemporaryDirectory() as folder:
        key_file = Path(folder) / "keys" / "dev.kek.json"
        init_key_file(key_file)
        store = KeyStore(Path(folder) / "keys" / "keystore.duckdb", read_key_file(key_file))
        owners = golden.select(master_owner()).to_series()
        emails = golden["email"].fill_null("nobody@example.org")

        print("data keys (one per master):")
        timed(f"create {rows:,} data keys (first run)", lambda: store.keys_for_owners(owners))
        timed(f"resolve {rows:,} existing data keys (fetch + unwrap)", lambda: store.keys_for_owners(owners))

        print("one column, 1 value per record:")
        sealed = timed(f"encrypt_column {rows:,} values", lambda: encrypt_column(
            emails, owners, "golden_customers", "email", golden["master_id"], store))
        timed(f"decrypt_column {rows:,} values", lambda: decrypt_column(
            sealed, "golden_customers", "email", golden["master_id"], store))

        print(f"golden records, {len(columns)} PII columns, {values:,} values (keys exist):")
        encrypted = timed("encrypt_frame", lambda: encrypt_frame(
            golden, columns, "golden_customers", master_owner(), "master_id", store))
        timed("decrypt_frame", lambda: decrypt_frame(encrypted, columns, "golden_customers", "master_id", store))
        timed("encrypt_changed, first night, digests made here (record tables)", lambda: encrypt_changed(
            golden, None, columns, "golden_customers", master_owner(), "master_id", store))
        # The golden records carry their version digest (made for the history, encryption or not).
        golden = golden.with_columns(version_digests(golden, columns, store))
        seal = functools.partial(encrypt_changed, columns=columns, table="golden_customers", owner=master_owner(),
                                 record_id="master_id", keys=store, digest_column=VERSION_DIGEST, given=True)
        first = timed("encrypt_changed, first night (golden: version digest given)", lambda: seal(golden, None))
        unchanged = timed("encrypt_changed, a night with no change", lambda: seal(golden, first.frame))
        assert unchanged.reused == rows
        moved = pl.int_range(rows) % 100 == 0
        changed = golden.with_columns(pl.when(moved).then(pl.lit("moved@example.org")).otherwise(pl.col("email")).alias("email"),
                                      pl.when(moved).then(pl.col(VERSION_DIGEST).bin.slice(1)).otherwise(pl.col(VERSION_DIGEST)))
        some = timed("encrypt_changed, 1% of records changed", lambda: seal(changed, first.frame))
        print(f"    ({some.encrypted:,} re-encrypted, {some.reused:,} kept)")

        print("blind indexes:")
        timed(f"blind_index email, {rows:,} values", lambda: blind_index(emails, "email", store))
        phones = golden["phone"].fill_null("+441610000000")
        timed(f"blind_index phone (already E.164), {rows:,} values", lambda: blind_index(phones, "phone", store))
        ids = golden["national_id"].fill_null("AB 12-34-56 C")
        timed(f"blind_index national_id, {rows:,} values", lambda: blind_index(ids, "national_id", store))

        print("key rotation:")
        keyring = store.keyring
        assert keyring is not None
        newer = keyring.with_kek(new_kek_id(), new_key(), active=True)
        counts = timed(f"re-wrap {rows + 1:,} data keys under a new KEK (+ rebuild)", lambda: store.rewrap(newer))
        assert sum(counts.values()) == rows + 1  # the masters' keys and the blind-index key
        store = KeyStore(store.path, newer)

        def reencrypt() -> pl.Series:
            plain = decrypt_column(sealed, "golden_customers", "email", golden["master_id"], store)
            return encrypt_column(plain, owners, "golden_customers", "email", golden["master_id"], store)

        timed(f"re-encrypt {rows:,} values instead (decrypt + encrypt)", reencrypt)
        everything = SECONDS["encrypt_frame"] + SECONDS["decrypt_frame"]
        print(f"    (re-encrypting all {values:,} values these keys protect: ~{everything:.1f} s, from the frame lines)")
        timed(f"destroy one owner's key + rebuild the key store ({rows + 1:,} keys)",
              lambda: store.destroy([owners[0]]))
        size = store.path.stat().st_size / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"key store: {size:.0f} MB for {rows + 1:,} data keys; peak memory {peak:,.0f} MB")


if __name__ == "__main__":
    main()
