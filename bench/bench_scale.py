"""Past one machine: what the Postgres lock and the DuckLake warehouse cost against the baselines.

Three measurements, one run each, baseline and candidate side by side in the same run:

* ``handoff``: the lock passing between two processes, ``DbtLock`` on the postgres backend
  (advisory lock; the local flock is taken too, as on a file warehouse) vs the file backend
  (``flock``). Same harness as ``bench_lock_handoff.py``.
* ``sigkill``: the holder killed with SIGKILL; when the queued waiter holds the lock.
* ``sync``: ``dango-dagster sync`` of the demo (fresh project each time) on DuckLake vs on the
  single file. Needs duckdb 1.5.5 (run with ``.venv-dango/bin/python``).
* ``publish``: giving readers the newest data at ~1 GB: the file warehouse's snapshot
  (CHECKPOINT, copy, verify, rename: ``take_snapshot``) vs DuckLake's pin of the current snapshot
  id (``publish_snapshot``), plus what a reader then pays to open each.

Starts its own PostgreSQL (tests/pgserver.py). Usage::

    nice -n 10 .venv-dango/bin/python bench/bench_scale.py [--only handoff,sigkill,sync,publish]
        [--rounds 200] [--syncs 3] [--rows 2000] [--gb 1.0]

Prints markdown tables (docs/BENCHMARKS.md, docs/SCALING.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_lock_handoff import run as handoff_run  # noqa: E402
from pgserver import PgServer  # noqa: E402

CLI = str(Path(sys.executable).with_name("dango-dagster"))


def _env(**values: str | None) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def bench_handoff(pg: PgServer, rounds: int) -> None:
    common = {"interval": 0.0, "rounds": rounds, "settle": 0.02, "long_hold": 2.0}
    _env(DANGO_LOCK_BACKEND="file")
    flock = handoff_run("file backend (flock)", "dbtlock", **common)
    _env(DANGO_LOCK_BACKEND="postgres", DANGO_LOCK_DSN=pg.dsn("lock"), DANGO_LOCK_KEY="bench")
    postgres = handoff_run("postgres backend (advisory lock + local flock)", "dbtlock", **common)
    _env(DANGO_LOCK_BACKEND=None, DANGO_LOCK_DSN=None, DANGO_LOCK_KEY=None)
    print("\n### Lock handoff: postgres vs flock\n")
    print(
        "| backend | handoffs | median ms | p99 ms | max ms | waiter CPU ms per handoff "
        "| waiter CPU while waiting |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in (flock, postgres):
        print(result.row())
    ratio = statistics.median(postgres.handoffs_ms) / statistics.median(flock.handoffs_ms)
    print(f"\npostgres median / flock median: {ratio:.1f}x")


def bench_sigkill(pg: PgServer, rounds: int) -> None:
    """A holder killed with SIGKILL: how soon a queued waiter (another project folder for
    postgres, as another host would be; the same folder for flock) holds the lock."""
    from lockprocs.harness import LockProc

    results: dict[str, list[float]] = {}
    for backend in ("file", "postgres"):
        if backend == "postgres":
            dsn = pg.dsn("lock")
            _env(DANGO_LOCK_BACKEND="postgres", DANGO_LOCK_DSN=dsn, DANGO_LOCK_KEY="kill")
        else:
            _env(DANGO_LOCK_BACKEND="file")
        results[backend] = []
        for _ in range(rounds):
            work = Path(tempfile.mkdtemp(prefix="bench-kill-"))
            folders = [work / "a", work / "b"] if backend == "postgres" else [work / "a"] * 2
            for folder in folders:
                (folder / ".dango" / "state").mkdir(parents=True, exist_ok=True)
            holder = LockProc("hold", folders[0], "bench", "hold")
            waiter = None
            try:
                holder.expect("HELD", timeout=60)
                waiter = LockProc("wait", folders[1], 60)
                waiter.expect("WAITING", timeout=60)
                time.sleep(0.3)
                holder.kill()
                killed = time.monotonic_ns()
                got = int(waiter.expect("GOT", timeout=30)[0])
                results[backend].append((got - killed) / 1e6)
            finally:
                for proc in (holder, waiter):
                    if proc is not None:
                        proc.cleanup()
                shutil.rmtree(work, ignore_errors=True)
    _env(DANGO_LOCK_BACKEND=None, DANGO_LOCK_DSN=None, DANGO_LOCK_KEY=None)
    print("\n### SIGKILL of the holder: next holder after (ms)\n")
    print("| backend | kills | median ms | max ms |")
    print("|---|---:|---:|---:|")
    for backend, values in results.items():
        median, worst = statistics.median(values), max(values)
        print(f"| {backend} | {len(values)} | {median:.1f} | {worst:.1f} |")


def _demo(root: Path, rows: int, lake_catalog: str | None) -> Path:
    subprocess.run(
        [CLI, "demo", "init", str(root), "--rows", str(rows)], check=True, capture_output=True
    )
    if lake_catalog:
        with (root / ".dango" / "dango_dagster.yml").open("a") as fh:
            fh.write(f"\nwarehouse:\n  kind: ducklake\n  catalog: {lake_catalog}\n")
    return root


def _timed_sync(root: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([CLI, "sync", "--project", str(root)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"sync of {root} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return elapsed


def bench_sync(pg: PgServer, syncs: int, rows: int) -> None:
    import psycopg2

    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    times: dict[str, list[float]] = {"file": [], "ducklake": []}
    try:
        for i in range(syncs):
            for kind in ("file", "ducklake"):  # interleaved: load drifts hit both alike
                catalog = None
                if kind == "ducklake":
                    conn = psycopg2.connect(pg.dsn("postgres"))
                    conn.autocommit = True  # CREATE DATABASE refuses a transaction
                    conn.cursor().execute(f'CREATE DATABASE "lake_{i}"')
                    conn.close()
                    catalog = pg.dsn(f"lake_{i}")
                root = _demo(work / f"{kind}-{i}", rows, catalog)
                times[kind].append(_timed_sync(root))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### Demo sync ({rows} rows, fresh project each, `dango-dagster sync`)\n")
    print("| warehouse | syncs | median s | min s | max s |")
    print("|---|---:|---:|---:|---:|")
    for kind, values in times.items():
        print(
            f"| {kind} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f} "
            f"| {max(values):.2f} |"
        )
    ratio = statistics.median(times["ducklake"]) / statistics.median(times["file"])
    print(f"\nducklake median / file median: {ratio:.2f}x")


_FILL = (
    "CREATE TABLE {t} AS SELECT i AS id, md5(i::VARCHAR) || md5((i * 7)::VARCHAR) AS payload, "
    "random() AS r FROM range({n}) t(i)"
)


def _fill_rows(gb: float) -> int:
    return int(gb * 1e9 / 36)  # ~36 bytes per row in the DuckDB file (measured)


def bench_publish(pg: PgServer, gb: float) -> None:
    import duckdb

    from dango_dagster.config import load_config
    from dango_dagster.lake import lake_for, open_published, publish_snapshot
    from dango_dagster.snapshots import take_snapshot

    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        file_root = _demo(work / "file", 50, None)
        lake_root = _demo(work / "lake", 50, pg.dsn("lake"))
        rows = _fill_rows(gb)
        file_cfg, lake_cfg = load_config(file_root), load_config(lake_root)
        file_cfg.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(file_cfg.warehouse_path)) as con:
            con.execute(_FILL.format(t="big", n=rows))
            con.execute("CHECKPOINT")
        size = file_cfg.warehouse_path.stat().st_size
        lake = lake_for(lake_cfg)
        lake.data_path.mkdir(parents=True, exist_ok=True)
        with lake.connect() as con:
            con.execute(_FILL.format(t="big", n=rows))
        parquet = sum(p.stat().st_size for p in lake.data_path.rglob("*.parquet"))

        copy_runs, pin_runs, open_file, open_lake = [], [], [], []
        for _ in range(3):
            started = time.perf_counter()
            take_snapshot(file_cfg, users=[], publish=True)
            copy_runs.append(time.perf_counter() - started)
            started = time.perf_counter()
            with duckdb.connect(str(file_cfg.published_snapshot_path), read_only=True) as con:
                con.execute("SELECT count(*) FROM big").fetchone()
            open_file.append(time.perf_counter() - started)
            pin_runs.append(publish_snapshot(lake_cfg, lake)["seconds"])
            started = time.perf_counter()
            with open_published(lake_cfg) as con:
                con.execute("SELECT count(*) FROM big").fetchone()
            open_lake.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### Publish at {size / 1e9:.2f} GB (DuckDB file) / {parquet / 1e9:.2f} GB Parquet\n")
    print("| publish | runs | median s | reader: open + count(*) median s |")
    print("|---|---:|---:|---:|")
    print(
        f"| file: CHECKPOINT + copy + verify + rename | 3 | {statistics.median(copy_runs):.3f} "
        f"| {statistics.median(open_file):.3f} |"
    )
    print(
        f"| DuckLake: pin the current snapshot id | 3 | {statistics.median(pin_runs):.4f} "
        f"| {statistics.median(open_lake):.3f} |"
    )
    ratio = statistics.median(copy_runs) / statistics.median(pin_runs)
    print(f"\nfile copy median / DuckLake pin median: {ratio:,.0f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default="handoff,sigkill,sync,publish")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILL handoffs per backend")
    parser.add_argument("--rounds", type=int, default=200, help="lock handoffs per backend")
    parser.add_argument("--syncs", type=int, default=3, help="demo syncs per warehouse kind")
    parser.add_argument("--rows", type=int, default=2000, help="demo rows (orders)")
    parser.add_argument("--gb", type=float, default=1.0, help="warehouse size for publish")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    import duckdb

    print(
        f"Scale benchmarks, {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}"
    )
    with PgServer(databases=("lock", "lake")) as pg:
        print(f"(PostgreSQL started in {pg.start_seconds:.1f} s)")
        if "handoff" in only:
            bench_handoff(pg, args.rounds)
        if "sigkill" in only:
            bench_sigkill(pg, args.kills)
        if "sync" in only:
            bench_sync(pg, args.syncs, args.rows)
        if "publish" in only:
            bench_publish(pg, args.gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
