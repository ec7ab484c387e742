"""Decide, with DuckDB's own parser, whether a SQL text is one plain read before it runs.

This is the first of several layers (see docs/API.md): the connection that finally runs the query
is read-only, has external access off and its configuration locked, so a statement that slipped
past this check would still fail. The guard exists to refuse early, with a clear message, and to
close the gaps those layers leave on their own:

* exactly one statement, and its type (from ``extract_statements``) must be SELECT -- DESCRIBE,
  SHOW, SUMMARIZE, FROM-first and WITH queries are all SELECT to DuckDB;
* the parsed tree (``json_serialize_sql``) must hold only query nodes: DuckDB accepts DML inside a
  CTE (``WITH x AS (INSERT ... RETURNING *) SELECT ...``), which is still a "SELECT" statement;
* table functions come from an allow-list (metadata, ``range``, ``unnest``, ...): ``query()``
  would run SQL this guard never saw, ``checkpoint()`` or ``enable_logging()`` change state, and
  file readers must never be tried even though external access is off;
* a table named like a file or URL (``FROM '/etc/passwd'``, ``FROM 'https://...'``) is a
  replacement scan that reads it, so it is refused too.

No regular expression ever looks at the SQL text itself: only at names DuckDB parsed out of it.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from dango_dagster.api.errors import SqlRejected

_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}

# Table functions whose output depends only on their arguments (others read live state).
_PURE_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "generate_subscripts",
        "regexp_split_to_table",
        "json_each",
        "json_tree",
    }
)

# Table functions that only read the snapshot's catalog or compute values.
_ALLOWED_TABLE_FUNCTIONS = _PURE_TABLE_FUNCTIONS | frozenset(
    {
        "summary",
        "icu_calendar_names",
        "pg_timezone_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "duckdb_optimizers",
        "pragma_table_info",
        "pragma_show",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_version",
        "pragma_platform",
        "pragma_collations",
    }
)
# Keywords DuckDB parses as column references and binds to the clock or the session.
_SPECIAL_VALUES = frozenset(
    {
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
        "current_user",
        "current_role",
        "session_user",
        "user",
        "current_catalog",
        "current_schema",
    }
)

# Scalar functions are too many to allow-list; these name families read files, run other SQL or
# touch secrets and logs. (External access off already stops the readers; this names the reason.)
_FORBIDDEN_SCALAR = re.compile(
    r"^(read_.*|.*_scan|glob|sniff_csv|parquet_.*|query|query_table|json_execute_serialized_sql"
    r"|.*secret.*|.*checkpoint|(enable|disable)_(logging|profiling)|.*external_resource.*)$"
)
# A "table" whose name looks like a file, a glob or a URL is a replacement scan of that file.
_FILE_LIKE = re.compile(
    r"[/\\:*?]|\.(csv|tsv|txt|parquet|json|jsonl|ndjson|gz|zst|duckdb|db|sqlite|xlsx|arrow)$",
    re.IGNORECASE,
)

_PARSER = threading.local()
_CONSISTENT: frozenset[str] | None = None
_CONSISTENT_LOCK = threading.Lock()
_CACHE_MAX_CHARS = 8192


def _parser() -> duckdb.DuckDBPyConnection:
    """A private in-memory connection per thread, used only to parse (never shared across threads,
    never the pooled snapshot connections)."""
    conn = getattr(_PARSER, "conn", None)
    if conn is None:
        conn = duckdb.connect(
            ":memory:",
            config={
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "python_enable_replacements": False,
                "threads": 1,
                "lock_configuration": True,
            },
        )
        _PARSER.conn = conn
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _statement_error(exc: duckdb.Error) -> str:
    """DuckDB's message with its ``LINE n:`` pointer kept: it shows where the problem is."""
    return str(exc).strip()[:2000]


