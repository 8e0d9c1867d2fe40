"""Publish lenses into PostgreSQL: one schema and one login role per lens, granted that lens only.

For each lens, in **one transaction** for all lenses (readers see the previous lenses or the new ones),
as a least-privilege user (``CREATEROLE`` and ``CREATE`` on the database, no superuser):

- role ``<role_prefix><lens>`` is created if missing, ``LOGIN NOINHERIT`` (every other attribute ``NO...``);
  an existing one with more (superuser, createdb, ...) is refused, never altered. Its password or other
  authentication is set once by a database administrator; the pipeline never handles it;
- schema ``<schema_prefix><lens>`` is created if missing, owned by the pipeline's user, with every
  privilege revoked from ``PUBLIC``;
- table ``customers`` in it gets the new rows (COPY): with the same columns as before it is emptied and
  refilled in place, so BI views built on it keep working; with other columns it is dropped and rebuilt,
  unless a view depends on it, which fails the publication naming the views (a user's view is never dropped).
  The role gets ``USAGE`` on the schema and ``SELECT`` on that table: nothing else. Other lenses' schemas
  and the database's other tables are not granted to it (PUBLIC holds no privilege on them unless an
  administrator granted one).

Schemas this pipeline made for lenses no longer configured (same prefix, marked by their comment) are
dropped in the same transaction (only emptied while a view depends on their table); their roles stay,
with no privileges left.

**Erasure** (:func:`erase_masters`) does not wait for the next publication: the erasure step deletes the
erased subjects' rows from every lens table, in one transaction for all lenses and subjects, before it
touches anything else. Rows are found by ``master_id`` as the lens shows it: as it is, or tokenised with
the lens's token key; a lens that masks ``master_id`` cannot tell its rows apart, so its table is emptied
(the lens step republishes it). Schemas of lenses no longer configured are dropped, as the publisher would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql

from cmdm_pipeline.config import Lens, LensesTarget
from cmdm_pipeline.protect.lenses.build import LENS_TABLE, LensError, tokenise, treatments

#: Comment that marks a schema as made by this pipeline for a lens (only those are ever dropped).
SCHEMA_MARK = "cmdm_pipeline lens"
_COPY_ROWS = 100_000


@dataclass(frozen=True)
class PostgresLens:
    name: str
    schema: str
    role: str
    rows: int


def lens_schema(target: LensesTarget, lens_name: str) -> str:
    return f"{target.schema_prefix}{lens_name}"


def lens_role(target: LensesTarget, lens_name: str) -> str:
    return f"{target.role_prefix}{lens_name}"


def publish_postgres(built: Sequence[tuple[Lens, pl.DataFrame]], target: LensesTarget) -> list[PostgresLens]:
    """Rebuild every lens's schema, table and grants in one transaction; drop schemas of removed lenses."""
    published = []
    with psycopg.connect(target.resolved_url(), connect_timeout=15) as con:
        with con.transaction():
            for lens, frame in built:
                published.append(_publish(con, lens, frame, target))
            _drop_stale(con, target, {p.schema for p in published})
    return published


def _publish(con: psycopg.Connection, lens: Lens, frame: pl.DataFrame, target: LensesTarget) -> PostgresLens:
    schema, role = lens_schema(target, lens.name), lens_role(target, lens.name)
    s, r, t = sql.Identifier(schema), sql.Identifier(role), sql.Identifier(schema, LENS_TABLE)
    _ensure_reader_role(con, role)
    con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
    con.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(s, sql.Literal(f"{SCHEMA_MARK} {lens.name}, rebuilt every run")))
    con.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(s))
    wanted = [(name, _pg_type(name, dtype)) for name, dtype in frame.schema.items()]
    existing = _columns(con, schema)
    if existing == wanted:
        # Same columns: replace the rows in place, so views BI users built on the table keep working.
        # TRUNCATE, not DELETE: the old rows' file is removed at commit, not left for VACUUM.
        con.execute(sql.SQL("TRUNCATE {}").format(t))
    else:
        if existing is not None:
            views = dependent_views(con, schema)
            if views:
                raise LensError(
                    f"lens {lens.name!r}: its columns changed, and PostgreSQL view(s) {', '.join(views)} depend on "
                    f"{schema}.{LENS_TABLE}; drop or change them (the pipeline never drops a view it did not make) "
                    "and run again: nothing was published"
                )
            con.execute(sql.SQL("DROP TABLE {}").format(t))
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(pg_type)) for n, pg_type in wanted)
        con.execute(sql.SQL("CREATE TABLE {} ({})").format(t, columns))
    con.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(t, sql.Literal(lens.description)))
    text = _copyable(frame)
    with con.cursor() as cursor, cursor.copy(
        sql.SQL("COPY {} FROM STDIN (FORMAT csv, NULL '\\N')").format(t)
    ) as copy:
        for chunk in text.iter_slices(_COPY_ROWS):
            copy.write(chunk.write_csv(include_header=False, null_value="\\N"))
    con.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(t))
    con.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
    con.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(t, r))
    return PostgresLens(lens.name, schema, role, frame.height)


