"""Query API throughput and latency: pooled snapshot connections vs the seed's per-request open.

Builds the demo project (dlt + dbt, as a user would), publishes a snapshot with the product's
``take_snapshot``, then starts two real uvicorn servers on 127.0.0.1 that differ only in where
their connections come from:

- **product**: ``dango-dagster api serve`` -- pooled read-only cursors on the published snapshot;
- **seed baseline**: the same app (same auth, audit, guard, limits), but every request opens the
  *live* warehouse with ``duckdb.connect(path, read_only=True)`` and closes it, as the seed did.

8 client threads (keep-alive HTTP) send a mix of demo-mart queries for a fixed time per phase,
first with nothing else running (idle), then while a writer process loops: take ``DbtLock``, open
the live file read-write, write a table, ``CHECKPOINT``, close, release. Reported per phase:
queries, failures, queries/s, p50/p99 latency, and the writer's completed and failed writes.

    .venv/bin/python bench/bench_api.py                 # ~1 minute
    .venv/bin/python bench/bench_api.py --seconds 20 --rows 20000 --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

QUERIES = [
    "select * from marts.fct_daily_sales order by sales_date desc limit 30",
    "select date_trunc('month', sales_date) as month, sum(revenue) as revenue, sum(orders) "
    "from marts.fct_daily_sales group by 1 order by 1",
    "select status, count(*) as orders, sum(amount_paid) as paid from marts.fct_orders "
    "group by status order by orders desc",
    "select * from marts.dim_customers order by customer_id limit 50",
]
CLIENTS = 8
BENCH_DIR = Path(__file__).resolve().parent


# --- the baseline server (runs in its own process) ---------------------------------------------


def serve_baseline(project: str, port: int) -> None:
    """The app with the seed's connection strategy: open the live file per request."""
    import duckdb
    import uvicorn

    from dango_dagster.api.app import create_app
    from dango_dagster.api.errors import ApiError
    from dango_dagster.api.pool import Generation, Lease, SnapshotPool
    from dango_dagster.config import load_config

    class LivePerRequest(SnapshotPool):
        def lease(self) -> Lease:
            try:
                con = duckdb.connect(str(self.path), read_only=True)
            except duckdb.Error as exc:  # the writer holds the file
                raise ApiError(503, "warehouse_locked", str(exc)) from exc
            return Lease(con, Generation(ident=(0, 0, 0, 0), root=con, snapshot_at="live"))

        def release(self, lease: Lease, *, discard: bool = False) -> None:
            lease.cursor.close()

        def retire(self, gen: Generation) -> None:
            pass

        def status(self) -> tuple[bool, str | None]:
            return True, "live"

    config = load_config(project)
    app = create_app(config, pool=LivePerRequest(config.warehouse_path, config.api))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_product_uncached(project: str, port: int) -> None:
    """The product with ``api.result_cache_mb: 0``: every query runs in DuckDB."""
    import uvicorn

    from dango_dagster.api.app import create_app
    from dango_dagster.config import ProjectConfig, load_config

    config = load_config(project)
    api = config.api.model_copy(update={"result_cache_mb": 0.0})
    settings = config.settings.model_copy(update={"api": api})
    app = create_app(ProjectConfig(config.root, settings))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the writer (runs in its own process) -------------------------------------------------------


def run_writer(project: str, stop_file: str) -> None:
    """Write the live warehouse in a loop, under the lock, until ``stop_file`` appears."""
    import duckdb

    from dango_dagster.config import load_config
    from dango_dagster.lock import DbtLock

    path = str(load_config(project).warehouse_path)
    ok = failed = 0
    opens: list[float] = []
    errors: dict[str, int] = {}
    i = 0
    while not os.path.exists(stop_file):
        i += 1
        with DbtLock(project, source="bench", operation="write").acquire(timeout=30):
            started = time.perf_counter()
            try:
                con = duckdb.connect(path)
            except duckdb.Error as exc:
                failed += 1
                kind = str(exc).split(":")[0]
                errors[kind] = errors.get(kind, 0) + 1
                time.sleep(0.05)
                continue
            opens.append(time.perf_counter() - started)
            con.execute("create or replace table marts.bench_tick as select ?::int as i", [i])
            con.execute("checkpoint")
            con.close()
            ok += 1
        time.sleep(0.05)
    median_open = statistics.median(opens) * 1000 if opens else None
    print(json.dumps({"ok": ok, "failed": failed, "open_ms": median_open, "errors": errors}))


