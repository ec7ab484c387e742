"""Hostile SQL is refused (400/403) and never executed; legitimate analytics all work.

Both corpora go through a real ``dango-dagster api serve`` on a real published snapshot.
"Never executed" is checked by its side effects: files a COPY/EXPORT/ATTACH would create,
the snapshot's data and the connection's locked settings, all unchanged afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ApiServer, audit_for, served_project

LEAK_DIR_TOKEN = "__LEAK__"

HOSTILE: list[tuple[str, str]] = [
    ("multi", "select 1; select 2"),
    ("multi-drop", "select 1; drop table marts.fct_daily_sales"),
    ("drop", "drop table marts.fct_daily_sales"),
    ("delete", "delete from marts.fct_daily_sales"),
    ("insert", "insert into marts.fct_daily_sales values (date '2030-01-01', 1, 1)"),
    ("update", "update marts.fct_daily_sales set revenue = 0"),
    ("ctas", "create table marts.stolen as select * from marts.fct_daily_sales"),
    ("temp-table", "create temp table t as select 1"),
    ("macro", "create macro m(a) as a"),
    (
        "cte-insert",
        "with x as (insert into marts.dim_customers values (1, 'x') returning *) select * from x",
    ),
    (
        "cte-delete",
        "with d as (delete from marts.fct_daily_sales returning *) select count(*) from d",
    ),
    ("read_csv", "select * from read_csv('/etc/passwd')"),
    ("read_csv_auto", "select * from read_csv_auto('/etc/hostname')"),
    ("read_parquet", "select * from read_parquet('/tmp/*.parquet')"),
    ("read_json", "select * from read_json('/etc/os-release')"),
    ("read_text", "select content from read_text('/etc/passwd')"),
    ("read_blob", "select * from read_blob('/etc/passwd')"),
    ("glob", "select * from glob('/etc/*')"),
    ("sniff_csv", "select * from sniff_csv('/etc/passwd')"),
    ("parquet_meta", "select * from parquet_metadata('/tmp/x.parquet')"),
    ("replacement-scan", "from '/etc/passwd'"),
    ("replacement-csv", "select * from 'secrets.csv'"),
    ("http", "select * from 'https://example.com/data.csv'"),
    ("s3", "select * from read_parquet('s3://bucket/x.parquet')"),
    ("reader-in-subquery", "select 1 where exists (select * from read_text('/etc/passwd'))"),
    ("query-fn", "select * from query('select 1')"),
    ("query_table", "select * from query_table('marts.fct_daily_sales')"),
    ("exec-serialized", "select json_execute_serialized_sql(json_serialize_sql('select 1'))"),
    ("checkpoint-fn", "select * from checkpoint()"),
    ("secrets", "select * from duckdb_secrets()"),
    ("attach", f"attach '{LEAK_DIR_TOKEN}/attached.duckdb' as x"),
    ("attach-memory", "attach ':memory:' as scratch"),
    ("detach", "detach warehouse"),
    ("copy-to", f"copy marts.fct_daily_sales to '{LEAK_DIR_TOKEN}/leak.csv'"),
    ("copy-query", f"copy (select 1) to '{LEAK_DIR_TOKEN}/leak.parquet' (format parquet)"),
    ("copy-from", "copy marts.dim_customers from '/etc/passwd'"),
    ("export", f"export database '{LEAK_DIR_TOKEN}/exported'"),
    ("install", "install httpfs"),
    ("force-install", "force install httpfs"),
    ("load", "load httpfs"),
    ("set", "set enable_external_access = true"),
    ("set-threads", "set threads = 64"),
    ("set-global", "set global lock_configuration = false"),
    ("reset", "reset memory_limit"),
    ("pragma", "pragma memory_limit = '64GB'"),
    ("pragma-profiling", "pragma enable_profiling"),
    ("call", "call pragma_version()"),
    ("checkpoint", "checkpoint"),
    ("vacuum", "vacuum"),
    ("use", "use memory"),
    ("begin", "begin transaction"),
    ("prepare", "prepare p as select 1"),
    ("secret", "create secret (type s3, key_id 'a', secret 'b')"),
    ("explain", "explain analyze select 1"),
    ("pivot-multi", "pivot raw_shop.orders on channel using sum(amount)"),
    ("comment-hidden", "/* select */ drop table marts.fct_daily_sales"),
    ("comment-semicolon", "select 1 /* ; */ ; drop table marts.fct_daily_sales"),
    ("line-comment", "-- select\ndrop table marts.fct_daily_sales"),
    ("fullwidth-select", "ｓｅｌｅｃｔ 1"),
    ("fullwidth-semicolon", "select 1；drop table marts.fct_daily_sales"),
    ("zero-width", "sel\u200bect 1"),
    ("zero-width-semi", "select 1\u200b; drop table marts.fct_daily_sales"),
    ("rtl-override", "select '\u202e' ; drop table marts.fct_daily_sales"),
    ("nul", "select 1\x00; drop table marts.fct_daily_sales"),
    ("lone-surrogate", "select '\ud800'"),
    ("empty", "   "),
    ("comment-only", "-- nothing"),
]

LEGIT: list[tuple[str, str]] = [
    ("simple", "select * from marts.fct_daily_sales order by day limit 5"),
    (
        "cte",
        "with daily as (select day, revenue from marts.fct_daily_sales) "
        "select date_trunc('month', day) as m, sum(revenue) from daily group by 1 order by 1",
    ),
    (
        "union",
        "select channel, count(*) from raw_shop.orders group by channel "
        "union all select 'total', count(*) from raw_shop.orders",
    ),
    (
        "window",
        "select day, revenue, sum(revenue) over (order by day rows between 6 preceding "
        "and current row) as r7 from marts.fct_daily_sales order by day",
    ),
    (
        "qualify",
        "select customer_id, sum(amount) s from raw_shop.orders group by customer_id "
        "qualify rank() over (order by s desc) <= 3",
    ),
    ("info-schema", "select table_schema, table_name from information_schema.tables order by 1, 2"),
    ("duckdb_tables", "select schema_name, table_name, estimated_size from duckdb_tables()"),
    (
        "duckdb_columns",
        "select column_name from duckdb_columns() where table_name = 'fct_daily_sales'",
    ),
    ("from-first", "from marts.fct_daily_sales select day, orders where orders > 0 limit 3"),
    ("describe", "describe marts.fct_daily_sales"),
    ("show", "show all tables"),
    ("summarize", "summarize marts.dim_customers"),
    ("view", "select * from staging.stg_orders limit 3"),
    ("range", "select * from range(5)"),
    ("unnest", "select unnest([1, 2, 3]) as n"),
    (
        "recursive",
        "with recursive r(n) as (select 1 union all select n + 1 from r where n < 10) "
        "select sum(n) from r",
    ),
    (
        "pivot-in",
        "pivot (select channel, amount from raw_shop.orders) on channel "
        "in ('web', 'store') using sum(amount)",
    ),
    ("list-agg", "select list(customer_id order by customer_id) from marts.dim_customers"),
    ("trailing-semicolon", "select count(*) from marts.dim_customers;"),
    ("comment", "-- monthly revenue\nselect count(*) from marts.fct_daily_sales /* ok */"),
    ("unicode", "select 'ünïcödé ✓' as text"),
    ("table-info", "select * from pragma_table_info('marts.fct_daily_sales')"),
    ("catalog", "select current_database(), current_schema()"),
    ("three-part", "select count(*) from warehouse.marts.fct_daily_sales"),
    ("values", "values (1, 'a'), (2, 'b')"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str, Path]]:
    root = tmp_path_factory.mktemp("api-sql") / "project"
    with served_project(root, "sql-tests") as (server, key):
        leak_dir = root / "leak"
        leak_dir.mkdir()
        yield server, key, leak_dir


def _snapshot_digest(root: Path) -> str:
    path = root / ".dango" / "published" / "warehouse.duckdb"
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("label", "sql"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_sql_is_refused(env: tuple[ApiServer, str, Path], label: str, sql: str) -> None:
    server, key, leak_dir = env
    sql = sql.replace(LEAK_DIR_TOKEN, str(leak_dir))
    response = server.query(sql, key)
    assert response.status_code in (400, 403), (label, response.status_code, response.text)
    body = response.json()
    assert body["error"] in ("invalid_sql", "forbidden_sql")
    assert body["detail"]
    line = audit_for(server.project, body["request_id"])
    assert line["outcome"] == body["error"]
    assert line["status"] == response.status_code


def test_hostile_corpus_left_no_trace(env: tuple[ApiServer, str, Path]) -> None:
    """Run after the corpus (same module): nothing was written, attached or reconfigured."""
    server, key, leak_dir = env
    before = _snapshot_digest(server.project)
    for _, sql in HOSTILE:
        server.query(sql.replace(LEAK_DIR_TOKEN, str(leak_dir)), key)
    assert list(leak_dir.iterdir()) == []
    assert _snapshot_digest(server.project) == before
    checks = {
        "select count(*) from marts.fct_daily_sales": [[90]],
        "select count(*) from marts.dim_customers": [[97]],
        "select database_name from duckdb_databases() where not internal order by 1": [
            ["memory"],
            ["warehouse"],
        ],
        "select current_setting('enable_external_access')": [[False]],
        "select current_setting('lock_configuration')": [[True]],
        "select current_setting('threads')": [[2]],
        "select current_setting('memory_limit')": [["953.6 MiB"]],  # api.memory_limit: 1GB
        "select current_setting('autoload_known_extensions')": [[False]],
        "select count(*) from duckdb_tables() where temporary": [[0]],
    }
    # Every pooled connection must be clean, so ask more times than there are connections.
    for _ in range(6):
        for sql, expected in checks.items():
            response = server.query(sql, key)
            assert response.status_code == 200, response.text
            assert response.json()["rows"] == expected, sql


@pytest.mark.parametrize(("label", "sql"), LEGIT, ids=[item[0] for item in LEGIT])
def test_legitimate_analytics_work(env: tuple[ApiServer, str, Path], label: str, sql: str) -> None:
    server, key, _ = env
    response = server.query(sql, key)
    assert response.status_code == 200, (label, response.text)
    body = response.json()
    assert body["row_count"] == len(body["rows"]) > 0
    assert len(body["columns"]) == len(body["column_types"]) == len(body["rows"][0])
    assert audit_for(server.project, body["request_id"])["outcome"] == "ok"
