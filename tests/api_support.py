"""Helpers for the query API tests: a real project, a real snapshot, a real uvicorn server.

The server runs as ``python -m dango_dagster.cli api serve`` in its own process on a free
127.0.0.1 port, exactly as a user starts it. Snapshots are built the way the snapshot asset
publishes them: written to a temporary name, made read-only, then ``os.replace``d into
``config.published_snapshot_path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import yaml

from dango_dagster.config import load_config


def write_project(root: Path, **api: Any) -> Path:
    """A Dango project folder with the given ``api:`` settings in ``.dango/project.yml``."""
    (root / ".dango" / "state").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / ".dango" / "project.yml").write_text(yaml.safe_dump({"api": api}), encoding="utf-8")
    return root


def build_warehouse(path: Path, *, version: int = 1, days: int = 90, orders: int = 5000) -> None:
    """A demo-shaped warehouse: raw_shop, staging and marts, with a version marker table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        for schema in ("raw_shop", "staging", "marts"):
            con.execute(f"create schema if not exists {schema}")
        con.execute(
            "create or replace table raw_shop.orders as select range as order_id, "
            "range % 97 as customer_id, date '2024-01-01' + (range % ?)::int as order_date, "
            "((range * 37) % 10000) / 100.0 as amount, "
            "case range % 3 when 0 then 'web' when 1 then 'store' else 'phone' end as channel "
            "from range(?)",
            [days, orders],
        )
        con.execute(
            "create or replace view staging.stg_orders as select * from raw_shop.orders "
            "where amount > 0"
        )
        con.execute(
            "create or replace table marts.fct_daily_sales as select order_date as day, "
            "count(*) as orders, sum(amount)::decimal(18,2) as revenue "
            "from raw_shop.orders group by all order by day"
        )
        con.execute(
            "create or replace table marts.dim_customers as select distinct customer_id, "
            "'customer ' || customer_id as name from raw_shop.orders"
        )
        con.execute(
            "create or replace table marts.build_info as select ?::int as version", [version]
        )
        con.execute("checkpoint")
    finally:
        con.close()


def publish_snapshot(project: Path, *, version: int = 1, **kwargs: Any) -> Path:
    """Build a snapshot and publish it atomically, as the snapshot asset does."""
    final = load_config(project).published_snapshot_path
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".publish-{os.getpid()}-{time.monotonic_ns()}.duckdb")
    build_warehouse(tmp, version=version, **kwargs)
    os.chmod(tmp, 0o444)
    os.replace(tmp, final)
    return final


def create_key(project: Path, name: str) -> str:
    """A new API key, made with the real CLI."""
    out = run_cli("api", "key", "create", "--project", str(project), "--name", name, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["key"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dango_dagster.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """``dango-dagster api serve`` in a child process; ``stop`` shuts it down gracefully."""

    def __init__(self, project: Path, *, workers: int = 1) -> None:
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = project / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # One client for all requests: httpx builds an SSL context per client (tens of ms).
        self.http = httpx.Client(timeout=60)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dango_dagster.cli",
                "api",
                "serve",
                "--project",
                str(project),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"api serve exited: {self.log_path.read_text()}")
            try:
                if self.http.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"api serve did not start: {self.log_path.read_text()}")

    def query(self, sql: str, key: str | None, **extra: Any) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # json.dumps escapes non-ASCII, so even a lone surrogate travels as valid JSON.
        body = json.dumps({"sql": sql, **extra})
        return self.http.post(f"{self.url}/api/query", content=body, headers=headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.http.close()


# Limits high enough that no test is throttled unless it means to be.
UNLIMITED = {"rate_limit": "100000/minute", "anonymous_rate_limit": "100000/minute"}


@contextlib.contextmanager
def served_project(
    root: Path, key_name: str, *, publish: bool = True, workers: int = 1, **api: Any
) -> Iterator[tuple[ApiServer, str]]:
    """A project (generous rate limits unless ``api`` says otherwise), its published snapshot,
    a running server and a key; the server stops on exit."""
    write_project(root, **{**UNLIMITED, **api})
    if publish:
        publish_snapshot(root)
    server = ApiServer(root, workers=workers)
    try:
        yield server, create_key(root, key_name)
    finally:
        server.stop()


def audit_lines(project: Path) -> list[dict[str, Any]]:
    path = load_config(project).audit_log_path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def audit_for(project: Path, request_id: str) -> dict[str, Any]:
    matches = [line for line in audit_lines(project) if line["request_id"] == request_id]
    assert len(matches) == 1, f"expected one audit line for {request_id}, got {matches}"
    return matches[0]


# --- writers in child processes (run with PYTHONPATH=tests) ---------------------------------


def hold_live_warehouse(project: str, ready_file: str, release_file: str) -> None:
    """A ``dbt build``-style writer: hold the lock and a read-write connection to the live file
    until ``release_file`` appears (at most a minute)."""
    from dango_dagster.lock import DbtLock

    config = load_config(project)
    with DbtLock(project, source="test", operation="dbt build").acquire(timeout=0):
        con = duckdb.connect(str(config.warehouse_path))
        con.execute("create or replace table marts.heartbeat as select now() as at")
        Path(ready_file).write_text("ready")
        deadline = time.monotonic() + 60
        while not Path(release_file).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        con.close()


def write_repeatedly(project: str, iterations: int) -> None:
    """Take the lock (fail-fast) and write the live file ``iterations`` times; print timings."""
    from dango_dagster.lock import DbtLock

    config = load_config(project)
    results = []
    for i in range(iterations):
        started = time.monotonic()
        try:
            with DbtLock(project, source="test", operation="write").acquire(timeout=0):
                con = duckdb.connect(str(config.warehouse_path))
                opened = time.monotonic() - started
                con.execute("create or replace table marts.tick as select ?::int as i", [i])
                con.execute("checkpoint")
                con.close()
            results.append({"ok": True, "open_s": opened, "total_s": time.monotonic() - started})
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results.append({"ok": False, "error": str(exc)})
        time.sleep(0.05)
    print(json.dumps(results))


def child(code: str) -> list[str]:
    """argv for a Python child that runs ``code`` with the tests folder importable."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); {code}"]


TESTS_DIR = Path(__file__).resolve().parent


def append_audit_lines(path: str, writer: int, count: int) -> None:
    """Append ``count`` records, some far longer than PIPE_BUF, as one audit writer process."""
    from dango_dagster.api.audit import AuditLog

    log = AuditLog(Path(path))
    for i in range(count):
        size = 70_000 if i % 10 == 0 else 50 + i
        log.write({"writer": writer, "seq": i, "sql": chr(ord("a") + writer) * size})
    log.close()
