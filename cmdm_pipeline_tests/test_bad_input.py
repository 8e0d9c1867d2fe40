"""Broken source files (issue 19): every record in the file is read once, the broken ones are
quarantined with their line and a reason, the good ones pass, and no error text holds a value.

One bad JSON line stopped the run; a lone ``\\ud800`` escape failed it naming no line; ``1004.0`` and
``true`` became ids "1004.0" and "true"; an unclosed quote swallowed the next record; a bare CR split
one record in two; a CSV without its header printed its first data row (the values below are canaries).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from cmdm_pipeline.cli import EXIT_RUN_FAILED, main
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.stages.extract import SourceError, extract
from cmdm_pipeline.stages.standardise import standardise
from cmdm_pipeline.stages.validate import validate
from cmdm_pipeline_tests.conftest import GOOD_CSV, NOW, csv_source
from cmdm_pipeline_tests.test_databases import MYSQL_URL, PG_URL, _unreachable, pg_admin

HEADER, ADA, ALAN, GRACE = GOOD_CSV.splitlines()
ROW4 = '4,Ann,Other,ann@example.org,,"SW1A 1AA",GB,01/01/1990'  # a quoted field: an open quote ends at its "


def _jsonl(record_id: object, first: str = "Ada", **extra: object) -> str:
    return json.dumps({"customer_id": record_id, "email": f"{first.lower()}@example.org",
                       "name": {"first": first, "last": "Lovelace"}, **extra}, ensure_ascii=False)


GOOD_10, GOOD_12 = _jsonl(10, "Ada"), _jsonl(12, "Grace")
LONE_SURROGATE = '{"customer_id": 11, "email": "a@example.org", "name": {"first": "\\ud800"}}'
WHOLE_PAIR = '{"customer_id": 12, "email": "grace@example.org", "name": {"first": "Grace"}, "note": "\\ud83d\\ude00"}'
SEPARATORS = _jsonl(11, "Alan", note="a\u2028b\u0085c")  # JSON strings may hold these as they are
JSONL_SOURCE = csv_source(kind="jsonl", path="shop.jsonl", id_column="customer_id",
                          columns={"email": "email", "name.first": "first_name", "name.last": "last_name"})

# (file content, records in the file, {row: reason} of the quarantined rows, ids that pass)
JSONL_CASES: dict[str, tuple[str, int, dict[int, str], list[str]]] = {
    "truncated line": (
        f"{GOOD_10}\n{_jsonl(11, 'Alan')[:25]}\n{GOOD_12}\n", 3,
        {2: "line 2: invalid JSON at character 21: Unterminated string starting at"}, ["10", "12"]),
    "a JSON array line": (f"{GOOD_10}\n[1, 2]\n\n{GOOD_12}\n", 3, {2: "line 2: a JSON array, not an object"}, ["10", "12"]),
    "a JSON scalar line": (f"{GOOD_10}\n42\n{GOOD_12}\n", 3, {2: "line 2: a JSON number, not an object"}, ["10", "12"]),
    "a lone surrogate escape": (  # a whole surrogate pair is a character: kept
        f"{GOOD_10}\n{LONE_SURROGATE}\n{WHOLE_PAIR}\n", 3,
        {2: "line 2: a \\u escape is half of a surrogate pair, not a character"}, ["10", "12"]),
    "an object id": (f'{GOOD_10}\n{_jsonl({"no": 11}, "Alan")}\n{GOOD_12}\n', 3,
                     {2: "line 2: id column 'customer_id' holds a JSON object, not a single value"}, ["10", "12"]),
    "an array id": (f"{GOOD_10}\n{_jsonl([11], 'Alan')}\n{GOOD_12}\n", 3,
                    {2: "line 2: id column 'customer_id' holds a JSON array, not a single value"}, ["10", "12"]),
    "a boolean id": (f"{GOOD_10}\n{_jsonl(True, 'Alan')}\n{GOOD_12}\n", 3,
                     {2: "line 2: id column 'customer_id' holds a JSON boolean, not an id"}, ["10", "12"]),
    "a fractional id": (f"{GOOD_10}\n{_jsonl(1004.5, 'Alan')}\n{GOOD_12}\n", 3,
                        {2: "line 2: id column 'customer_id' holds a number that is not a whole number"}, ["10", "12"]),
    "an id too large for a float": (f"{GOOD_10}\n{_jsonl(1e20, 'Alan')}\n{GOOD_12}\n", 3,
                                    {2: "line 2: id column 'customer_id' holds a number that is not a whole number"},
                                    ["10", "12"]),
    # The number 1004.0 is the number 1004: its id is "1004", as written by a writer that had ints.
    "a whole float id": (f"{GOOD_10}\n{_jsonl(1004.0, 'Alan')}\n{GOOD_12}\n", 3, {}, ["10", "1004", "12"]),
    "line separators inside a string": (f"{GOOD_10}\n{SEPARATORS}\n{GOOD_12}\n", 3, {}, ["10", "11", "12"]),
}

CSV_CASES: dict[str, tuple[str, int, dict[int, str], list[str]]] = {
    # Row 2's quote never closes; the strict reader stops at row 4's opening quote.
    "unclosed quote before a quoted field": (
        "\n".join([HEADER, ADA, ALAN.replace(",Turing,", ',"Turing,'), GRACE, ROW4]) + "\n", 4,
        {2: "line 3: a quote opened in this row is never closed"}, ["1", "3", "4"]),
    # No quote follows: the quote runs to the end of the file.
    "unclosed quote to the end of the file": (
        "\n".join([HEADER, ADA, ALAN.replace(",Turing,", ',"Turing,'), GRACE]) + "\n", 3,
        {2: "line 3: a quote opened in this row is never closed"}, ["1", "3"]),
    # In the last column the swallowed lines would even give the right field count.
    "unclosed quote in the last column": (
        "\n".join([HEADER, ADA, ALAN.replace(",23/06/1992", ',"23/06/1992'), GRACE]) + "\n", 3,
        {2: "line 3: a quote opened in this row is never closed"}, ["1", "3"]),
    # A stray quote later closes the open one cleanly: the record read is ragged (the CRM sample had 21 fields).
    "unclosed quote closed by a stray quote": (
        "\n".join([HEADER, ADA, ALAN.replace(",Alan,", ',"Alan,'), GRACE.replace("USA", 'USA"')]) + "\n", 3,
        {2: "line 3: a quote opened in this row is never closed"}, ["1", "3"]),
    "bare CR inside an unquoted field": (
        "\n".join([HEADER, ADA, ALAN.replace("Turing", "Tur\ring"), GRACE]) + "\n", 3, {}, ["1", "2", "3"]),
    "bare CR inside a quoted field": (
        "\n".join([HEADER, ADA, ALAN.replace("Turing", '"Tur\ring"'), GRACE]) + "\n", 3, {}, ["1", "2", "3"]),
    "CRLF line ends": ("\r\n".join([HEADER, ADA, ALAN, GRACE]) + "\r\n", 3, {}, ["1", "2", "3"]),
    "a quoted newline is one record": (
        "\n".join([HEADER, ADA, ALAN.replace("M1 1AE", '"M1\n1AE"'), GRACE]) + "\n", 3, {}, ["1", "2", "3"]),
    "a ragged row": ("\n".join([HEADER, ADA, ALAN + ",EXTRA", GRACE]) + "\n", 3,
                     {2: "line 3: row has 9 fields, the header has 8"}, ["1", "3"]),
}


def judge(config: ProjectConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    source = config.sources[0]
    raw = extract(source, config, NOW)
    validated, quarantined = validate(standardise(raw, source, config), config.customer_schema, "run-1", NOW.date())
    return raw, validated, quarantined


def _check(config: ProjectConfig, records: int, expected: dict[int, str], good: list[str]) -> pl.DataFrame:
    raw, validated, quarantined = judge(config)
    assert raw.height == records  # rows read == records in the file
    assert validated.height + quarantined.height == records
    found = {r["source_row_number"]: (r["rules_broken"], r["reason"]) for r in quarantined.iter_rows(named=True)}
    assert sorted(found) == sorted(expected)
    for row, reason in expected.items():
        assert found[row][0] == ["input.unparsable_row"]
        assert found[row][1].startswith("row could not be parsed: " + reason), found[row][1]
    assert sorted(validated["source_record_id"].to_list()) == good
    return raw


@pytest.mark.parametrize("case", list(JSONL_CASES))
def test_broken_jsonl_lines_are_quarantined_with_their_line(case: str, make_project) -> None:
    content, records, expected, good = JSONL_CASES[case]
    _check(make_project(files={"shop.jsonl": content}, sources=[JSONL_SOURCE]), records, expected, good)


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_broken_csv_records_never_take_another_record_with_them(case: str, make_project) -> None:
    content, records, expected, good = CSV_CASES[case]
    raw = _check(make_project(files={"crm.csv": content}), records, expected, good)
    if "bare CR" in case:
        assert raw.filter(pl.col("Id") == "2")["Last"].to_list() == ["Tur\ring"]


def test_unclosed_quote_keeps_the_line_as_read(make_project) -> None:
    broken = ALAN.replace(",Turing,", ',"Turing,')
    _, _, quarantined = judge(make_project(files={"crm.csv": "\n".join([HEADER, broken, GRACE]) + "\n"}))
    assert json.loads(json.loads(quarantined["source_values"][0])["unparsed"])[:3] == ["2", "Alan", "Turing,alan@example.org,+44 161 496 0000,M1 1AE,GB,23/06/1992\n"]


# A loyalty file without its header: its first row is personal data and must reach no message.
CANARY = ["6337007686532074", "Kelseycanary", "Howardcanary", "16/01/1979", "kelsey.canary@aol.com",
          "12015560555", "60686", "USA"]
HEADERLESS = {
    "distinct values": ",".join(CANARY),
    "an empty field": ",".join([*CANARY[:5], "", *CANARY[6:]]),
    "a repeated value": ",".join([*CANARY, CANARY[1]]),
}


def _assert_no_canary(text: str) -> None:
    for value in CANARY:
        assert value not in text


@pytest.mark.parametrize("case", list(HEADERLESS))
def test_a_file_without_its_header_prints_no_value(case: str, make_project) -> None:
    content = HEADERLESS[case] + "\n" + ",".join(["6337806875579469", "Lynne", "Ali", "", "", "", "", "GBR"]) + "\n"
    config = make_project(files={"crm.csv": content})
    with pytest.raises(SourceError) as error:
        extract(config.sources[0], config, NOW)
    _assert_no_canary(str(error.value))
    assert "crm.csv" in str(error.value)


def test_lines_ended_by_cr_alone_fail_without_printing_the_rows(make_project) -> None:
    config = make_project(files={"crm.csv": "\r".join([HEADER, ",".join(CANARY)]) + "\r"})
    with pytest.raises(SourceError, match="line 1 \\(the header\\) holds a carriage return") as error:
        extract(config.sources[0], config, NOW)
    _assert_no_canary(str(error.value))


def test_a_missing_column_in_a_real_header_is_named_with_the_header(make_project) -> None:
    config = make_project(files={"crm.csv": GOOD_CSV.replace(",DOB", ",Birthday", 1)})
    with pytest.raises(SourceError, match=r"\['DOB'\] not found; the source has: Id, First, .*Birthday"):
        extract(config.sources[0], config, NOW)


@pytest.mark.integration
def test_headerless_file_leaves_no_value_in_dagster_home(make_project, tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    config = make_project(files={"crm.csv": HEADERLESS["distinct values"] + "\n"})
    assert main(["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    assert "does the file lack its header?" in err
    _assert_no_canary(err)
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert stored  # the run was recorded there
    for path in stored:
        _assert_no_canary(path.read_bytes().decode("utf-8", errors="replace"))


@pytest.mark.integration
def test_bad_jsonl_lines_run_through_the_job_and_reconcile(make_project) -> None:
    # Row 8 has no name (a frame rule fails) and a bad e-mail, beside unparsable rows whose issues name no attribute.
    content = "\n".join([GOOD_10, _jsonl(11, "Alan")[:25], "[1, 2]", LONE_SURROGATE, _jsonl(True, "Bool"),
                         _jsonl(1004.0, "Alan"), GOOD_12, '{"customer_id": 13, "email": "not-an-email"}']) + "\n"
    config = make_project(files={"shop.jsonl": content}, sources=[JSONL_SOURCE], quality={"max_quarantine_rate": 1.0})
    result = build_definitions(config).resolve_job_def(JOB_NAME).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    warehouse = open_warehouse(config)
    recon = warehouse.read("run_reconciliation").row(0, named=True)
    assert (recon["rows_read"], recon["rows_validated"], recon["rows_quarantined"], recon["balanced"]) == (8, 3, 5, True)
    quarantined = warehouse.read("quarantined_records")
    assert sorted(quarantined["source_row_number"].to_list()) == [2, 3, 4, 5, 8]
    assert sorted(warehouse.read("validated_customers")["source_record_id"].to_list()) == ["10", "1004", "12"]


# --- SQL from the config: one reading statement, run where it cannot write or reach other files ---

REFUSED = {
    "COPY t TO 'out.csv'": "it does not start with SELECT or WITH",
    "SELECT * FROM t; COPY t TO 'out.csv'": "it holds more than one statement",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d": "it uses DELETE",
    "SELECT * INTO copy_of_t FROM t": "it uses INTO",
    "SELECT 'abc": "it cannot be read as SQL",
}


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
@pytest.mark.parametrize("query", list(REFUSED))
def test_config_sql_that_is_not_one_read_is_refused(kind: str, query: str, make_project, tmp_path: Path) -> None:
    path = tmp_path / f"src.{kind}"
    with duckdb.connect(str(path)) if kind == "duckdb" else sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (Id INTEGER)")
    config = make_project(files={}, sources=[csv_source(kind=kind, path=path.name, query=query, columns={})])
    with pytest.raises(SourceError, match=r"`query` must be one SELECT statement that only reads: " + REFUSED[query]):
        extract(config.sources[0], config, NOW)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("kind", "query", "error"), [
    # A SELECT that reaches the file system: DuckDB's sandbox refuses it.
    ("duckdb", "SELECT * FROM read_csv('{other}')", "file system operations are disabled"),
    ("duckdb", "SELECT Id FROM t UNION ALL SELECT * FROM '{other}'", "file system operations are disabled"),
    # SQLite authorises reading only (a pragma function is not reading rows).
    ("sqlite", "SELECT * FROM pragma_database_list", "not authorized"),
])
def test_config_sql_cannot_reach_other_files(kind: str, query: str, error: str, make_project, tmp_path: Path) -> None:
    path = tmp_path / f"src.{kind}"
    with duckdb.connect(str(path)) if kind == "duckdb" else sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (Id INTEGER)")
    other = tmp_path / "other.csv"
    other.write_text("Id\n1\n", encoding="utf-8")
    source = csv_source(kind=kind, path=path.name, query=query.format(other=other), columns={})
    config = make_project(files={}, sources=[source])
    with pytest.raises(SourceError, match=rf"query failed: .*{error}"):
        extract(config.sources[0], config, NOW)


@pytest.mark.database
@pytest.mark.parametrize(("kind", "url", "query", "function"), [
    # A superuser (as here) reads server files in a read-only transaction: only the statement check stops it.
    ("postgresql", "PG", "SELECT 1 AS n, pg_read_file('/etc/hostname') AS f", "pg_read_file"),
    ("postgresql", "PG", "SELECT 1 AS n, pg_catalog.\"PG_READ_BINARY_FILE\"('/etc/hostname') AS f", "pg_read_binary_file"),
    ("postgresql", "PG", "SELECT lo_export(1, '/tmp/cmdm_probe') AS n", "lo_export"),
    ("mysql", "MYSQL", "SELECT 1 AS n, LOAD_FILE('/etc/hostname') AS f", "load_file"),
])
def test_config_sql_cannot_reach_the_servers_files(kind: str, url: str, query: str, function: str, make_project) -> None:
    config = make_project(files={}, sources=[_server_source(kind, PG_URL if url == "PG" else MYSQL_URL, query)])
    with pytest.raises(SourceError, match=rf"only reads: it calls {function}, which reach the server's files or other servers"):
        extract(config.sources[0], config, NOW)


def _server_source(kind: str, url: str, query: str) -> dict[str, Any]:
    source = csv_source(kind=kind, url=url, query=query, id_column="n", columns={})
    source.pop("path")
    return source


@pytest.mark.database
def test_postgresql_query_runs_read_only(make_project) -> None:
    sequence = f"cmdm_seq_{uuid.uuid4().hex[:8]}"
    with pg_admin() as con:
        con.execute(f"CREATE SEQUENCE {sequence}")
        try:
            # nextval() writes: the read-only transaction refuses what the statement check cannot see.
            config = make_project(files={}, sources=[_server_source("postgresql", PG_URL, f"SELECT nextval('{sequence}') AS n")])
            with pytest.raises(SourceError, match="query failed: cannot execute nextval\\(\\) in a read-only transaction"):
                extract(config.sources[0], config, NOW)
            assert con.execute(f"SELECT last_value, is_called FROM {sequence}").fetchone() == (1, False)
        finally:
            con.execute(f"DROP SEQUENCE {sequence}")


@pytest.mark.database
def test_mysql_query_runs_read_only(make_project) -> None:
    import pymysql

    sequence = f"cmdm_seq_{uuid.uuid4().hex[:8]}"
    try:
        con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test",
                              connect_timeout=5, autocommit=True)
    except pymysql.Error as exc:
        _unreachable("MariaDB", exc)
    try:
        with con.cursor() as cursor:
            cursor.execute(f"CREATE SEQUENCE {sequence}")
        try:
            config = make_project(files={}, sources=[_server_source("mysql", MYSQL_URL, f"SELECT NEXTVAL({sequence}) AS n")])
            with pytest.raises(SourceError, match="query failed: .*READ ONLY transaction"):
                extract(config.sources[0], config, NOW)
            outfile = make_project(files={}, sources=[_server_source("mysql", MYSQL_URL, "SELECT 1 AS n INTO OUTFILE '/tmp/cmdm_probe'")])
            with pytest.raises(SourceError, match="only reads: it uses INTO"):
                extract(outfile.sources[0], outfile, NOW)
        finally:
            with con.cursor() as cursor:
                cursor.execute(f"DROP SEQUENCE {sequence}")
    finally:
        con.close()


#: A query whose result holds a value the database cannot convert: servers quote the value in their error.
VALUE_ERROR_QUERY = "SELECT CAST(Email AS INTEGER) AS Id FROM t"


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_a_value_the_database_cannot_convert_is_not_in_the_error(kind: str, make_project, tmp_path: Path) -> None:
    canary = "zebulon.canary@example.net"
    if kind == "duckdb":
        path = tmp_path / "src.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute("CREATE TABLE t AS SELECT $1 AS Email", [canary])
        source = csv_source(kind="duckdb", path=path.name, query=VALUE_ERROR_QUERY, columns={})
    else:
        table = f"cmdm_t_{uuid.uuid4().hex[:8]}"
        with pg_admin() as con:
            con.execute(f'CREATE TABLE {table} AS SELECT %s::text AS "Email"', [canary])
        source = _server_source("postgresql", PG_URL, VALUE_ERROR_QUERY.replace("Email", '"Email"').replace(" t", f" {table}"))
        source["id_column"] = "Id"
    config = make_project(files={}, sources=[source])
    try:
        with pytest.raises(SourceError, match="query failed: a value in the result does not fit its type") as failed:
            extract(config.sources[0], config, NOW)
        assert canary not in str(failed.value) and "zebulon" not in str(failed.value)
    finally:
        if kind == "postgresql":
            with pg_admin() as con:
                con.execute(f"DROP TABLE {table}")
