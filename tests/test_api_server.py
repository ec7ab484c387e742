"""The query API end to end: answers, limits, keys, audit, snapshots, against a real server."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from api_support import (
    ApiServer,
    audit_for,
    audit_lines,
    create_key,
    publish_snapshot,
    run_cli,
    served_project,
    write_project,
)

from dango_dagster.config import load_config

RUNAWAY = "select count(*) from range(100000000) a, range(100000000) b where a.range + b.range = 7"
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    root = tmp_path_factory.mktemp("api-server") / "project"
    settings = {"query_timeout_seconds": TIMEOUT_S, "query_max_rows": 100, "max_sql_bytes": 4000}
    with served_project(root, "server-tests", **settings) as env:
        yield env


def test_query_answers_rows_columns_and_snapshot_time(env: tuple[ApiServer, str]) -> None:
    server, key = env
    response = server.query("select * from marts.fct_daily_sales order by day limit 3", key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["day", "orders", "revenue"]
    assert body["column_types"] == ["DATE", "BIGINT", "DECIMAL(18,2)"]
    assert [row[0] for row in body["rows"]] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert body["row_count"] == 3 and body["truncated"] is False
    assert body["elapsed_ms"] > 0
    published = load_config(server.project).published_snapshot_path
    mtime = dt.datetime.fromtimestamp(published.stat().st_mtime, dt.UTC)
    assert body["snapshot_at"] == mtime.isoformat(timespec="seconds")
    line = audit_for(server.project, body["request_id"])
    assert line["outcome"] == "ok" and line["status"] == 200 and line["rows"] == 3
    assert line["key_name"] == "server-tests" and line["key_id"].startswith("k_")
    assert line["sql"].startswith("select * from marts.fct_daily_sales")
    assert len(line["sql_sha256"]) == 64 and line["client"] == "127.0.0.1"


def test_row_limit_truncates_and_says_so(env: tuple[ApiServer, str]) -> None:
    server, key = env
    body = server.query("select * from raw_shop.orders", key).json()
    assert body["row_count"] == 100 and body["truncated"] is True and body["max_rows"] == 100
    exact = server.query("select * from raw_shop.orders limit 100", key).json()
    assert exact["row_count"] == 100 and exact["truncated"] is False
    fewer = server.query("select * from raw_shop.orders", key, max_rows=7).json()
    assert fewer["row_count"] == 7 and fewer["truncated"] is True
    capped = server.query("select * from raw_shop.orders", key, max_rows=10**6).json()
    assert capped["max_rows"] == 100, "a client can never raise the server's limit"


def test_every_duckdb_type_comes_back_as_json(env: tuple[ApiServer, str]) -> None:
    server, key = env
    sql = (
        "select 12.50::decimal(10,2) d, 'nan'::double n, 'inf'::float f, "
        "'6f1c2a7e-6f4a-4b43-9d51-2f3b5c1e2d3a'::uuid u, '\\x00\\xff'::blob b, "
        "interval 1 day + interval 2 hours i, timestamptz '2024-05-01 12:00:00+00' tz, "
        "time '13:14:15' t, [1, 2] l, {'a': 1, 'b': [true]} s, map([1], ['x']) m, "
        "170141183460469231731687303715884105727::hugeint h, null::int z"
    )
    response = server.query(sql, key)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [
        [
            12.5,
            None,
            None,
            "6f1c2a7e-6f4a-4b43-9d51-2f3b5c1e2d3a",
            "AP8=",
            "P1DT7200S",
            "2024-05-01T12:00:00+00:00",
            "13:14:15",
            [1, 2],
            {"a": 1, "b": [True]},
            {"1": "x"},
            170141183460469231731687303715884105727,
            None,
        ]
    ]


def test_deterministic_answers_are_cached_per_snapshot(env: tuple[ApiServer, str]) -> None:
    server, key = env
    sql = "select count(*), sum(orders) from marts.fct_daily_sales where orders > 0"
    first, second = (server.query(sql, key).json() for _ in range(2))
    assert first["cached"] is False and second["cached"] is True
    assert first["rows"] == second["rows"] and first["columns"] == second["columns"]
    assert audit_for(server.project, second["request_id"])["cached"] is True
    assert server.query(sql, key, max_rows=5).json()["cached"] is False, "row limit is in the key"
    for volatile in ("select now()::varchar", "select random()", "select current_date"):
        answers = [server.query(volatile, key).json() for _ in range(2)]
        assert [a["cached"] for a in answers] == [False, False], volatile


def test_bad_sql_is_400_with_duckdbs_reason(env: tuple[ApiServer, str]) -> None:
    server, key = env
    for sql, fragment in [
        ("select * from marts.no_such_table", "no_such_table"),
        ("select nope from marts.fct_daily_sales", "nope"),
        ("selec 1", "syntax error"),
        ("select 1 / 0::int, 'x'::int", "Conversion"),
    ]:
        response = server.query(sql, key)
        assert response.status_code == 400, (sql, response.text)
        assert fragment.lower() in response.json()["detail"].lower()


def test_missing_bad_and_revoked_keys_are_401(env: tuple[ApiServer, str]) -> None:
    server, _ = env
    cases = {
        "missing": server.query("select 1", None),
        "bad": server.query("select 1", "dango_ak_" + "x" * 43),
        "not-a-key": server.query("select 1", "hunter2"),
        "basic": server.http.post(
            f"{server.url}/api/query",
            json={"sql": "select 1"},
            headers={"Authorization": "Basic x"},
        ),
    }
    doomed = create_key(server.project, "to-revoke")
    assert server.query("select 1", doomed).status_code == 200
    out = run_cli("api", "key", "revoke", "--project", str(server.project), "to-revoke")
    assert out.returncode == 0, out.stderr
    cases["revoked"] = server.query("select 1", doomed)  # no restart in between
    for label, response in cases.items():
        assert response.status_code == 401, (label, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        line = audit_for(server.project, response.json()["request_id"])
        assert line["outcome"] == "unauthorized" and line["key_id"] is None
    audit_text = load_config(server.project).audit_log_path.read_text()
    assert doomed not in audit_text and "dango_ak_xxx" not in audit_text


def test_oversized_sql_is_413_and_never_run(env: tuple[ApiServer, str]) -> None:
    server, key = env
    long_sql = "select 1 as a" + " " * 4000 + "-- padding"
    response = server.query(long_sql, key)
    assert response.status_code == 413, response.text
    line = audit_for(server.project, response.json()["request_id"])
    assert line["outcome"] == "sql_too_large" and line["key_name"] == "server-tests"
    assert line["rows"] is None
    # A body far over the cap is refused before it is read whole (no SQL, no key check).
    huge = server.http.post(
        f"{server.url}/api/query",
        content=b'{"sql": "' + b"x" * 200_000 + b'"}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert audit_for(server.project, huge.json()["request_id"])["body_bytes"] >= 200_000


def test_malformed_requests_are_422_and_audited(env: tuple[ApiServer, str]) -> None:
    server, key = env
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for content in (b"not json", b'{"query": "select 1"}', b'{"sql": 5}', b"[]"):
        response = server.http.post(f"{server.url}/api/query", content=content, headers=headers)
        assert response.status_code == 422, content
    lines = [line for line in audit_lines(server.project) if line["status"] == 422]
    assert len(lines) >= 4 and all(line["outcome"] == "invalid_request" for line in lines)


def test_runaway_query_is_interrupted_and_server_stays_free(env: tuple[ApiServer, str]) -> None:
    server, key = env
    process = psutil.Process(server.proc.pid)
    started = time.monotonic()
    response = server.query(RUNAWAY, key)
    waited = time.monotonic() - started
    assert response.status_code == 408, response.text
    assert TIMEOUT_S - 0.1 <= waited < TIMEOUT_S + 8
    assert audit_for(server.project, response.json()["request_id"])["outcome"] == "timeout"
    # Interrupted inside DuckDB, not abandoned in a thread: the server process goes idle.
    process.cpu_percent(None)
    time.sleep(1.0)
    assert process.cpu_percent(None) < 50
    # And the next queries are served normally, on every pooled connection.
    for _ in range(6):
        started = time.monotonic()
        ok = server.query("select count(*) from marts.fct_daily_sales", key)
        assert ok.status_code == 200 and ok.json()["rows"] == [[90]]
        assert time.monotonic() - started < 2.0


def test_health_stays_responsive_while_queries_run(env: tuple[ApiServer, str]) -> None:
    """The event loop is never blocked by DuckDB: health answers during a runaway query."""
    server, key = env
    with httpx.Client(timeout=30) as other:
        import threading

        result: dict[str, int] = {}
        worker = threading.Thread(
            target=lambda: result.update(status=server.query(RUNAWAY, key).status_code)
        )
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        health = other.get(f"{server.url}/api/health")
        assert health.status_code == 200 and time.monotonic() - started < 1.0
        quick = server.query("select 42", key)
        assert quick.status_code == 200 and time.monotonic() - started < 1.5
        worker.join()
    assert result["status"] == 408


def test_openapi_declares_every_status_the_service_returns(env: tuple[ApiServer, str]) -> None:
    server, _ = env
    schema = server.http.get(f"{server.url}/openapi.json").json()
    responses = schema["paths"]["/api/query"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "408", "413", "422", "429", "503"}
    for code in ("400", "401", "403", "408", "413", "429", "503"):
        ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_server_never_opens_the_live_warehouse(env: tuple[ApiServer, str]) -> None:
    server, key = env
    config = load_config(server.project)
    config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    from api_support import build_warehouse

    build_warehouse(config.warehouse_path)
    assert server.query("select count(*) from marts.dim_customers", key).status_code == 200
    open_paths = {f.path for f in psutil.Process(server.proc.pid).open_files()}
    assert str(config.warehouse_path) not in open_paths
    assert str(config.published_snapshot_path) in open_paths


def test_no_snapshot_is_503_then_a_published_one_is_picked_up(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    server = ApiServer(root)
    try:
        key = create_key(root, "t")
        health = server.http.get(f"{server.url}/api/health").json()
        assert health["status"] == "no_snapshot" and health["snapshot_present"] is False
        response = server.query("select 1", key)
        assert response.status_code == 503
        assert "run the pipeline" in response.json()["detail"].lower()
        assert audit_for(root, response.json()["request_id"])["outcome"] == "no_snapshot"

        publish_snapshot(root, version=1)
        first = server.query("select version from marts.build_info", key).json()
        assert first["rows"] == [[1]]
        again = server.query("select version from marts.build_info", key).json()
        assert again["rows"] == [[1]] and again["cached"] is True
        time.sleep(0.05)
        publish_snapshot(root, version=2, days=30)
        second = server.query("select version from marts.build_info", key).json()
        assert second["rows"] == [[2]], "a replaced snapshot is used without a restart"
        assert second["cached"] is False, "answers of the old snapshot are never served"
        assert second["snapshot_at"] >= first["snapshot_at"]
        days = server.query("select count(*) from marts.fct_daily_sales", key).json()
        assert days["rows"] == [[30]]
        # The old file is closed once no query uses it: one snapshot open, the current one.
        snapshot = load_config(root).published_snapshot_path
        open_snapshots = [
            f.path
            for f in psutil.Process(server.proc.pid).open_files()
            if f.path.startswith(str(snapshot))
        ]
        assert open_snapshots == [str(snapshot)]
        assert os.stat(snapshot).st_mode & 0o777 == 0o444
    finally:
        server.stop()


def test_unopenable_snapshot_is_503_not_500(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    published = load_config(root).published_snapshot_path
    published.parent.mkdir(parents=True)
    published.write_bytes(b"this is not a duckdb file" * 100)
    server = ApiServer(root)
    try:
        response = server.query("select 1", create_key(root, "t"))
        assert response.status_code == 503
        assert response.json()["error"] == "snapshot_unavailable"
    finally:
        server.stop()


def test_unwritable_audit_log_fails_closed(tmp_path: Path) -> None:
    """No answer leaves without its audit line: if the line cannot be written, 503."""
    root = tmp_path / "project"
    with served_project(root, "audit") as (server, key):
        assert server.query("select 1", key).status_code == 200
        audit = load_config(root).audit_log_path
        audit.rename(audit.with_name("rotated.jsonl"))
        audit.mkdir()  # the path can no longer be opened for appending (even by root)
        response = server.query("select 42", key)
        assert response.status_code == 503
        assert response.json()["error"] == "audit_unavailable"
        assert "rows" not in response.json()
        audit.rmdir()
        assert server.query("select 1", key).status_code == 200
    assert len(audit.read_text().splitlines()) >= 1, "a new audit file is started"
