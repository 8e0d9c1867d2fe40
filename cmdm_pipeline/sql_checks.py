"""Checks of the SQL a user writes in cmdm.yaml, made when the config loads: parsed, never run.

Rule expressions, blocking rules and comparison conditions are pieces of SQL that the pipeline
splices into its own statements. Each is parsed by DuckDB's own parser (``json_serialize_sql``,
offline, in a connection that may not touch files) as the one expression of ``SELECT (...)``;
anything that changes that shape (a comment, a closing bracket and a FROM clause, a second
statement), a subquery, a table function such as ``read_text`` or ``read_csv``, a function that
reads the session or the host, or a column the records do not have, is refused with the column
or function named.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from functools import cache
from typing import Any

import duckdb

#: Scalar functions that read the database session or the host rather than the records.
_HOST_FUNCTIONS = frozenset({"current_setting", "current_query", "current_query_id", "getenv", "version",
                             "current_database", "current_schema", "current_schemas", "current_user", "user"})


class SqlCheckError(ValueError):
    """A piece of configured SQL is not a plain expression over the records' columns."""


def _connection() -> duckdb.DuckDBPyConnection:
    # A fresh one each time (a few ms): configs load in several threads of the Dagster webserver.
    return duckdb.connect(config={"enable_external_access": False})


@cache
def _scalar_functions() -> frozenset[str]:
    with _connection() as con:
        found = con.execute(
        "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN ('scalar', 'macro')"
        ).fetchall()
    return frozenset(name.lower() for (name,) in found)


def _expression_tree(sql: str) -> dict[str, Any]:
    """The parse tree of ``sql`` as one expression; :class:`SqlCheckError` if it is not exactly that."""
    with _connection() as con:
        (serialised,) = con.execute("SELECT json_serialize_sql($q)", {"q": f"SELECT ({sql})"}).fetchone()  # type: ignore[misc]
    tree = json.loads(serialised)
    if tree.get("error"):
        raise SqlCheckError(f"is not valid SQL: {tree.get('error_message', 'parse error')}")
    statements = tree["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    plain = (
        node.get("type") == "SELECT_NODE" and len(node.get("select_list", [])) == 1
        and (node.get("from_table") or {}).get("type") == "EMPTY" and not node.get("modifiers")
        and not node.get("cte_map", {}).get("map") and node.get("where_clause") is None
        and not node.get("group_expressions") and node.get("having") is None and node.get("qualify") is None
    )
    if not plain:
        raise SqlCheckError("must be one SQL expression (no comments, FROM, WHERE or second statement)")
    return node["select_list"][0]


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def check_expression(sql: str, columns: Collection[str] | None, prefixes: Collection[str] = (),
                     check_functions: bool = True) -> None:
    """Raise :class:`SqlCheckError` unless ``sql`` is one expression over ``columns`` (None: any column;
    each written as ``prefix.column`` when ``prefixes`` are given, e.g. ``l``/``r`` in a blocking rule), with
    no subquery, table function or host function; with ``check_functions`` every function must be DuckDB's."""
    unknown: list[str] = []
    unqualified: list[str] = []
    for node in _nodes(_expression_tree(sql)):
        kind = node.get("class") or node.get("type")
        if kind == "SUBQUERY" or node.get("type") in ("TABLE_FUNCTION", "BASE_TABLE"):
            raise SqlCheckError("may not contain a subquery or read a table or file")
        if kind == "FUNCTION" and not node.get("is_operator"):
            name = str(node.get("function_name", "")).lower()
            if name in _HOST_FUNCTIONS:
                raise SqlCheckError(f"may not call {name}(): it reads the session or host, not the records")
            if check_functions and name not in _scalar_functions():
                raise SqlCheckError(f"calls {name}(), which is not a DuckDB scalar function")
        if kind == "COLUMN_REF" and columns is not None:
            parts = [str(p) for p in node.get("column_names", [])]
            if prefixes and (len(parts) != 2 or parts[0] not in prefixes):
                unqualified.append(".".join(parts))
            elif parts[-1] not in columns:
                unknown.append(".".join(parts))
    if unqualified:
        raise SqlCheckError(f"names column(s) {', '.join(sorted(set(unqualified)))} without "
                            f"{' or '.join(f'{p}.' for p in sorted(prefixes))}")
    if unknown:
        raise SqlCheckError(f"names unknown column(s) {', '.join(sorted(set(unknown)))}; known: {', '.join(sorted(columns or ()))}")
