"""A sync killed with SIGKILL in each phase never blocks the next one, and nothing is lost.

Everything is real: the console script ``dango-dagster``, the project's persistent Dagster
instance, the kernel lock, ``kill -9``. Where the window to kill in is narrow (the dlt load and the
snapshot copy hold the lock for milliseconds on the demo), a helper process holds the lock until
the sync queues for it in that step, and the sync then runs in slow motion (SIGSTOP/SIGCONT) so
the kill lands while it holds the lock, checked from the lock's holder info.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from lockprocs.harness import LockProc
from pause_support import (
    SlowMotion,
    add_sleeping_model,
    start_sync,
    sync_env,
    wait_until,
)

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import lock_paths, read_holder_info
from dango_dagster.sync_status import FINISHED_PHASES, read_status, status_path

pytestmark = pytest.mark.slow

RUNNING_PHASES = {"queued", "lock_waiting", "data_load", "dbt", "snapshot"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo project that has synced once: a warehouse and a published snapshot exist."""
    project = init_demo_project(tmp_path_factory.mktemp("crash") / "shop", rows=300)
    add_sleeping_model(project)
    proc = start_sync(project)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return project


def _snapshot_rows(project: Path) -> int:
    path = load_config(project).published_snapshot_path
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("select count(*) from marts.fct_orders").fetchone()[0]


def _holder_is(project: Path, pid: int, operation: str) -> bool:
    info = read_holder_info(lock_paths(project)[1])
    return info is not None and info.pid == pid and info.operation.startswith(operation)


def _status(project: Path, proc_pid: int) -> dict:
    state = load_config(project).state_dir
    for path in state.glob("sync_status_*.json"):
        data = read_status(path) or {}
        if data.get("pid") == proc_pid:
            return data
    return {}


def _kill_in_locked_step(project: Path, operation: str) -> tuple[int, str]:
    """Start a sync, kill -9 it while it holds the lock for ``operation``; (pid, run id)."""
    if operation == "dbt build":
        mark = project / "in_dbt"
        mark.unlink(missing_ok=True)
        proc = start_sync(project, "--wait", "120", env=sync_env(sleep=60, mark=mark))
        wait_until(mark.exists, 240, "the sync to reach its dbt build")
        assert _holder_is(project, proc.pid, "dbt build")
    else:
        # Hold the lock until the sync queues for it in the step we want, then let it in slowly.
        mark = project / "in_dbt"
        mark.unlink(missing_ok=True)
        env = sync_env(sleep=3, mark=mark) if operation == "snapshot" else sync_env()
        proc = start_sync(project, "--wait", "120", env=env)
        if operation == "snapshot":
            wait_until(mark.exists, 240, "the sync to reach its dbt build")
        helper = LockProc("hold", project, "test", "hold until the sync queues")
        try:
            helper.expect("HELD", timeout=120)

            def queued_in_step() -> bool:
                data = _status(project, proc.pid)
                return data.get("phase") == "lock_waiting" and operation in data.get("message", "")

            wait_until(queued_in_step, 240, f"the sync to queue for the lock in {operation}")
            slow = SlowMotion(proc.pid)
            try:
                helper.let_go()
                phase = "data_load" if operation == "load files" else operation

                def writing() -> bool:
                    return _holder_is(project, proc.pid, operation) and (
                        _status(project, proc.pid).get("phase") == phase
                    )

                wait_until(writing, 60, f"{operation} to hold the lock")
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                slow.stop()
        finally:
            helper.cleanup()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run_id = _status(project, proc.pid)["run_id"]
    return proc.pid, run_id


@pytest.mark.parametrize(
    ("operation", "activity"),
    [("load files", "the data load"), ("dbt build", "dbt build"), ("snapshot", "the snapshot")],
)
def test_kill_9_then_next_sync_succeeds_unaided(shop: Path, operation: str, activity: str) -> None:
    rows_before = _snapshot_rows(shop)
    pid, run_id = _kill_in_locked_step(shop, operation)
    config = load_config(shop)
    killed_status = read_status(status_path(config.state_dir, run_id[:12]))
    assert killed_status["phase"] in RUNNING_PHASES  # the dead run could not say it died
    assert _snapshot_rows(shop) == rows_before  # the published snapshot is intact

    started = time.monotonic()
    proc = start_sync(shop, "--wait", "60")
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, out + err
    assert elapsed < 60, f"the next sync took {elapsed:.1f} s"
    assert _snapshot_rows(shop) == rows_before

    statuses = [json.loads(p.read_text()) for p in config.state_dir.glob("sync_status_*.json")]
    assert not [s for s in statuses if s["phase"] not in FINISHED_PHASES], statuses
    killed = read_status(status_path(config.state_dir, run_id[:12]))
    assert killed["phase"] == "interrupted" and killed["pid"] == pid
    assert f"process {pid} gone during {activity}" in killed["message"]
    with dg.DagsterInstance.from_config(str(config.dagster_home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        messages = " ".join(e.message or "" for e in instance.all_logs(run_id))
        assert f"process {pid} gone during {activity}" in messages
