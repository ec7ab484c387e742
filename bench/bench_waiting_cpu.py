"""CPU used by syncs that wait for the warehouse: this project vs. the old Dagster op pools.

Three ``dango-dagster sync --wait 300`` start while another sync holds the warehouse in a 30 s
write (a dbt Python model that sleeps, see ``tests/pause_support.py``). Each waiting process's CPU
time (psutil: user + system, all threads) is sampled from the moment it is seen waiting until
just before the write ends; CPU per waiting run = CPU seconds / wall seconds of that window.

In the same run, the same measurement on the code before the pools were removed (commit
``POOLS_COMMIT``, exported with ``git archive`` and put first on ``PYTHONPATH``), whose waiting
steps waited for a Dagster pool slot in the in-process executor. Its waiters are "waiting" once
their Dagster run has started (the pool claim comes first, and no status file says so).

Usage: ``nice -n 10 python bench/bench_waiting_cpu.py [--write-seconds 30] [--no-baseline]``;
prints a markdown table (docs/BENCHMARKS.md#waiting-cpu). About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pause_support import CLI, MARK_ENV, SLEEP_ENV, SLEEPING_MODEL, wait_until  # noqa: E402

POOLS_COMMIT = "f88ad00"  # the last commit with `pool=` on the assets and pool limits
WAITERS = 3


@dataclass
class Variant:
    name: str
    pythonpath: str | None  # None: this checkout

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (SLEEP_ENV, MARK_ENV)}
        env.pop("DAGSTER_HOME", None)
        env.pop("DANGO_PROJECT_DIR", None)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args], capture_output=True, text=True, env=self.env(**extra), check=False
        )

    def start(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CLI, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env(**extra),
        )


def _old_code(folder: Path) -> Path:
    """The package (and its shipped dagster_home, dbt project) as of ``POOLS_COMMIT``."""
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            POOLS_COMMIT,
            "dango_dagster",
            "dagster_home",
            "dbt_project",
            ".dango",
        ],
        capture_output=True,
        check=True,
    ).stdout
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _status_of(project: Path, pid: int) -> dict | None:
    """The status file of the sync running as ``pid``, if it has written one yet."""
    import json

    for path in (project / ".dango" / "state").rglob("sync_status_*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("pid") == pid:
            return data
    return None


def _status_phase(project: Path, pid: int) -> str | None:
    data = _status_of(project, pid)
    return data.get("phase") if data else None


def _run_started(project: Path, pid: int) -> bool:
    """Old code: the waiter's Dagster run has started (its step then claims a pool slot)."""
    import dagster as dg

    data = _status_of(project, pid)
    if data is None:
        return False
    home = project / ".dango" / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(data["run_id"])
        return run is not None and run.status == dg.DagsterRunStatus.STARTED


def measure(variant: Variant, workdir: Path, write_seconds: float) -> list[float | None]:
    project = workdir / variant.name / "shop"
    done = variant.run("demo", "init", str(project), "--rows", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    dbt_dir = project / ("dbt" if (project / "dbt").is_dir() else "dbt_project")
    (dbt_dir / "models" / "marts" / "zz_pause.py").write_text(SLEEPING_MODEL)
    warm = variant.run("sync", "--project", str(project))  # warehouse, instance, manifest
    assert warm.returncode == 0, warm.stdout + warm.stderr

    mark = workdir / variant.name / "writing"
    writer = variant.start(
        "sync", "--project", str(project), **{SLEEP_ENV: str(write_seconds), MARK_ENV: str(mark)}
    )
    wait_until(mark.exists, 300, "the writing sync to reach its dbt build")
    write_ends = time.monotonic() + write_seconds
    waiters = [
        variant.start("sync", "--project", str(project), "--wait", "300") for _ in range(WAITERS)
    ]
    ready = (
        (lambda pid: _status_phase(project, pid) == "lock_waiting")
        if variant.pythonpath is None
        else (lambda pid: _run_started(project, pid))
    )
    starts: dict[int, tuple[float, float]] = {}
    procs = {w.pid: psutil.Process(w.pid) for w in waiters}
    while time.monotonic() < write_ends - 2 and len(starts) < WAITERS:
        for pid, proc in procs.items():
            if pid not in starts and ready(pid):
                time.sleep(0.5)  # past the first claim / first report
                starts[pid] = (time.monotonic(), _cpu(proc))
        time.sleep(0.1)
    time.sleep(max(0.0, write_ends - 1 - time.monotonic()))
    usage: list[float | None] = []
    for pid, proc in procs.items():
        if pid not in starts or time.monotonic() - starts[pid][0] < 3:
            usage.append(None)  # start-up outlasted the write: no waiting window
            continue
        t0, c0 = starts[pid]
        usage.append((_cpu(proc) - c0) / (time.monotonic() - t0))
    writer.wait(timeout=600)
    for waiter in waiters:
        waiter.wait(timeout=900)
    return usage


def _fmt(values: list[float | None]) -> str:
    seen = [v for v in values if v is not None]
    runs = ", ".join("n/a" if v is None else f"{v * 100:.1f} %" for v in values)
    median = f"{statistics.median(seen) * 100:.2f} %" if seen else "n/a"
    return f"{median} | {runs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-seconds", type=float, default=30.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the old pools code")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_waiting_") as tmp:
        work = Path(tmp)
        variants = [Variant("lock", None)]
        if not args.no_baseline:
            variants.append(Variant("pools", str(_old_code(work / "old"))))
        results = {v.name: measure(v, work, args.write_seconds) for v in variants}
    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{WAITERS} waiting syncs behind a {args.write_seconds:.0f} s write\n"
    )
    print("| waiting on | CPU per waiting run (median) | each run |")
    print("|---|---|---|")
    labels = {
        "lock": "the warehouse lock (this project)",
        "pools": f"a Dagster pool slot ({POOLS_COMMIT})",
    }
    for name, values in results.items():
        print(f"| {labels[name]} | {_fmt(values)} |")


if __name__ == "__main__":
    main()
