"""Purpose lenses: masking, tokens, consent and row filters on tiny frames; config errors; publishing files."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from cmdm_pipeline.config import ConfigError, Lens
from cmdm_pipeline.protect.lenses import build as lens_module
from cmdm_pipeline.protect.lenses.build import (
    CONSENT_CHANNELS,
    LensKeys,
    build_lens,
    mask,
    neutralise_formulas,
    publish_files,
    read_encrypted_parquet,
    tokenise,
)
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline_tests.conftest import SCHEMA

CUSTOMER_SCHEMA = CustomerSchema.model_validate(SCHEMA)
KEY = bytes(range(32))
GOLDEN = pl.DataFrame({
    "master_id": ["m1", "m2", "m3", "m4"],
    "party_type": ["person", "person", "organisation", "person"],
    "record_type": ["customer", "lead", "customer", "customer"],
    "first_name": ["Ada", "Alan", None, "Grace"],
    "last_name": ["Lovelace", "Turing", None, "Hopper"],
    "email": ["ada@lovelace-family.org", "alan@example.org", None, "grace@example.com"],
    "phone": ["+441614960000", None, "+12025550143", "+12025550199"],
    "postcode": ["SW1A 1AA", "M1 1AE", None, "20500"],
    "country": ["GB", "GB", "DE", "US"],
    "date_of_birth": [dt.date(1985, 12, 10), None, None, dt.date(1956, 12, 9)],
    "nps_score": [9.0, None, None, 3.0],
})
CONSENT = pl.DataFrame({
    "master_id": ["m1", "m1", "m2", "m4", "m4"],
    "purpose": ["marketing", "marketing", "marketing", "marketing", "profiling"],
    "channel": ["email", "sms", "email", "email", "email"],
    "granted": [True, True, False, True, True],
})


def lens(**fields: Any) -> Lens:
    return Lens.model_validate({"name": "marketing", "description": "test", "purpose": None,
                                "columns": {"email": "reveal"}, **fields})


def values(frame: pl.DataFrame, column: str) -> list[Any]:
    return frame[column].to_list()


# --- masking and tokens ------------------------------------------------------------------------------------

def test_masking_by_kind_keeps_a_hint_and_never_the_value() -> None:
    masked = GOLDEN.select(
        mask("email", Kind.email, pl.String), mask("phone", Kind.phone, pl.String),
        mask("postcode", Kind.postcode, pl.String), mask("last_name", Kind.person_name, pl.String),
        mask("date_of_birth", Kind.date, pl.Date),
    )
    assert values(masked, "email") == ["a***@l***.org", "a***@e***.org", None, "g***@e***.com"]
    assert values(masked, "phone") == ["***00", None, "***43", "***99"]
    assert values(masked, "postcode") == ["SW***", "M1***", None, "20***"]
    assert values(masked, "last_name") == ["L***", "T***", None, "H***"]
    assert values(masked, "date_of_birth") == [1985, None, None, 1956]
    # A value that is not an e-mail address (no @) still shows one character only.
    odd = pl.DataFrame({"email": ["not-an-address", ""]}).select(mask("email", Kind.email, pl.String))
    assert values(odd, "email") == ["n***", ""]


def test_tokens_are_stable_keyed_per_lens_and_keep_nulls() -> None:
    emails = GOLDEN["email"]
    first = tokenise(emails, KEY)
    assert first.to_list() == tokenise(emails, KEY).to_list()  # the next run gives the same tokens
    assert first[2] is None and all(len(t) == 32 for t in first.drop_nulls())
    assert tokenise(emails, bytes(32)).to_list()[0] != first[0]  # another lens's key: other tokens
    same = tokenise(pl.Series("email", ["a@x.org", "b@x.org", "a@x.org"]), KEY)
    assert same[0] == same[2] != same[1]  # equal values, equal tokens: counts and joins work
    assert tokenise(pl.Series("phone", ["a@x.org"]), KEY)[0] != same[0]  # the column name is in the message


# --- consent and row filters -------------------------------------------------------------------------------

def test_consent_no_row_and_withdrawal_mean_not_granted() -> None:
    shown = build_lens(GOLDEN, CONSENT, lens(purpose="marketing", channel="email"), CUSTOMER_SCHEMA, KEY)
    assert values(shown, "master_id") == ["m1", "m4"]  # m2 withdrew, m3 has no row
    assert CONSENT_CHANNELS not in shown.columns


def test_consent_on_any_channel_lists_the_channels_granted() -> None:
    shown = build_lens(GOLDEN, CONSENT, lens(purpose="marketing"), CUSTOMER_SCHEMA, KEY)
    assert shown.select("master_id", CONSENT_CHANNELS).rows() == [("m1", ["email", "sms"]), ("m4", ["email"])]
    only_sms = build_lens(GOLDEN, CONSENT, lens(purpose="marketing", channel="sms"), CUSTOMER_SCHEMA, KEY)
    assert values(only_sms, "master_id") == ["m1"]


def test_a_lens_without_purpose_shows_everyone_and_needs_no_consent_table() -> None:
    shown = build_lens(GOLDEN, None, lens(), CUSTOMER_SCHEMA, KEY)
    assert values(shown, "master_id") == ["m1", "m2", "m3", "m4"]
    with pytest.raises(lens_module.LensError, match="needs consent purpose"):
        build_lens(GOLDEN, None, lens(purpose="marketing"), CUSTOMER_SCHEMA, KEY)


def test_row_filters_all_hold() -> None:
    shown = build_lens(GOLDEN, None, lens(where={"country": ["GB", "US"], "record_type": ["customer"]}), CUSTOMER_SCHEMA, KEY)
    assert values(shown, "master_id") == ["m1", "m4"]
    flags = GOLDEN.with_columns(accepts=pl.Series([True, None, False, True]))
    assert values(build_lens(flags, None, lens(where={"accepts": [True]}), CUSTOMER_SCHEMA, KEY), "master_id") == ["m1", "m4"]


def test_a_lens_without_row_filters_shows_every_master_of_a_large_golden_table() -> None:
    """Polars 2.1 filtered 100k+ rows by `lit(True).fill_null(False)` with a predicate of the wrong length."""
    golden = pl.DataFrame({"master_id": [f"m{i}" for i in range(150_000)], "country": ["GB"] * 150_000})
    assert build_lens(golden, None, lens(columns={"country": "reveal"}), CUSTOMER_SCHEMA, KEY).height == 150_000


def test_columns_in_order_master_id_first_and_treated() -> None:
    spec = lens(columns={"country": "reveal", "email": "mask", "phone": "tokenise", "master_id": "tokenise"})
    shown = build_lens(GOLDEN, None, spec, CUSTOMER_SCHEMA, KEY)
    assert shown.columns == ["master_id", "country", "email", "phone"]
    assert values(shown, "email")[0] == "a***@l***.org"
    assert values(shown, "master_id") == tokenise(GOLDEN["master_id"], KEY).to_list()
    assert shown["phone"].to_list() == tokenise(GOLDEN["phone"], KEY).to_list()
    for value in GOLDEN["email"].drop_nulls().to_list() + GOLDEN["phone"].drop_nulls().to_list():
        assert value not in str(shown.rows())


def test_csv_cells_that_look_like_formulas_are_neutralised() -> None:
    frame = pl.DataFrame({"a": ["=1+1", "+49", "-2", "@SUM(A1)", "\tx", "\rx", "ok", None, "＝HYPERLINK(1)", "＠x"],
                          "n": list(range(10)), "l": [["x", "=y"]] * 10})
    out = neutralise_formulas(frame)
    assert values(out, "a") == ["'=1+1", "'+49", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "ok", None, "'＝HYPERLINK(1)", "'＠x"]
    assert values(out, "n") == list(range(10))  # numbers stay numbers
    assert values(out, "l")[0] == "x;=y"


# --- config errors -----------------------------------------------------------------------------------------

CONSENT_SECTION = {"purposes": ["marketing"], "channels": ["email", "sms"],
                   "source": {"kind": "csv", "path": "consent.csv",
                              "columns": {"E": "email", "P": "purpose", "C": "channel", "A": "action", "T": "occurred_at"}}}


@pytest.mark.parametrize(("spec", "message"), [
    ({"columns": {"emial": "reveal"}}, r"lenses\[0\]\(marketing\)\.columns\.emial: unknown attribute"),
    ({"columns": {"email": "hide"}}, r"at lenses\[0\]\(marketing\)\.columns\.email: Input should be 'reveal', 'mask' or 'tokenise'"),
    ({"columns": {"nps_score": "mask"}}, r"columns\.nps_score: cannot be masked"),
    ({"purpose": "profiling"}, r"lenses\[0\]\(marketing\)\.purpose: 'profiling' is not one of consent\.purposes"),
    ({"purpose": "marketing", "channel": "post"}, r"\.channel: 'post' is not one of consent\.channels"),
    ({"channel": "email"}, r"`channel` needs a `purpose`"),
    ({"where": {"email": ["a@b.c"]}}, r"where\.email: filters on personal data"),
    ({"where": {"party_type": ["people"]}}, r"where\.party_type: \['people'\] not among"),
    ({"where": {"nps_score": ["1"]}}, r"where\.nps_score: numbers and dates"),
    ({"where": {"country": ["Germany"]}}, r"where\.country: countries are ISO"),
    ({"where": {"shoe_size": ["9"]}}, r"where\.shoe_size: unknown attribute"),
    ({"formats": ["duckdb", "parquet"]}, r"formats: duckdb cannot be encrypted, and the lens reveals personal data \(email\)"),
    ({"name": "Marketing"}, r"lower_snake_case"),
    ({"purpose": "marketing", "rows": "all"}, r"rows: Extra inputs are not permitted"),
])
def test_bad_lenses_are_refused_naming_the_key_path(make_project, spec: dict[str, Any], message: str) -> None:  # type: ignore[no-untyped-def]
    document = {"name": "marketing", "description": "test", "purpose": None, "columns": {"email": "reveal"}, **spec}
    with pytest.raises(ConfigError, match=message):
        make_project(lenses=[document], consent=CONSENT_SECTION)


def test_purpose_needs_a_consent_section_and_names_are_unique(make_project) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"purpose: 'marketing' needs a `consent:` section"):
        make_project(lenses=[{"name": "m", "description": "d", "purpose": "marketing", "columns": {"email": "mask"}}])
    with pytest.raises(ConfigError, match=r"purpose: Field required"):
        make_project(lenses=[{"name": "m", "description": "d", "columns": {"email": "mask"}}])
    twice = {"name": "m", "description": "d", "purpose": None, "columns": {"email": "mask"}}
    with pytest.raises(ConfigError, match="names must be unique; repeated: m"):
        make_project(lenses=[twice, twice])
    with pytest.raises(ConfigError, match=r"lenses_target\.url: Value error, must be a postgresql:// URL"):
        make_project(lenses=[twice], lenses_target={"url": "mysql://x"})


# --- publishing ----------------------------------------------------------------------------------------------

def _keys(*names: str) -> dict[str, LensKeys]:
    return {name: LensKeys(token=KEY, file=os.urandom(32)) for name in names}


def test_published_files_and_the_encrypted_parquet(tmp_path: Path) -> None:
    masked = lens(name="masked", columns={"email": "mask", "country": "reveal"}, formats=["duckdb", "parquet", "csv"])
    revealed = lens(name="revealed", columns={"email": "reveal", "phone": "reveal"})
    built = [(spec, build_lens(GOLDEN, None, spec, CUSTOMER_SCHEMA, KEY)) for spec in (masked, revealed)]
    keys = _keys("masked", "revealed")
    published = publish_files(built, tmp_path, keys, CUSTOMER_SCHEMA)
    assert {p.name: (sorted(p.files), p.encrypted, p.rows) for p in published} == {
        "masked": (["csv", "duckdb", "parquet"], False, 4), "revealed": (["parquet"], True, 4)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masked.csv", "masked.duckdb", "masked.parquet", "revealed.parquet"]
    with duckdb.connect(str(tmp_path / "masked.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM customers").fetchall() == [(4,)]
    assert pl.read_parquet(tmp_path / "masked.parquet").equals(built[0][1])

    # No plaintext in any file: the revealing lens's values are in its encrypted file only, as ciphertext.
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        for value in ("ada@lovelace-family.org", "lovelace-family", "+441614960000", "4960000"):
            assert value.encode() not in data, (path.name, value)

    encrypted = tmp_path / "revealed.parquet"
    with pytest.raises(OSError, match="encrypt"):
        pq.read_table(encrypted)
    with pytest.raises(OSError):
        read_encrypted_parquet(encrypted, os.urandom(32))  # the wrong key
    assert read_encrypted_parquet(encrypted, keys["revealed"].file).equals(built[1][1])

    # DuckDB 2.0 reads it offline with the key (no extension installed or loaded from the network).
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    with pytest.raises(duckdb.Error, match="encrypted"):
        con.sql(f"SELECT * FROM read_parquet('{encrypted}')").fetchall()
    con.execute(f"PRAGMA add_parquet_key('revealed', '{base64.b64encode(keys['revealed'].file).decode()}')")
    rows = con.sql(f"SELECT email FROM read_parquet('{encrypted}', encryption_config = {{footer_key: 'revealed'}}) "
                   "ORDER BY master_id").fetchall()
    assert [r[0] for r in rows] == GOLDEN["email"].to_list()
    con.execute(f"PRAGMA add_parquet_key('other', '{base64.b64encode(os.urandom(32)).decode()}')")
    with pytest.raises(duckdb.Error, match="right key"):
        con.sql(f"SELECT * FROM read_parquet('{encrypted}', encryption_config = {{footer_key: 'other'}})").fetchall()


def test_a_failed_publish_leaves_the_previous_files_and_stale_lenses_go(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    first = lens(name="first", columns={"country": "reveal"})
    gone = lens(name="gone", columns={"country": "reveal"})
    built = [(spec, build_lens(GOLDEN, None, spec, CUSTOMER_SCHEMA, KEY)) for spec in (first, gone)]
    publish_files(built, tmp_path, _keys("first", "gone"), CUSTOMER_SCHEMA)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real = lens_module._write

    def failing(fmt: str, frame: pl.DataFrame, path: Path, file_key: bytes | None) -> None:
        if fmt == "parquet":
            raise OSError("disk full")
        real(fmt, frame, path, file_key)  # type: ignore[arg-type]

    monkeypatch.setattr(lens_module, "_write", failing)
    smaller = [(first, built[0][1].head(1))]
    with pytest.raises(OSError, match="disk full"):
        publish_files(smaller, tmp_path, _keys("first"), CUSTOMER_SCHEMA)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # whole, and no temporary file left

    monkeypatch.setattr(lens_module, "_write", real)
    publish_files(smaller, tmp_path, _keys("first"), CUSTOMER_SCHEMA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.duckdb", "first.parquet"]
    assert pl.read_parquet(tmp_path / "first.parquet").height == 1


def test_reports_are_published_beside_the_lenses_all_or_none(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder, reports = tmp_path / "lenses", tmp_path / "published"
    first = lens(name="first", columns={"country": "reveal"})
    built = [(first, build_lens(GOLDEN, None, first, CUSTOMER_SCHEMA, KEY))]
    counts = pl.DataFrame({"source_system": ["crm"], "rows_read": [4]})
    publish_files(built, folder, _keys("first"), CUSTOMER_SCHEMA, {"run_reconciliation": counts, "gone": counts})
    assert sorted(p.name for p in reports.iterdir()) == ["gone.parquet", "run_reconciliation.parquet"]
    before = {p.name: p.read_bytes() for p in reports.iterdir()}

    real = lens_module._write

    def failing(fmt: str, frame: pl.DataFrame, path: Path, file_key: bytes | None) -> None:
        if path.parent == reports:
            raise OSError("disk full")
        real(fmt, frame, path, file_key)  # type: ignore[arg-type]

    monkeypatch.setattr(lens_module, "_write", failing)
    with pytest.raises(OSError, match="disk full"):
        publish_files(built, folder, _keys("first"), CUSTOMER_SCHEMA, {"run_reconciliation": counts.head(0)})
    assert {p.name: p.read_bytes() for p in reports.iterdir()} == before  # whole, no report dropped
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]

    monkeypatch.setattr(lens_module, "_write", real)
    publish_files(built, folder, _keys("first"), CUSTOMER_SCHEMA, {"run_reconciliation": counts.head(0)})
    assert sorted(p.name for p in reports.iterdir()) == ["run_reconciliation.parquet"]  # a report no longer published goes
    assert pl.read_parquet(reports / "run_reconciliation.parquet").height == 0
