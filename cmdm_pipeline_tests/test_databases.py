"""Database sources against the real PostgreSQL and MariaDB servers of the test machines.

Without those servers (a user's laptop) these tests skip, saying why; in CI (CI=true) an
unreachable server is a failure, because there the servers are part of the test bed.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from cmdm_pipeline.stages.extract import SourceError, extract
from cmdm_pipeline_tests.conftest import NOW, csv_source

PG_URL = os.environ.get("CMDM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("CMDM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

pytestmark = pytest.mark.database

ROWS = [
    (1, "Ada", "Lovelace", "Ada@Example.org", dt.date(1985, 12, 10), 9),
    (2, "Zoë", "Brontë", None, None, 10),
    (3, "Alan", "Turing", "alan@example.org", dt.date(1992, 6, 23), None),
]
COLUMNS = {"first": "first_name", "last": "last_name", "email": "email", "born": "date_of_birth", "score": "nps_score"}


def _unreachable(server: str, exc: Exception) -> None:
    message = f"{server} test server not reachable ({type(exc).__name__}); these tests need it"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " and CI provides it")
    pytest.skip(message)


def pg_admin() -> Any:
    """An autocommit connection to the test PostgreSQL as its superuser (skips, or fails on CI, without it)."""
    import psycopg

    try:
        return psycopg.connect(PG_URL, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        _unreachable("PostgreSQL", exc)


@pytest.fixture
def pg_table() -> Iterator[str]:
    name = f"cmdm_src_{uuid.uuid4().hex[:8]}"
    with pg_admin() as con:
        con.execute(f'CREATE TABLE {name} (id integer primary key, "first" text, "last" text, email text, born date, score integer)')
        with con.cursor() as cur:
            cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
        yield name
        con.execute(f"DROP TABLE {name}")


@pytest.fixture
def mysql_table() -> Iterator[str]:
    import pymysql

    name = f"cmdm_src_{uuid.uuid4().hex[:8]}"
    try:
        con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test",
                              charset="utf8mb4", connect_timeout=5, autocommit=True)
    except pymysql.Error as exc:
        _unreachable("MariaDB", exc)
    try:
        with con.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} (id int primary key, `first` varchar(50), `last` varchar(50), email varchar(100), born date, score int) CHARACTER SET utf8mb4")
            cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s)", ROWS)
        yield name
        with con.cursor() as cur:
            cur.execute(f"DROP TABLE {name}")
    finally:
        con.close()


def _source(kind: str, url: str, **where: str) -> dict[str, object]:
    source = csv_source(kind=kind, url=url, id_column="id", columns=COLUMNS, date_formats=["%Y-%m-%d"], **where)
    source.pop("path")
    return source


def _expected_text() -> list[list[str | None]]:
    return [[str(r[0]), r[1], r[2], r[3], r[4].isoformat() if r[4] else None, None if r[5] is None else str(r[5])] for r in ROWS]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_table_source_reads_every_row_as_text(kind: str, make_project, request) -> None:
    table = request.getfixturevalue("pg_table" if kind == "postgresql" else "mysql_table")
    config = make_project(files={}, sources=[_source(kind, PG_URL if kind == "postgresql" else MYSQL_URL, table=table)])
    raw = extract(config.sources[0], config, NOW)
    got = raw.sort("source_record_id").select("id", "first", "last", "email", "born", "score").rows()
    assert [list(r) for r in got] == _expected_text()
    assert raw["source_system"].unique().to_list() == ["crm"]


def test_query_source_postgresql(pg_table: str, make_project) -> None:
    query = f'SELECT id, "first", "last", email, born, score FROM {pg_table} WHERE score >= 10'
    config = make_project(files={}, sources=[_source("postgresql", PG_URL, query=query)])
    raw = extract(config.sources[0], config, NOW)
    assert raw["first"].to_list() == ["Zoë"]


def test_query_source_mysql(mysql_table: str, make_project) -> None:
    query = f"SELECT id, `first`, `last`, email, born, score FROM {mysql_table} WHERE born IS NULL"
    config = make_project(files={}, sources=[_source("mysql", MYSQL_URL, query=query)])
    assert extract(config.sources[0], config, NOW)["last"].to_list() == ["Brontë"]


@pytest.mark.parametrize(
    ("kind", "url", "fixture", "error"),
    [
        ("postgresql", PG_URL, "pg_table", "query failed"),
        ("mysql", MYSQL_URL, "mysql_table", "query failed"),
        ("postgresql", "postgresql://postgres@127.0.0.1:1/test", None, "cannot connect"),
        ("mysql", "mysql://root:secret@127.0.0.1:1/test", None, "cannot connect"),
    ],
)
def test_database_errors_name_the_source_without_secrets(kind, url, fixture, error, make_project, request) -> None:  # type: ignore[no-untyped-def]
    if fixture:
        request.getfixturevalue(fixture)
    config = make_project(files={}, sources=[_source(kind, url, table="no_such_table")])
    with pytest.raises(SourceError) as caught:
        extract(config.sources[0], config, NOW)
    message = str(caught.value)
    assert message.startswith(f"source 'crm' ({kind}://127.0.0.1:")
    assert error in message
    assert "secret" not in message


def test_database_rows_flow_through_the_gate(pg_table: str, make_project) -> None:
    from cmdm_pipeline.stages.standardise import standardise
    from cmdm_pipeline.stages.validate import validate

    config = make_project(files={}, sources=[_source("postgresql", PG_URL, table=pg_table)])
    source = config.sources[0]
    validated, quarantined = validate(standardise(extract(source, config, NOW), source, config),
                                      config.customer_schema, "r", NOW.date())
    assert quarantined.height == 0
    assert validated.sort("source_record_id")["email"].to_list() == ["ada@example.org", None, "alan@example.org"]
    assert validated.filter(pl.col("source_record_id") == "1")["nps_score"].to_list() == [9.0]
