"""Six ``dango-dagster sync --wait 300`` at once behind a foreign ``flock`` holder: every one
waits visibly at no CPU cost, then all succeed, one writer at a time.

The holder is util-linux ``flock`` on ``.dango/state/dbt.lock`` (it writes no holder info: a
foreign tool) and keeps the lock at least 60 s, and until every sync says it waits, so the syncs
really queue on it rather than finishing their start-up after it let go.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from pause_support import start_sync, wait_until

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import lock_paths
from dango_dagster.lock.info import kernel_lock_pids
from dango_dagster.sync_status import list_statuses

pytestmark = pytest.mark.slow

SYNCS = 6
HOLD_AT_LEAST_S = 60
ALL_WAITING_S = 240  # how long the six may take to start and say they wait
# A generous bound, so the test cannot be flaky on a busy machine: the benchmark measures ~0 %.
MAX_WAITING_CPU = 0.20


def _waiting(project: Path, pids: set[int]) -> set[int]:
    state = load_config(project).state_dir
    return {s["pid"] for s in list_statuses(state) if s["phase"] == "lock_waiting"} & pids


def _not_waiting(project: Path, syncs: list[subprocess.Popen[str]]) -> str:
    """Why not all syncs wait: each one's phase, and the output of those that ended."""
    state = load_config(project).state_dir
    phases = {s["pid"]: s["phase"] for s in list_statuses(state)}
    lines = [f"timed out after {ALL_WAITING_S} s waiting for all six syncs to wait:"]
    for proc in syncs:
        if proc.poll() is None:
            lines.append(f"sync {proc.pid}: running, phase {phases.get(proc.pid)}")
        else:
            out, err = proc.communicate()
            lines.append(f"sync {proc.pid}: exited {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}")
    return "\n".join(lines)


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


@pytest.mark.skipif(shutil.which("flock") is None, reason="util-linux flock is not installed")
def test_six_waiting_syncs_behind_a_foreign_holder(tmp_path: Path) -> None:
    project = init_demo_project(tmp_path / "shop", rows=100)
    lock_file = lock_paths(project)[0]
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["flock", str(lock_file), "cat"], stdin=subprocess.PIPE)
    held_since = time.monotonic()
    syncs = [start_sync(project, "--wait", "300") for _ in range(SYNCS)]
    pids = {p.pid for p in syncs}
    try:
        try:
            wait_until(lambda: _waiting(project, pids) == pids, ALL_WAITING_S, "all six to wait")
        except AssertionError:
            raise AssertionError(_not_waiting(project, syncs)) from None
        # CPU of each waiting sync over a few seconds: it blocks (the lock's waiter thread in
        # the kernel, or a 50 ms poll of its source's mutex), it does not spin.
        procs = {pid: psutil.Process(pid) for pid in pids}
        before = {pid: _cpu_seconds(p) for pid, p in procs.items()}
        window_start = time.monotonic()
        time.sleep(5)
        elapsed = time.monotonic() - window_start
        assert _waiting(project, pids) == pids  # still all waiting over the whole window
        usage = {pid: (_cpu_seconds(p) - before[pid]) / elapsed for pid, p in procs.items()}
        assert max(usage.values()) < MAX_WAITING_CPU, usage
        time.sleep(max(0.0, HOLD_AT_LEAST_S - (time.monotonic() - held_since)))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # One writer at a time, seen from the kernel's lock table while the six take their turns.
    holders: list[set[int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids_now = kernel_lock_pids(lock_file)
            if pids_now:
                holders.append(pids_now)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        outputs = [p.communicate(timeout=600) for p in syncs]
    finally:
        stop.set()
        sampler.join(timeout=5)
    for proc, (out, err) in zip(syncs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "lock_waiting" in out, out  # each reports its wait in its progress lines
    assert max(len(h) for h in holders) == 1, [h for h in holders if len(h) > 1][:5]
    assert set().union(*holders) == pids  # each of the six held it, in turn
    config = load_config(project)
    with dg.DagsterInstance.from_config(str(config.dagster_home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == SYNCS and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