def _ensure_reader_role(con: psycopg.Connection, role: str) -> None:
    """Create the lens role as a plain reader, or check that an existing one is one.

    A role with ``CREATEROLE`` may create roles (their other attributes default to ``NO...``) but, before
    PostgreSQL 16, may not even *name* ``SUPERUSER``, ``REPLICATION`` or ``BYPASSRLS`` in an ``ALTER
    ROLE``: so nothing is altered unless needed, and a powerful role is refused, never silently kept."""
    found = con.execute(
        "SELECT rolcanlogin, rolinherit, rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls "
        "FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    r = sql.Identifier(role)
    if found is None:
        con.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(r))
        return
    can_login, inherits, powerful = found
    if powerful:
        raise LensError(f"PostgreSQL role {role!r} exists with more than LOGIN (superuser, createdb, createrole, "
                        "replication or bypassrls): a lens role must be a plain reader; an administrator must "
                        f"ALTER ROLE it to NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS or drop it")
    if not can_login or inherits:
        con.execute(sql.SQL("ALTER ROLE {} LOGIN NOINHERIT").format(r))


def _columns(con: psycopg.Connection, schema: str) -> list[tuple[str, str]] | None:
    """The lens table's columns and types (as ``format_type`` names them), or None without a table."""
    if not _has_table(con, schema):
        return None
    rows = con.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", [schema, LENS_TABLE]).fetchall()
    return [(name, pg_type) for name, pg_type in rows]


def dependent_views(con: psycopg.Connection, schema: str) -> list[str]:
    """Views and materialised views (schema-qualified, sorted) built on the lens table of ``schema``."""
    rows = con.execute(
        "SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(v.relname) FROM pg_depend d "
        "JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class "
        "JOIN pg_namespace n ON n.oid = v.relnamespace "
        "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.refobjid = (quote_ident(%s) || '.' || quote_ident(%s))::regclass AND v.oid <> d.refobjid ORDER BY 1",
        [schema, LENS_TABLE]).fetchall()
    return [name for (name,) in rows]


def erase_masters(
    target: LensesTarget, lenses: Sequence[Lens], masters: Mapping[str, Sequence[str]], token_keys: Mapping[str, bytes]
) -> dict[str, dict[str, int]]:
    """Delete the rows of each subject's ``masters`` (subject -> master ids) from every lens table in one
    transaction; rows deleted per subject and table (``postgresql:<schema>.customers``)."""
    removed: dict[str, dict[str, int]] = {subject: {} for subject in masters}
    with psycopg.connect(target.resolved_url(), connect_timeout=15) as con:
        with con.transaction():
            _drop_stale(con, target, {lens_schema(target, lens.name) for lens in lenses})
            for lens in lenses:
                schema = lens_schema(target, lens.name)
                if not _has_table(con, schema):
                    continue  # never published there
                for subject, ids in masters.items():
                    count = _delete_rows(con, lens, sql.Identifier(schema, LENS_TABLE), ids, token_keys.get(lens.name))
                    if count:
                        removed[subject][f"postgresql:{schema}.{LENS_TABLE}"] = count
    return removed


def _has_table(con: psycopg.Connection, schema: str) -> bool:
    found = con.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", [schema, LENS_TABLE])
    return found.fetchone() is not None


def _delete_rows(con: psycopg.Connection, lens: Lens, table: sql.Identifier, masters: Sequence[str],
                 token_key: bytes | None) -> int:
    if not masters:
        return 0
    treatment = treatments(lens)["master_id"]
    if treatment == "mask":
        return con.execute(sql.SQL("DELETE FROM {}").format(table)).rowcount
    ids = pl.Series("master_id", list(masters), dtype=pl.String)
    if treatment == "tokenise":
        if token_key is None:
            raise ValueError(f"lens {lens.name!r} tokenises master_id but no token key was given")
        ids = tokenise(ids, token_key)
    return con.execute(sql.SQL("DELETE FROM {} WHERE master_id = ANY(%s)").format(table), [ids.to_list()]).rowcount


def _drop_stale(con: psycopg.Connection, target: LensesTarget, keep: set[str]) -> None:
    rows = con.execute(
        "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s) "
        "AND starts_with(coalesce(obj_description(oid, 'pg_namespace'), ''), %s)",
        [target.schema_prefix, SCHEMA_MARK],
    ).fetchall()
    for (schema,) in rows:
        if schema in keep:
            continue
        if _has_table(con, schema) and dependent_views(con, schema):
            # A user's view depends on it: never dropped with it. The rows go; the empty table stays until
            # the views are dropped (the next publication then drops the schema).
            con.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, LENS_TABLE)))
        else:
            con.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _pg_type(name: str, dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "text"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):  # as format_type() names them, to compare with the table's columns
        return "timestamp with time zone" if dtype.time_zone else "timestamp without time zone"
    if dtype in (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32):
        return "bigint"
    if dtype == pl.UInt64:
        return "numeric"
    if dtype in (pl.Float32, pl.Float64):
        return "double precision"
    if isinstance(dtype, pl.List):
        return "text[]"
    raise ValueError(f"column {name!r}: no PostgreSQL type for {dtype}")


def _copyable(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists as PostgreSQL array literals (``{"a","b"}``); everything else as Polars writes CSV."""
    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    if not lists:
        return frame
    quoted = pl.element().cast(pl.String).str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
    return frame.with_columns([
        pl.concat_str(pl.lit("{"), pl.col(c).list.eval(pl.concat_str(pl.lit('"'), quoted, pl.lit('"'))).list.join(","),
                      pl.lit("}")).alias(c)
        for c in lists
    ])
