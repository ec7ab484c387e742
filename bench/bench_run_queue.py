"""The run queue under a real ``dagster dev``: how fast a queued run starts once the warehouse
lock is released, and what the queue daemon's lock probe costs in CPU.

A demo project is synced (``dango-dagster sync``), then ``dagster dev`` serves it. Each trial: a
real process takes the lock (``tests/lockprocs``), a run of the snapshot asset is launched the way
the UI's Materialize button launches it (GraphQL, ``dagster/from_ui``), it stays Queued (checked:
no worker process), the holder lets go, and the run's own events say when the daemon dequeued it
(RUN_STARTING) and when its worker began (RUN_START). The daemon's CPU (psutil: user + system of
``python -m dagster._daemon run``) is sampled over a window with nothing queued and over a window
with a run held back behind the holder (the probe runs on every pass, each second).

Usage: ``nice -n 10 python bench/bench_run_queue.py [--trials 5] [--window 20]``; prints a
markdown table (docs/BENCHMARKS.md#run-queue). About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from dagster_dev_path import DagsterDev  # noqa: E402
from lockprocs.harness import LockProc  # noqa: E402

from dango_dagster.config import load_config  # noqa: E402
from dango_dagster.demo import init_demo_project  # noqa: E402

SNAPSHOT = ["snapshots", "warehouse"]


def launch_from_ui(port: int, keys: list[list[str]]) -> str:
    """The mutation the UI's Materialize button sends."""
    query = """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } } } }"""
    params = {
        "selector": {
            "repositoryLocationName": "dango_dagster",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": k} for k in keys],
        },
        "mode": "default",
        "executionMetadata": {"tags": [{"key": "dagster/from_ui", "value": "true"}]},
    }
    body = json.dumps({"query": query, "variables": {"p": params}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        result = json.loads(response.read())["data"]["launchPipelineExecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"launch failed: {result}")
    return str(result["run"]["runId"])


def daemon_process(dev: DagsterDev) -> psutil.Process:
    assert dev.proc is not None
    for child in psutil.Process(dev.proc.pid).children(recursive=True):
        if any(part in ("dagster._daemon", "dagster-daemon") for part in child.cmdline()):
            return child
    raise RuntimeError("no daemon process (python -m dagster._daemon) under dagster dev")


def cpu_share(proc: psutil.Process, seconds: float) -> float:
    """CPU seconds per wall second of ``proc`` (all threads) over ``seconds``."""
    before = proc.cpu_times()
    start = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return used / (time.monotonic() - start)


def event_time(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> float:
    events = instance.all_logs(run_id, of_type=kind)
    return events[0].timestamp if events else float("nan")


def lock_tag(dev: DagsterDev, run_id: str) -> str | None:
    run = dev.instance.get_run_by_id(run_id)
    return run.tags.get("dango/lock") if run is not None else None


def trial(dev: DagsterDev, project: Path, window: float, daemon: psutil.Process) -> dict[str, Any]:
    holder = LockProc("hold", project, "bench", "hold the warehouse")
    cpu = float("nan")
    try:
        holder.expect("HELD")
        run_id = launch_from_ui(dev.port, [SNAPSHOT])
        dev._wait("the run to be held in the queue", 60, lambda: lock_tag(dev, run_id) == "queued")
        if window:
            cpu = cpu_share(daemon, window)
        run = dev.instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.QUEUED
        assert "dango/pid" not in run.tags  # no worker process
        released = time.time()
    finally:
        holder.let_go()
        holder.cleanup()
    record = dev._finished(run_id)
    dequeued = event_time(dev.instance, run_id, dg.DagsterEventType.RUN_STARTING)
    started = event_time(dev.instance, run_id, dg.DagsterEventType.RUN_START)
    dev.wait_idle()
    return {
        "release_to_dequeue": dequeued - released,
        "release_to_run_start": started - released,
        "run_seconds": (record.end_time or started) - released,
        "daemon_cpu_blocked": cpu,
    }


def _pct(share: float) -> str:
    return "-" if share != share else f"{share * 100:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--window", type=float, default=20.0, help="CPU sampling window, s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_run_queue_") as tmp:
        project = init_demo_project(Path(tmp) / "shop", rows=200)
        cli = Path(sys.executable).parent / "dango-dagster"
        subprocess.run([str(cli), "sync", "--project", str(project)], check=True, timeout=600)
        config = load_config(project)
        with DagsterDev(config, config.dagster_home, Path(tmp) / "dagster_dev.log") as dev:
            dev.wait_sensor_ticked()
            dev.wait_idle()
            daemon = daemon_process(dev)
            idle = cpu_share(daemon, args.window)
            rows = [
                trial(dev, project, args.window if i < 2 else 0, daemon) for i in range(args.trials)
            ]
    print(
        "| trial | release -> dequeued (s) | release -> run start (s) | daemon CPU, run held back |"
    )
    print("|---|---|---|---|")
    for i, row in enumerate(rows, 1):
        print(
            f"| {i} | {row['release_to_dequeue']:.2f} | {row['release_to_run_start']:.2f} | "
            f"{_pct(row['daemon_cpu_blocked'])} |"
        )
    dq = statistics.median(r["release_to_dequeue"] for r in rows)
    rs = statistics.median(r["release_to_run_start"] for r in rows)
    print(f"\nmedian: release -> dequeued {dq:.2f} s, release -> run start {rs:.2f} s")
    print(f"daemon CPU with nothing queued: {idle * 100:.1f} % of a core")


if __name__ == "__main__":
    main()
