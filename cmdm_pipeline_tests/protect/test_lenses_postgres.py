"""Lenses in the real PostgreSQL server: each lens role reads its own lens and nothing else.

Skips without the server (a laptop); with CI=true an unreachable server fails. Every schema, role and
table is named uniquely per test and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import pytest

from cmdm_pipeline.config import Lens, LensesTarget
from cmdm_pipeline.protect.lens_postgres import lens_role, lens_schema, publish_postgres
from cmdm_pipeline.protect.lenses import build_lens
from cmdm_pipeline_tests.protect.test_lenses import CONSENT, CUSTOMER_SCHEMA, GOLDEN, KEY

PG_URL = os.environ.get("CMDM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.database

MARKETING = Lens(name="marketing", description="campaigns", purpose="marketing",
                 columns={"email": "mask", "phone": "tokenise", "country": "reveal"})
SERVICE = Lens(name="service", description="service desk", purpose=None,
               columns={"first_name": "reveal", "email": "reveal", "date_of_birth": "reveal"})


def _as(role: str) -> str:
    """The test server's URL, logging in as ``role`` (the test server trusts local connections)."""
    parts = urlsplit(PG_URL)
    host = parts.hostname or "127.0.0.1"
    return urlunsplit((parts.scheme, f"{role}@{host}:{parts.port or 5432}", parts.path, "", ""))


@pytest.fixture
def target() -> Iterator[LensesTarget]:
    import psycopg

    tag = uuid.uuid4().hex[:8]
    target = LensesTarget(url=PG_URL, schema_prefix=f"t{tag}_lens_", role_prefix=f"t{tag}_role_")
    try:
        admin = psycopg.connect(PG_URL, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL test server not reachable ({type(exc).__name__}); this test needs it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " and CI provides it")
        pytest.skip(message)
    with admin:
        admin.execute(f"CREATE TABLE public.t{tag}_warehouse (secret text)")
        admin.execute(f"INSERT INTO public.t{tag}_warehouse VALUES ('x')")
        try:
            yield target
        finally:
            schemas = admin.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [f"t{tag}_"]).fetchall()
            for (schema,) in schemas:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            admin.execute(f"DROP TABLE public.t{tag}_warehouse")
            roles = admin.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [f"t{tag}_"]).fetchall()
            for (role,) in roles:
                admin.execute(f'DROP ROLE "{role}"')


def test_each_lens_role_reads_its_lens_and_nothing_else(target: LensesTarget) -> None:
    import psycopg

    built = [(lens, build_lens(GOLDEN, CONSENT, lens, CUSTOMER_SCHEMA, KEY)) for lens in (MARKETING, SERVICE)]
    published = publish_postgres(built, target)
    assert [(p.name, p.rows) for p in published] == [("marketing", 2), ("service", 4)]
    marketing, service = (lens_schema(target, n) for n in ("marketing", "service"))
    warehouse_table = f"public.{target.schema_prefix.split('_')[0]}_warehouse"

    with psycopg.connect(_as(lens_role(target, "marketing")), autocommit=True) as con:
        rows = con.execute(f'SELECT email, country, consent_channels FROM "{marketing}".customers ORDER BY master_id').fetchall()
        assert rows == [("a***@l***.org", "GB", ["email", "sms"]), ("g***@e***.com", "US", ["email"])]
        for forbidden in (f'"{service}".customers', warehouse_table):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(f"SELECT * FROM {forbidden}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(f'CREATE TABLE "{marketing}".mine (x int)')

    with psycopg.connect(_as(lens_role(target, "service")), autocommit=True) as con:
        rows = con.execute(f'SELECT master_id, email, date_of_birth FROM "{service}".customers ORDER BY master_id').fetchall()
        assert [r[1] for r in rows] == GOLDEN["email"].to_list()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(f'SELECT * FROM "{marketing}".customers')

    # The next run rebuilds in one transaction; a lens no longer configured loses its schema.
    smaller = [(SERVICE, built[1][1].head(1))]
    publish_postgres(smaller, target)
    with psycopg.connect(_as(lens_role(target, "service")), autocommit=True) as con:
        assert con.execute(f'SELECT count(*) FROM "{service}".customers').fetchone() == (1,)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [marketing]).fetchone() is None
        privileges = admin.execute(
            "SELECT table_schema, table_name FROM information_schema.role_table_grants WHERE grantee = %s",
            [lens_role(target, "service")]).fetchall()
        assert privileges == [(service, "customers")]


def test_a_failing_publish_leaves_the_previous_lens(target: LensesTarget) -> None:
    import psycopg

    built = [(SERVICE, build_lens(GOLDEN, None, SERVICE, CUSTOMER_SCHEMA, KEY))]
    publish_postgres(built, target)
    broken = built[0][1].with_columns(pl.lit(b"\x00").alias("blob"))  # no PostgreSQL type: fails mid-way
    with pytest.raises(ValueError, match="no PostgreSQL type"):
        publish_postgres([(SERVICE, broken)], target)
    with psycopg.connect(_as(lens_role(target, "service")), autocommit=True) as con:
        assert con.execute(f'SELECT count(*) FROM "{lens_schema(target, "service")}".customers').fetchone() == (4,)


@pytest.mark.integration
def test_the_job_publishes_each_lens_into_postgresql(make_project, target: LensesTarget) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from cmdm_pipeline_tests.conftest import GOOD_CSV
    from cmdm_pipeline_tests.protect.test_lenses_job import CONSENT, EVENTS, LENSES, PERSONAL, run

    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=CONSENT, lenses=LENSES,
                          lenses_target=target.model_dump())
    _, said = run(config.base_dir)
    assert lens_schema(target, "service") in said
    for value in PERSONAL:
        assert value not in said, value
    with psycopg.connect(_as(lens_role(target, "service")), autocommit=True) as con:
        rows = con.execute(f'SELECT last_name FROM "{lens_schema(target, "service")}".customers ORDER BY 1').fetchall()
        assert rows == [("Hopper",), ("Lovelace",), ("Turing",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            con.execute(f'SELECT * FROM "{lens_schema(target, "marketing")}".customers')
