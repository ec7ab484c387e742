"""A partitioned backfill behind a long writer: ``DangoDuckDBResource`` vs stock ``DuckDBResource``.

The situation of Dagster issues #19068, #16248, #18746, #26848: a user's own partitioned asset
writes the project's DuckDB warehouse while a long dbt build holds it. Here a writer process takes
the warehouse lock (``DbtLock``) and keeps a read-write connection open for ``--hold`` seconds
(130 by default), as a long ``dbt build`` does. Meanwhile a backfill of 12 partitions runs 4 runs
at a time: 4 run-worker processes (dagster and the definitions imported once, as a run launcher's
pre-started workers), each taking the next partition from a shared queue and executing it as a
real Dagster run (``execute_in_process`` on one persistent instance, tag ``dagster/backfill``).

Each run writes its partition through the resource under test:

* ``DangoDuckDBResource``: the run queues for the lock (a backfill's launch kind waits up to
  ``lock.queue_timeout_seconds``), so it waits at ~0 CPU and writes as soon as the writer is done;
* stock ``DuckDBResource``: ``duckdb.connect`` fails on the held file and is retried with backoff
  (10 retries, about 100 s), after which the partition fails.

Both configurations run in one invocation, one after the other, on fresh warehouses. Reported per
configuration: failed partitions, seconds from the writer's release to the last run's end, total.
Target (issue 9): 0 failed, all done within 5 s of the release.

Usage: ``nice -n 10 python bench/bench_backfill.py [--hold 130] [--partitions 12] [--workers 4]``
"""

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from dango_dagster import DangoDuckDBResource


def _writer(project: str, hold: float, ready: Any, released_at: Any) -> None:
    """The long writer: the lock and a read-write connection, held ``hold`` seconds."""
    import duckdb

    from dango_dagster.lock import DbtLock

    lock = DbtLock(project, source="bench", operation="dbt build (long)").acquire(timeout=0)
    warehouse = Path(project) / "data" / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    con.execute("create schema if not exists bench")
    ready.set()
    time.sleep(hold)
    con.close()
    released_at.value = time.monotonic()
    lock.release()


def _definitions(project: str, kind: str, partitions: int) -> Any:
    # Annotations are evaluated by Dagster, so this module has no ``from __future__ import
    # annotations`` and the asset's types are module-level names.
    parts = dg.StaticPartitionsDefinition([f"p{i:02d}" for i in range(partitions)])

    @dg.asset(partitions_def=parts)
    def events(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> None:
        with duckdb.get_connection() as con:
            con.execute("create schema if not exists bench")
            con.execute("create table if not exists bench.events (part varchar, n bigint)")
            con.execute("delete from bench.events where part = ?", [context.partition_key])
            con.execute(
                "insert into bench.events select ?, range from range(10000)",
                [context.partition_key],
            )

    warehouse = str(Path(project) / "data" / "warehouse.duckdb")
    resource = (
        DangoDuckDBResource(project_dir=project)
        if kind == "dango"
        else DuckDBResource(database=warehouse)
    )
    return dg.Definitions(assets=[events], resources={"duckdb": resource})


def _worker(
    project: str, home: str, kind: str, partitions: int, queue: Any, out: Any, go: Any
) -> None:
    """One run worker: executes runs for partitions from ``queue`` until it is empty."""
    import logging

    import dagster as dg

    logging.getLogger("dagster").setLevel(logging.ERROR)
    job = _definitions(project, kind, partitions).resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.from_config(home)
    out.put(("ready", None, 0.0, 0.0))
    go.wait()
    while True:
        try:
            key = queue.get_nowait()
        except Exception:  # noqa: BLE001 - queue empty: the backfill is done for this worker
            break
        started = time.monotonic()
        try:
            result = job.execute_in_process(
                instance=instance,
                partition_key=key,
                tags={"dagster/backfill": f"bench-{kind}"},
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                raise_on_error=False,
            )
            ok = result.success
        except Exception:  # noqa: BLE001 - counted as a failed partition
            ok = False
        out.put(("done" if ok else "failed", key, started, time.monotonic()))


def run_config(kind: str, hold: float, partitions: int, workers: int) -> dict[str, Any]:
    from dango_dagster.demo import init_demo_project

    ctx = mp.get_context("spawn")
    base = Path(tempfile.mkdtemp(prefix=f"bench_backfill_{kind}_"))
    project = str(init_demo_project(base / "project", rows=10))
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # Create the instance's storage once here: four workers migrating a fresh SQLite at once race.
    dg.DagsterInstance.from_config(str(home)).dispose()
    ready, go, released_at = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    queue, out = ctx.Queue(), ctx.Queue()
    for i in range(partitions):
        queue.put(f"p{i:02d}")
    procs = [
        ctx.Process(target=_worker, args=(project, str(home), kind, partitions, queue, out, go))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every worker imported and ready: the backfill starts now
        assert out.get(timeout=300)[0] == "ready"
    writer = ctx.Process(target=_writer, args=(project, hold, ready, released_at))
    writer.start()
    ready.wait(60)
    started = time.monotonic()
    go.set()
    results = [out.get(timeout=hold + 600) for _ in range(partitions)]
    for proc in procs:
        proc.join(timeout=60)
    writer.join(timeout=60)
    ends = [end for _, _, _, end in results]
    failed = sorted(key for state, key, _, _ in results if state == "failed")
    release = released_at.value
    return {
        "kind": kind,
        "failed": failed,
        "after_release_s": max(ends) - release,
        "total_s": max(ends) - started,
        "run_median_s": statistics.median(end - begin for _, _, begin, end in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=130.0, help="writer's hold, seconds")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=4, help="runs at a time")
    args = parser.parse_args(argv)
    print(
        f"backfill of {args.partitions} partitions, {args.workers} runs at a time, behind a "
        f"{args.hold:.0f} s writer (lock + read-write connection); {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}",
        flush=True,
    )
    rows = [
        run_config(kind, args.hold, args.partitions, args.workers) for kind in ("dango", "stock")
    ]
    print("\n| resource | failed partitions | last run done after release | total | run median |")
    print("|---|---|---|---|---|")
    for row in rows:
        name = "DangoDuckDBResource" if row["kind"] == "dango" else "stock DuckDBResource"
        print(
            f"| {name} | {len(row['failed'])} of {args.partitions} | "
            f"{row['after_release_s']:.1f} s | {row['total_s']:.1f} s | "
            f"{row['run_median_s']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