def _walk(tree: Any) -> Iterator[dict[str, Any]]:
    """Every dict in the serialized tree, iteratively (a deep tree must not hit Python's
    recursion limit)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def check_sql(sql: str) -> bool:
    """Accept ``sql`` if it is exactly one plain read, else raise ``SqlRejected`` (400 or 403).

    400 means "not valid SQL" (or not exactly one statement); 403 means valid SQL that this API
    will not run. Returns whether the answer depends on the snapshot alone (no ``now()``,
    ``random()``, ``SAMPLE``, settings or memory lookups), i.e. may be served from a cache while
    the snapshot stays the same. The verdict depends on the text alone, so verdicts for short
    texts (the same dashboard and script queries, over and over) are cached: parsing costs about
    a millisecond.
    """
    if len(sql) > _CACHE_MAX_CHARS:
        return _check_sql(sql)
    verdict = _cached_verdict(sql)
    if isinstance(verdict, tuple):
        raise SqlRejected(*verdict)
    return verdict


@functools.lru_cache(maxsize=1024)
def _cached_verdict(sql: str) -> tuple[int, str, str] | bool:
    try:
        return _check_sql(sql)
    except SqlRejected as exc:
        return (exc.status, exc.code, exc.detail)


def _check_sql(sql: str) -> bool:
    if not sql.strip():
        raise SqlRejected(400, "invalid_sql", "The SQL text is empty.")
    if "\x00" in sql:
        raise SqlRejected(400, "invalid_sql", "The SQL text contains a NUL character.")
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SqlRejected(400, "invalid_sql", "The SQL text is not valid Unicode.") from exc
    conn = _parser()
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlRejected(400, "invalid_sql", _statement_error(exc)) from exc
    if len(statements) != 1:
        raise SqlRejected(
            400,
            "invalid_sql",
            f"Send exactly one SQL statement (got {len(statements)}). Run each separately.",
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SqlRejected(
            403,
            "forbidden_sql",
            f"Only read queries (SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) are allowed; "
            f"this is a {kind.name} statement. The query API never changes the warehouse.",
        )
    return _check_tree(conn, sql)


def _check_tree(conn: duckdb.DuckDBPyConnection, sql: str) -> bool:
    """Refuse what the tree must not hold; return whether it is deterministic."""
    try:
        raw = conn.execute("SELECT json_serialize_sql($1)", [sql]).fetchone()
    except duckdb.Error as exc:  # pragma: no cover - serializer failures come back as JSON
        raise SqlRejected(400, "invalid_sql", _first_line(exc)) from exc
    tree = json.loads(raw[0]) if raw else {"error": True, "error_message": "no parse tree"}
    if tree.get("error"):
        raise SqlRejected(
            400, "invalid_sql", f"DuckDB could not analyse the query: {tree.get('error_message')}"
        )
    consistent = _consistent_functions(conn)
    deterministic = True
    for node in _walk(tree):
        node_type = node.get("type")
        if (
            isinstance(node_type, str)
            and node_type.endswith("_NODE")
            and node_type not in _QUERY_NODES
        ):
            what = node_type.removesuffix("_QUERY_NODE").removesuffix("_NODE")
            raise SqlRejected(
                403,
                "forbidden_sql",
                f"The query contains {what} (data-changing statements are not allowed, "
                "not even inside a CTE).",
            )
        if node.get("sample") is not None:
            deterministic = False
        if node_type == "TABLE_FUNCTION":
            name = _function_name(node.get("function"))
            if name not in _ALLOWED_TABLE_FUNCTIONS:
                raise SqlRejected(
                    403,
                    "forbidden_sql",
                    f"The table function {name}() is not allowed: the query API reads only the "
                    "published snapshot (no files, URLs, dynamic SQL or state changes). "
                    "Metadata functions such as duckdb_tables() and range() are allowed.",
                )
            deterministic = deterministic and name in _PURE_TABLE_FUNCTIONS
        elif node_type == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if _FILE_LIKE.search(name):
                raise SqlRejected(
                    403,
                    "forbidden_sql",
                    f"{name!r} looks like a file or URL; the query API reads only tables of the "
                    "published snapshot.",
                )
        elif node.get("class") in ("FUNCTION", "WINDOW"):
            name = str(node.get("function_name", "")).lower()
            if _FORBIDDEN_SCALAR.match(name):
                raise SqlRejected(403, "forbidden_sql", f"The function {name}() is not allowed.")
            deterministic = deterministic and name in consistent
        elif node.get("class") == "COLUMN_REF":
            names = node.get("column_names") or []
            if len(names) == 1 and str(names[0]).lower() in _SPECIAL_VALUES:
                deterministic = False  # current_date & co. parse as column references
    return deterministic


def _consistent_functions(conn: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Functions whose every overload DuckDB marks CONSISTENT (same input, same output);
    macros and anything unmarked count as not deterministic. Read once per process."""
    global _CONSISTENT
    with _CONSISTENT_LOCK:
        if _CONSISTENT is None:
            rows = conn.execute(
                "SELECT function_name, bool_and(coalesce(stability = 'CONSISTENT', false)) "
                "FROM duckdb_functions() WHERE function_type IN ('scalar', 'aggregate', 'window') "
                "GROUP BY function_name"
            ).fetchall()
            _CONSISTENT = frozenset(name.lower() for name, ok in rows if ok)
        return _CONSISTENT


def _function_name(function: Any) -> str:
    if isinstance(function, dict):
        return str(function.get("function_name", "")).lower()
    return ""
