"""Extract on good and bad input: structural problems fail naming source, file and column;
row problems reach quarantine with a reason; nothing is dropped."""

from __future__ import annotations

import json
import sqlite3

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.stages.extract import SourceError, extract
from cmdm_pipeline.stages.standardise import standardise
from cmdm_pipeline.stages.validate import validate
from cmdm_pipeline_tests.conftest import GOOD_CSV, NOW, csv_source

HEADER = GOOD_CSV.splitlines()[0]


def judge(config: ProjectConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(raw, validated, quarantined) for the first source."""
    source = config.sources[0]
    raw = extract(source, config, NOW)
    validated, quarantined = validate(standardise(raw, source, config), config.customer_schema, "run-1", NOW.date())
    assert validated.height + quarantined.height == raw.height
    return raw, validated, quarantined


def reasons(quarantined: pl.DataFrame) -> dict[str, list[str]]:
    return {row["source_row_number"]: row["rules_broken"] for row in quarantined.iter_rows(named=True)}


def test_good_csv_keeps_every_column_and_adds_lineage(make_project) -> None:
    raw, validated, quarantined = judge(make_project())
    assert raw.columns[:8] == HEADER.split(",")
    assert raw["source_row_number"].to_list() == [1, 2, 3]
    assert raw["source_record_id"].to_list() == ["1", "2", "3"]
    assert set(raw["source_system"]) == {"crm"}
    assert quarantined.height == 0
    first = validated.row(0, named=True)
    assert (first["first_name"], first["last_name"], first["email"]) == ("Ada", "Lovelace", "ada@example.org")
    assert (first["phone"], first["postcode"], first["country"]) == ("+442079460018", "SW1A 1AA", "GB")


def test_missing_file(make_project) -> None:
    config = make_project(files={})
    with pytest.raises(SourceError, match=r"source 'crm' \(.*crm\.csv\): file not found"):
        extract(config.sources[0], config, NOW)


def test_empty_file(make_project) -> None:
    config = make_project(files={"crm.csv": ""})
    with pytest.raises(SourceError, match=r"crm\.csv\): file is empty"):
        extract(config.sources[0], config, NOW)


def test_header_only_file_gives_no_rows(make_project) -> None:
    raw, validated, quarantined = judge(make_project(files={"crm.csv": HEADER + "\n"}))
    assert raw.height == validated.height == quarantined.height == 0


def test_unreadable_encoding_names_the_line(make_project) -> None:
    latin1 = (GOOD_CSV + "4,Zoë,Brontë,z@example.org,,,GB,\n").encode("latin-1")
    config = make_project(files={"crm.csv": latin1})
    with pytest.raises(SourceError, match=r"crm\.csv\): bytes at or after line \d+ are not valid utf-8.*set `encoding`"):
        extract(config.sources[0], config, NOW)


def test_declared_encoding_is_read(make_project) -> None:
    latin1 = (GOOD_CSV + "4,Zoë,Brontë,z@example.org,,,GB,\n").encode("latin-1")
    raw, validated, _ = judge(make_project(files={"crm.csv": latin1}, sources=[csv_source(encoding="latin-1")]))
    assert validated.filter(pl.col("source_record_id") == "4")["last_name"].to_list() == ["Brontë"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le"])
def test_utf16_is_read_with_or_without_a_byte_order_mark(make_project, codec: str) -> None:
    # Read as a stream, Python's UTF-16 decoder refuses a file without a mark that it reads whole.
    content = (GOOD_CSV + "4,Zoë,Brontë,z@example.org,,,GB,\n").encode(codec)
    raw, validated, _ = judge(make_project(files={"crm.csv": content}, sources=[csv_source(encoding="utf-16")]))
    assert raw.height == 4 and validated.filter(pl.col("source_record_id") == "4")["last_name"].to_list() == ["Brontë"]


def test_ragged_row_is_quarantined_with_its_line(make_project) -> None:
    content = GOOD_CSV + "4,Too,Many,t@example.org,,,GB,,EXTRA\n5,Too,Few\n"
    raw, validated, quarantined = judge(make_project(files={"crm.csv": content}))
    assert validated.height == 3
    assert reasons(quarantined) == {4: ["input.unparsable_row"], 5: ["input.unparsable_row"]}
    row = quarantined.filter(pl.col("source_row_number") == 4).row(0, named=True)
    assert row["reason"] == "row could not be parsed: line 5: row has 9 fields, the header has 8"
    assert json.loads(json.loads(row["source_values"])["unparsed"])[-1] == "EXTRA"


@pytest.mark.parametrize(("tail", "rows"), [
    ("\n4,Too,Many,t@example.org,,,GB,,EXTRA\n\n5,Too,Few\n", 5),  # ragged rows between blank lines: one record a line
    ('4,"Ada\nLovelace",x,a@example.org,,,GB,\n5,Bad,Row\r\n6,Cr\rIn,It,,,,GB,\n', 6),  # a quoted newline, a bare CR
    ('4,"never closed,x,a@example.org,,,GB,\n5,Grace,Hopper,g@example.org,,,US,\n', 5),  # a quote left open
])
def test_csv_read_in_chunks_is_the_same_file(make_project, monkeypatch, tail: str, rows: int) -> None:
    config = make_project(files={"crm.csv": GOOD_CSV + tail})
    whole = extract(config.sources[0], config, NOW)
    monkeypatch.setattr("cmdm_pipeline.stages.extract._CSV_CHUNK", 1)
    chunked = extract(config.sources[0], config, NOW)
    assert chunked.equals(whole) and whole.height == rows
    assert whole["parse_error"].null_count() < rows  # each tail breaks a row


def test_absent_mapped_column_names_it(make_project) -> None:
    content = GOOD_CSV.replace(",DOB", ",Birthday", 1)
    config = make_project(files={"crm.csv": content})
    with pytest.raises(SourceError, match=r"source 'crm' \(.*crm\.csv\): mapped column\(s\) \['DOB'\] not found; the source has: Id, First"):
        extract(config.sources[0], config, NOW)


def test_absent_id_column_names_it(make_project) -> None:
    config = make_project(sources=[csv_source(id_column="CustomerNo")])
    with pytest.raises(SourceError, match=r"\['CustomerNo'\] not found"):
        extract(config.sources[0], config, NOW)


def test_repeated_header_column(make_project) -> None:
    config = make_project(files={"crm.csv": "Id,First,First\n1,a,b\n"})
    with pytest.raises(SourceError, match=r"header repeats a column name at position\(s\) \[2, 3\]"):
        extract(config.sources[0], config, NOW)


def test_duplicate_ids_exact_and_conflicting(make_project) -> None:
    lines = GOOD_CSV.splitlines()
    content = "\n".join([*lines, lines[1], lines[2].replace("Alan", "Alana")]) + "\n"
    raw, validated, quarantined = judge(make_project(files={"crm.csv": content}))
    # Row 4 repeats row 1 exactly: the first copy stays. Rows 2 and 5 disagree: both held back.
    assert sorted(validated["source_row_number"].to_list()) == [1, 3]
    assert reasons(quarantined) == {2: ["input.duplicate_id"], 4: ["input.duplicate_id"], 5: ["input.duplicate_id"]}
    by_row = {r["source_row_number"]: r["reason"] for r in quarantined.iter_rows(named=True)}
    assert by_row[4] == "source_record_id: exact duplicate of row 1"
    assert by_row[2] == "source_record_id: shared by 2 rows with different values (rows 2, 5)"


def test_missing_id_is_quarantined(make_project) -> None:
    raw, _, quarantined = judge(make_project(files={"crm.csv": GOOD_CSV + " ,Ann,Other,a@example.org,,,GB,\n"}))
    assert reasons(quarantined) == {4: ["input.missing_id"]}


def test_wrong_types_are_flagged_by_attribute_severity(make_project) -> None:
    schema_source = csv_source(columns={**csv_source()["columns"], "Score": "nps_score"})
    content = "Id,First,Last,Email,Phone,Zip,Country,DOB,Score\n1,A,B,a@example.org,,,GB,31/02/1990,ten\n2,C,D,c@example.org,,,GB,01/01/1990,7\n"
    _, validated, quarantined = judge(make_project(files={"crm.csv": content}, sources=[schema_source]))
    # nps_score declares invalid: reject; date_of_birth keeps the default (warn).
    assert reasons(quarantined) == {1: ["nps_score.invalid"]}
    assert validated["warnings"].to_list() == [[]]
    assert "date_of_birth.invalid" not in quarantined["rules_broken"].explode().to_list()


def test_nul_bytes_are_quarantined(make_project) -> None:
    content = GOOD_CSV + "4,Nul\x00l,Byte,n@example.org,,,GB,\n"
    _, _, quarantined = judge(make_project(files={"crm.csv": content}))
    assert reasons(quarantined) == {4: ["input.control_characters"]}
    assert quarantined["reason"][0] == "first_name: contains control characters (e.g. NUL)"


def test_formula_like_value_is_quarantined_and_kept_verbatim(make_project) -> None:
    formula = "=cmd|' /C calc'!A0"
    content = GOOD_CSV + f"4,\"{formula}\",Evil,e@example.org,+44 20 7946 0018,,GB,\n"
    _, validated, quarantined = judge(make_project(files={"crm.csv": content}))
    assert reasons(quarantined) == {4: ["input.formula_like"]}
    assert json.loads(quarantined["source_values"][0])["First"] == formula
    assert formula not in quarantined["reason"][0]
    # Phones and negative numbers start with + or - and are not formulas.
    assert validated.height == 3


def test_oversized_field_is_quarantined(make_project) -> None:
    content = GOOD_CSV + f"4,{'x' * 5000},Long,l@example.org,,,GB,\n"
    _, _, quarantined = judge(make_project(files={"crm.csv": content}, input_checks={"max_field_length": 1000}))
    assert reasons(quarantined) == {4: ["input.oversized"]}
    assert quarantined["reason"][0] == "first_name: longer than 1000 characters"


def test_reasons_never_contain_values(make_project) -> None:
    content = GOOD_CSV + "4,,,secret@@example.org,+99 not a phone,,Atlantis,31/12/2999\n"
    _, _, quarantined = judge(make_project(files={"crm.csv": content}))
    text = " ".join(quarantined["reason"].to_list())
    for value in ("secret", "Atlantis", "2999", "+99"):
        assert value not in text


def test_record_type_read_per_row(make_project) -> None:
    content = "Id,Status,First\n1,Lead,A\n2,Contact,B\n3,Prospect,C\n"
    source = csv_source(columns={"First": "first_name"}, record_type={"column": "Status", "values": {"Lead": "lead", "Contact": "contact"}})
    _, validated, quarantined = judge(make_project(files={"crm.csv": content}, sources=[source]))
    assert validated["record_type"].to_list() == ["lead", "contact"]
    assert reasons(quarantined) == {3: ["input.record_type"]}


JSONL = [
    {"customer_id": 10, "email": "Ada@Example.org", "name": {"first": "Ada", "last": "Lovelace"}, "tags": ["vip"]},
    {"customer_id": 11, "email": "alan@example.org", "name": {"first": "Alan", "last": "Turing"}, "tags": []},
]
JSONL_COLUMNS = {"email": "email", "name.first": "first_name", "name.last": "last_name"}


def jsonl_source(**overrides: object) -> dict[str, object]:
    return csv_source(kind="jsonl", path="shop.jsonl", id_column="customer_id", columns=JSONL_COLUMNS, **overrides)


def test_jsonl_flattens_nested_objects(make_project) -> None:
    content = "\n".join(json.dumps(r) for r in JSONL) + "\n\n"
    raw, validated, _ = judge(make_project(files={"shop.jsonl": content}, sources=[jsonl_source()]))
    assert raw["source_record_id"].to_list() == ["10", "11"]
    assert raw["tags"].to_list() == ['["vip"]', "[]"]
    assert validated["first_name"].to_list() == ["Ada", "Alan"]


def test_jsonl_bad_line_is_quarantined_not_fatal(make_project) -> None:
    content = json.dumps(JSONL[0]) + "\n{not json\n[1, 2]\n" + json.dumps(JSONL[1]) + "\n"
    raw, validated, quarantined = judge(make_project(files={"shop.jsonl": content}, sources=[jsonl_source()]))
    assert raw.height == 4 and validated.height == 2
    assert reasons(quarantined) == {2: ["input.unparsable_row"], 3: ["input.unparsable_row"]}
    assert quarantined["reason"].to_list()[1] == "row could not be parsed: line 3: a JSON array, not an object"


def test_jsonl_read_in_chunks_is_the_same_file(make_project, monkeypatch) -> None:
    # A key first seen in a later chunk, a blank line and a bad line across chunk boundaries.
    lines = [json.dumps(JSONL[0]), "", "{not json", json.dumps(JSONL[1]), json.dumps({"customer_id": 12, "late": "x"})]
    config = make_project(files={"shop.jsonl": "\n".join(lines)}, sources=[jsonl_source()])
    whole = extract(config.sources[0], config, NOW)
    monkeypatch.setattr("cmdm_pipeline.stages.extract._JSONL_CHUNK", 1)
    chunked = extract(config.sources[0], config, NOW)
    assert chunked.equals(whole)
    assert chunked.columns[:6] == ["customer_id", "email", "name.first", "name.last", "tags", "late"]
    assert chunked["parse_error"].to_list()[1] == "line 3: invalid JSON at character 2: Expecting property name enclosed in double quotes"
    assert chunked["late"].to_list() == [None, None, None, "x"]


def test_jsonl_of_only_bad_lines_fails_naming_the_file(make_project) -> None:
    # No line is an object, so no mapped column can be found: a structural error, not a Polars one.
    config = make_project(files={"shop.jsonl": "{not json\n[1]\n"}, sources=[jsonl_source()])
    with pytest.raises(SourceError, match=r"shop\.jsonl\): mapped column\(s\) .* not found; the source has: \(no columns\)"):
        extract(config.sources[0], config, NOW)


def test_jsonl_undecodable_bytes_name_their_line(make_project) -> None:
    config = make_project(files={}, sources=[jsonl_source()])
    (config.base_dir / "shop.jsonl").write_bytes(json.dumps(JSONL[0]).encode() + b"\n" + b'{"customer_id": 11, "email": "\xff"}\n')
    with pytest.raises(SourceError, match=r"shop\.jsonl\): bytes on line 2 are not valid utf-8.*set `encoding`"):
        extract(config.sources[0], config, NOW)


def test_jsonl_numbers_too_long_and_nesting_too_deep_are_quarantined_lines(make_project) -> None:
    lines = [json.dumps(JSONL[0]), '{"customer_id": 11, "n": ' + "9" * 5000 + "}", '{"customer_id": 12, "n": ' + "[" * 100_000 + "]" * 100_000 + "}"]
    raw, validated, quarantined = judge(make_project(files={"shop.jsonl": "\n".join(lines)}, sources=[jsonl_source()]))
    assert validated.height == 1
    assert quarantined["reason"].to_list() == [
        "row could not be parsed: line 2: holds a number too long to read",
        "row could not be parsed: line 3: nested too deeply to read",
    ]


@pytest.mark.parametrize("name", ["parse_error", "unparsed"])
def test_a_source_column_named_as_a_reader_column_fails_naming_it(make_project, tmp_path, monkeypatch, name: str) -> None:
    # The reader adds these two columns: a source's own would be overwritten, or clash (here a key first seen in
    # a later chunk of JSON lines).
    monkeypatch.setattr("cmdm_pipeline.stages.extract._JSONL_CHUNK", 2)
    csv_config = make_project(files={"crm.csv": GOOD_CSV.replace(",DOB", f",DOB,{name}", 1)})
    late_key = [json.dumps(JSONL[0])] * 3 + [json.dumps({**JSONL[1], name: "x"})]
    jsonl_config = make_project(files={"shop.jsonl": "\n".join(late_key)}, sources=[jsonl_source()])
    pl.DataFrame({"Id": [1], "First": ["Ada"], name: ["x"]}).write_parquet(tmp_path / "erp.parquet")
    parquet_config = make_project(files={}, sources=[csv_source(kind="parquet", path="erp.parquet", columns={"First": "first_name"})])
    for config, file in ((csv_config, "crm.csv"), (jsonl_config, "shop.jsonl"), (parquet_config, "erp.parquet")):
        with pytest.raises(SourceError, match=rf"{file}\): column\(s\) \['{name}'\] clash with pipeline lineage columns"):
            extract(config.sources[0], config, NOW)


def test_parquet_source(make_project, tmp_path) -> None:
    frame = pl.DataFrame({"Id": [1, 2], "First": ["Ada", "Alan"], "DOB": [None, None]}).with_columns(pl.col("DOB").cast(pl.Date))
    frame.write_parquet(tmp_path / "erp.parquet")
    source = csv_source(kind="parquet", path="erp.parquet", columns={"First": "first_name", "DOB": "date_of_birth"}, date_formats=["%Y-%m-%d"])
    raw, validated, _ = judge(make_project(files={}, sources=[source]))
    assert raw["Id"].to_list() == ["1", "2"]
    assert validated["first_name"].to_list() == ["Ada", "Alan"]


def test_corrupt_parquet_fails_naming_the_file(make_project) -> None:
    source = csv_source(kind="parquet", path="erp.parquet")
    config = make_project(files={"erp.parquet": b"PAR1 not really"}, sources=[source])
    with pytest.raises(SourceError, match=r"erp\.parquet\): cannot read Parquet"):
        extract(config.sources[0], config, NOW)


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_embedded_database_sources(make_project, tmp_path, kind: str) -> None:
    path = tmp_path / f"src.{kind}"
    rows = [(1, "Ada", "1985-12-10"), (2, "Alan", None)]
    if kind == "duckdb":
        with duckdb.connect(str(path)) as con:
            con.execute('CREATE TABLE "People" ("Id" INTEGER, "First" VARCHAR, "DOB" DATE)')
            con.executemany('INSERT INTO "People" VALUES (?, ?, ?)', rows)
    else:
        with sqlite3.connect(path) as con:
            con.execute('CREATE TABLE "People" ("Id" INTEGER, "First" TEXT, "DOB" TEXT)')
            con.executemany('INSERT INTO "People" VALUES (?, ?, ?)', rows)
    source = csv_source(kind=kind, path=path.name, table="People", columns={"First": "first_name", "DOB": "date_of_birth"}, date_formats=["%Y-%m-%d"])
    raw, validated, _ = judge(make_project(files={}, sources=[source]))
    assert raw["Id"].to_list() == ["1", "2"]
    assert validated["date_of_birth"].to_list()[0].isoformat() == "1985-12-10"


def test_database_query_error_names_the_source(make_project, tmp_path) -> None:
    with sqlite3.connect(tmp_path / "src.sqlite") as con:
        con.execute("CREATE TABLE t (Id INTEGER)")
    source = csv_source(kind="sqlite", path="src.sqlite", table="missing_table", columns={})
    config = make_project(files={}, sources=[source])
    with pytest.raises(SourceError, match=r"source 'crm' \(.*src\.sqlite\): query failed: no such table"):
        extract(config.sources[0], config, NOW)