# --- the load generator ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server on port {port} exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on port {port} did not start")


def _client(
    port: int, key: str, stop: threading.Event, out: list[tuple[float, int]], n: int
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    i = n
    while not stop.is_set():
        body = json.dumps({"sql": QUERIES[i % len(QUERIES)]})
        i += 1
        started = time.perf_counter()
        try:
            conn.request("POST", "/api/query", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            status = 0
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        out.append((time.perf_counter() - started, status))
    conn.close()


def load_phase(port: int, key: str, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    results: list[list[tuple[float, int]]] = [[] for _ in range(CLIENTS)]
    threads = [
        threading.Thread(target=_client, args=(port, key, stop, results[n], n))
        for n in range(CLIENTS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    samples = [s for per_client in results for s in per_client]
    ok = sorted(lat for lat, status in samples if status == 200)
    failed = len(samples) - len(ok)
    statuses: dict[str, int] = {}
    for _, status in samples:
        if status != 200:
            statuses[str(status)] = statuses.get(str(status), 0) + 1

    return {
        "queries": len(samples),
        "ok": len(ok),
        "failed": failed,
        "failed_by_status": statuses,
        "elapsed": elapsed,
        "latencies": ok,
    }


def _pct(sorted_latencies: list[float], p: float) -> float | None:
    if not sorted_latencies:
        return None
    return sorted_latencies[min(len(sorted_latencies) - 1, int(p * len(sorted_latencies)))] * 1000


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); {code}"]


def prepare(root: Path, rows: int) -> str:
    """Demo project, one pipeline run, a published snapshot and a key; returns the key."""
    from bare_tools import run_once

    from dango_dagster.api.keys import KeyStore
    from dango_dagster.config import load_config
    from dango_dagster.demo import init_demo_project
    from dango_dagster.snapshots import take_snapshot

    init_demo_project(root, rows=rows)
    config_file = root / ".dango" / "project.yml"
    text = config_file.read_text(encoding="utf-8")
    if "\napi:" in text:
        sys.exit("the demo project.yml already has an api section; adjust the bench")
    config_file.write_text(
        text + "\napi:\n  rate_limit: 10000000/minute\n  anonymous_rate_limit: 10000000/minute\n",
        encoding="utf-8",
    )
    config = load_config(root)
    run_once(config)
    take_snapshot(config, users=[])
    secret, _ = KeyStore(config.api_keys_path).create("bench")
    return secret


VARIANTS = ("product", "product, no result cache", "seed baseline")


def _start_servers(root: Path) -> tuple[dict[str, subprocess.Popen[bytes]], dict[str, int]]:
    ports = {name: _free_port() for name in VARIANTS}
    servers = {
        "product": subprocess.Popen(
            [sys.executable, "-m", "dango_dagster.cli", "api", "serve", "--project",
             str(root), "--port", str(ports["product"]), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
        ),
        "product, no result cache": subprocess.Popen(
            _py(f"from bench_api import serve_product_uncached as s; s({str(root)!r}, "
                f"{ports['product, no result cache']})")
        ),
        "seed baseline": subprocess.Popen(
            _py(f"from bench_api import serve_baseline; serve_baseline({str(root)!r}, "
                f"{ports['seed baseline']})")
        ),
    }  # fmt: skip
    for name, proc in servers.items():
        _wait_ready(ports[name], proc)
    return servers, ports


def _slice(root: Path, tmp: Path, port: int, key: str, seconds: float, writing: bool) -> dict:
    """One timed slice against one server, with a writer process running if ``writing``."""
    writer = None
    stop_file = tmp / f"stop-{time.monotonic_ns()}"
    if writing:
        writer = subprocess.Popen(
            _py(f"from bench_api import run_writer; run_writer({str(root)!r}, "
                f"{str(stop_file)!r})"),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # let it import and start writing
    figures = load_phase(port, key, seconds)
    if writer is not None:
        stop_file.write_text("stop")
        out, _ = writer.communicate(timeout=120)
        figures["writer"] = json.loads(out.strip().splitlines()[-1])
    return figures


def _merge(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the slices of one server and phase (latencies were kept per slice)."""
    latencies = sorted(lat for s in slices for lat in s.pop("latencies"))
    merged: dict[str, Any] = {
        "queries": sum(s["queries"] for s in slices),
        "failed": sum(s["failed"] for s in slices),
        "qps": sum(s["ok"] for s in slices) / sum(s["elapsed"] for s in slices),
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "failed_by_status": {},
    }
    for s in slices:
        for status, n in s["failed_by_status"].items():
            merged["failed_by_status"][status] = merged["failed_by_status"].get(status, 0) + n
    writers = [s["writer"] for s in slices if "writer" in s]
    if writers:
        opens = [w["open_ms"] for w in writers if w["open_ms"] is not None]
        merged["writer"] = {
            "ok": sum(w["ok"] for w in writers),
            "failed": sum(w["failed"] for w in writers),
            "open_ms": statistics.median(opens) if opens else None,
        }
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per server and phase")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per phase")
    parser.add_argument("--rows", type=int, default=5000, help="demo orders")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dango-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "demo"
        started = time.perf_counter()
        key = prepare(root, args.rows)
        print(
            f"demo project with {args.rows} orders ready in {time.perf_counter() - started:.1f} s"
        )
        servers, ports = _start_servers(root)
        report: dict[str, Any] = {"rows": args.rows, "seconds": args.seconds, "phases": []}
        try:
            for phase in ("idle", "writing"):
                slices: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
                # Alternate short slices so the machine's noise hits every server alike.
                length, writing = args.seconds / args.rounds, phase == "writing"
                for _ in range(args.rounds):
                    for name in VARIANTS:
                        figures = _slice(root, tmp, ports[name], key, length, writing)
                        slices[name].append(figures)
                for name in VARIANTS:
                    merged = _merge(slices[name])
                    report["phases"].append({"server": name, "phase": phase, **merged})
                    print(f"  {name:<26} {phase:<8} {merged['qps']:8.1f} q/s, "
                          f"{merged['failed']} failed", flush=True)  # fmt: skip
        finally:
            for proc in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc in servers.values():
                proc.wait(timeout=30)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


def print_report(report: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    print(f"\n{CLIENTS} clients, {report['seconds']:.0f} s per phase, demo with "
          f"{report['rows']} orders\n")  # fmt: skip
    print("| server | phase | queries | failed | q/s | p50 ms | p99 ms | writer ok / failed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for p in report["phases"]:
        writer = p.get("writer")
        w = f"{writer['ok']} / {writer['failed']}" if writer else "-"
        if writer and writer["open_ms"] is not None:
            w += f" (open {writer['open_ms']:.1f} ms)"
        print(f"| {p['server']} | {p['phase']} | {p['queries']} | {p['failed']} | "
              f"{p['qps']:.1f} | {ms(p['p50_ms'])} | {ms(p['p99_ms'])} | {w} |")  # fmt: skip
    by = {(p["server"], p["phase"]): p for p in report["phases"]}
    base = max(by[("seed baseline", "idle")]["qps"], 1e-9)
    for name in VARIANTS[:2]:
        print(f"\nidle throughput: {name} / seed baseline = "
              f"{by[(name, 'idle')]['qps'] / base:.1f}x (target >= 5x)", end="")  # fmt: skip
    print()
    failed = ", ".join(f"{name} {by[(name, 'writing')]['failed']}" for name in VARIANTS)
    print(f"failed queries while writing (target 0 for the product): {failed}")


if __name__ == "__main__":
    main()
