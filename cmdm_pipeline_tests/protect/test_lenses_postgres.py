"""Lenses in the real PostgreSQL server, published as the least-privilege role docs/operations/bi-access.md
documents: each lens role reads its own lens and nothing else, and BI views on a lens survive publications.

Skips without the server (a laptop); with CI=true an unreachable server fails. Every schema, role and
table is named uniquely per test and dropped afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import pytest

from cmdm_pipeline.config import Lens, LensesTarget
from cmdm_pipeline.protect.lenses.build import build_lens, tokenise
from cmdm_pipeline.protect.lenses.postgres import erase_masters, lens_role, lens_schema, publish_postgres
from cmdm_pipeline_tests.protect.test_lenses import CONSENT, CUSTOMER_SCHEMA, GOLDEN, KEY
from cmdm_pipeline_tests.test_databases import PG_URL, pg_admin

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

    tag = uuid.uuid4().hex[:8]
    publisher = f"t{tag}_publisher"
    target = LensesTarget(url=_as(publisher), schema_prefix=f"t{tag}_lens_", role_prefix=f"t{tag}_role_")
    with pg_admin() as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        # Exactly what docs/operations/bi-access.md tells an administrator to run (a password aside).
        admin.execute(f"CREATE ROLE {publisher} LOGIN CREATEROLE")
        admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {publisher}')
        admin.execute(f"CREATE TABLE public.t{tag}_warehouse (secret text)")
        admin.execute(f"INSERT INTO public.t{tag}_warehouse VALUES ('x')")
        try:
            yield target
        finally:
            schemas = admin.execute("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", [f"t{tag}_"]).fetchall()
            for (schema,) in schemas:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            admin.execute(f"DROP TABLE public.t{tag}_warehouse")
            roles = admin.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY rolname = %s",
                                  [f"t{tag}_", publisher]).fetchall()
            for (role,) in roles:  # the publisher last: it granted the others' privileges
                admin.execute(f'DROP OWNED BY "{role}"')
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


TOKENISED_ID = Lens(name="finance", description="invoices", purpose=None,
                    columns={"master_id": "tokenise", "country": "reveal"})
MASKED_ID = Lens(name="survey", description="research", purpose=None, columns={"master_id": "mask", "country": "reveal"})


def _rows(admin, target: LensesTarget, lens: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r[0] for r in admin.execute(f'SELECT master_id FROM "{lens_schema(target, lens)}".customers ORDER BY 1').fetchall()]


def test_erasure_deletes_the_subjects_rows_from_every_lens_table_in_one_transaction(target: LensesTarget) -> None:
    import psycopg

    lenses = (MARKETING, SERVICE, TOKENISED_ID, MASKED_ID)
    publish_postgres([(lens, build_lens(GOLDEN, CONSENT, lens, CUSTOMER_SCHEMA, KEY)) for lens in lenses], target)
    tokens = {lens.name: KEY for lens in lenses}
    m1_token = tokenise(pl.Series("master_id", ["m1"]), KEY)[0]
    # A lens tokenising master_id without its token key fails, and nothing is deleted anywhere.
    with pytest.raises(ValueError, match="token key"):
        erase_masters(target, lenses, {"T-1": ["m1"]}, {"marketing": KEY})
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert "m1" in _rows(admin, target, "service") and m1_token in _rows(admin, target, "finance")

    removed = erase_masters(target, lenses, {"T-1": ["m1"], "T-2": ["m9"]}, tokens)
    service, finance, survey = (f"postgresql:{lens_schema(target, n)}.customers" for n in ("service", "finance", "survey"))
    assert removed["T-1"][service] == removed["T-1"][finance] == 1 and removed["T-1"][survey] == 4
    assert removed["T-2"] == {}  # nobody else's rows
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert _rows(admin, target, "service") == ["m2", "m3", "m4"]
        assert _rows(admin, target, "marketing") == ["m4"]
        assert m1_token not in _rows(admin, target, "finance") and len(_rows(admin, target, "finance")) == 3
        assert _rows(admin, target, "survey") == []  # a masked master id cannot be told apart: emptied
    with psycopg.connect(_as(lens_role(target, "service")), autocommit=True) as con:  # the grants are untouched
        assert con.execute(f'SELECT count(*) FROM "{lens_schema(target, "service")}".customers').fetchone() == (3,)


@pytest.mark.integration
def test_the_erasure_step_removes_the_subject_from_postgresql_before_anything_else(make_project, target: LensesTarget) -> None:  # type: ignore[no-untyped-def]
    """The run after a request fails right after its erasure step: nobody may still read the subject there."""
    import datetime as dt

    import psycopg

    from cmdm_pipeline.protect.erasure.apply import process_erasure
    from cmdm_pipeline.protect.erasure.requests import record_request
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse
    from cmdm_pipeline_tests.conftest import GOOD_CSV
    from cmdm_pipeline_tests.protect.test_lenses_job import CONSENT as JOB_CONSENT
    from cmdm_pipeline_tests.protect.test_lenses_job import EVENTS, LENSES, run

    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=JOB_CONSENT, lenses=LENSES,
                          lenses_target=target.model_dump())
    run(config.base_dir)
    store = open_warehouse(config)
    ada = store.read("customer_xref").filter(pl.col("source_record_id") == "1")["master_id"][0]
    schema = lens_schema(target, "service")
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute(f'SELECT count(*) FROM "{schema}".customers WHERE last_name = %s', ["Lovelace"]).fetchone() == (1,)
    record_request(config, request_id="T-1", master_id=ada)
    outcome = process_erasure(store, config, "run-2", dt.datetime.now(dt.UTC))
    assert outcome.log["status"].to_list() == ["erased"]
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute(f'SELECT count(*) FROM "{schema}".customers WHERE last_name = %s', ["Lovelace"]).fetchone() == (0,)
        assert admin.execute(f'SELECT count(*) FROM "{schema}".customers').fetchone() == (2,)  # the others stay
        marketing = lens_schema(target, "marketing")  # master_id tokenised there: found by its token
        assert admin.execute(f'SELECT count(*) FROM "{marketing}".customers').fetchone() == (0,)
    removed = json.loads(store.read("erasure_log")["rows_removed"][0])
    assert removed[f"postgresql:{schema}.customers"] == 1
    assert removed[f"postgresql:{marketing}.customers"] == 1


def test_a_bi_view_on_a_lens_survives_the_next_publications(target: LensesTarget) -> None:
    """Same columns: rows replaced in place under the view; other columns: refused naming the view, nothing
    changed; the view dropped: rebuilt. A removed lens's table is emptied, not dropped, while a view needs it."""
    import psycopg

    from cmdm_pipeline.protect.lenses.build import LensError

    built = [(SERVICE, build_lens(GOLDEN, None, SERVICE, CUSTOMER_SCHEMA, KEY))]
    publish_postgres(built, target)
    schema = lens_schema(target, "service")
    view = f"public.{target.schema_prefix.split('_')[0]}_view"
    with psycopg.connect(PG_URL, autocommit=True) as admin:  # a BI user's view, as an administrator makes it
        admin.execute(f'CREATE VIEW {view} AS SELECT master_id, email FROM "{schema}".customers')

    publish_postgres([(SERVICE, built[0][1].head(2))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute(f"SELECT master_id FROM {view} ORDER BY 1").fetchall() == [("m1",), ("m2",)]

    fewer = Lens(name="service", description="service desk", purpose=None, columns={"email": "reveal"})
    with pytest.raises(LensError, match=f"columns changed.*{view}") as refused:
        publish_postgres([(fewer, build_lens(GOLDEN, None, fewer, CUSTOMER_SCHEMA, KEY))], target)
    assert "@" not in str(refused.value)  # names, never values
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute(f"SELECT count(*) FROM {view}").fetchone() == (2,)
        admin.execute(f"DROP VIEW {view}")
    publish_postgres([(fewer, build_lens(GOLDEN, None, fewer, CUSTOMER_SCHEMA, KEY))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute(f'SELECT * FROM "{schema}".customers ORDER BY 1').fetchall()[0] == ("m1", GOLDEN["email"][0])
        admin.execute(f'CREATE VIEW {view} AS SELECT master_id FROM "{schema}".customers')

    publish_postgres([(MARKETING, build_lens(GOLDEN, CONSENT, MARKETING, CUSTOMER_SCHEMA, KEY))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:  # service removed from the config
        assert admin.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
        admin.execute(f"DROP VIEW {view}")
    publish_postgres([(MARKETING, build_lens(GOLDEN, CONSENT, MARKETING, CUSTOMER_SCHEMA, KEY))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is None


@pytest.mark.parametrize("attribute", ["SUPERUSER", "CREATEDB", "CREATEROLE", "BYPASSRLS"])
def test_an_existing_lens_role_with_more_than_login_is_refused(target: LensesTarget, attribute: str) -> None:
    import psycopg

    from cmdm_pipeline.protect.lenses.build import LensError

    role = lens_role(target, "service")
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN {attribute}')
    with pytest.raises(LensError, match=f"{role}.*plain reader"):
        publish_postgres([(SERVICE, build_lens(GOLDEN, None, SERVICE, CUSTOMER_SCHEMA, KEY))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [lens_schema(target, "service")]).fetchone() is None


def test_an_existing_lens_role_that_cannot_log_in_is_made_a_reader(target: LensesTarget) -> None:
    import psycopg

    role = lens_role(target, "service")
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" NOLOGIN INHERIT')
    publish_postgres([(SERVICE, build_lens(GOLDEN, None, SERVICE, CUSTOMER_SCHEMA, KEY))], target)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        assert admin.execute("SELECT rolcanlogin, rolinherit FROM pg_roles WHERE rolname = %s", [role]).fetchone() == (True, False)
