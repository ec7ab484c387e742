"""``dango-dagster sync`` as a user runs it: a real console script, a real lock holder process."""

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from lockprocs.harness import LockProc

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project

CLI = str(Path(sys.executable).with_name("dango-dagster"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_demo_project(tmp_path_factory.mktemp("sync") / "shop", rows=200)


def _sync(project: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "sync", "--project", str(project), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sync_fails_fast_naming_the_holder(demo: Path) -> None:
    holder = LockProc("hold", demo, "ui", "sync_google_sheets")
    try:
        pid = int(holder.expect("HELD")[0])
        started = time.monotonic()
        proc = _sync(demo)
        elapsed = time.monotonic() - started
    finally:
        holder.let_go()
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 1.5, f"fail-fast took {elapsed:.2f} s"  # the "within a second"
    assert f"PID {pid}" in proc.stderr and "sync_google_sheets" in proc.stderr
    assert "--wait" in proc.stderr
    assert not load_config(demo).warehouse_path.exists()


@pytest.mark.slow
def test_sync_with_wait_completes_after_release(demo: Path) -> None:
    holder = LockProc("hold", demo, "ui", "sync_google_sheets")
    holder.expect("HELD")
    proc = subprocess.Popen(
        [CLI, "sync", "--project", str(demo), "--wait", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "lock_waiting" in line:
                holder.let_go()  # the queued sync must now take over and finish
        proc.wait(timeout=240)
    finally:
        holder.let_go()
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, out + (proc.stderr.read() if proc.stderr else "")
    waiting = next(line for line in lines if "lock_waiting" in line)
    assert "sync_google_sheets" in waiting and f"PID {holder.pid}" in waiting
    assert "completed" in out and "raw_orders/orders" in out
    # The summary a user reads: staging models are views, every dbt test as a check, the
    # snapshot with its size.
    assert any("staging/stg_orders" in line and line.rstrip().endswith("view") for line in lines)
    assert "checks:    28 of 28 passed" in out
    assert any(line.startswith("  snapshots/warehouse") and "MB" in line for line in lines)
    config = load_config(demo)
    with duckdb.connect(str(config.published_snapshot_path), read_only=True) as snap:
        assert snap.execute("select count(*) from marts.fct_daily_sales").fetchone()[0] > 0
    statuses = [json.loads(p.read_text()) for p in config.state_dir.glob("sync_status_*.json")]
    assert any(s["phase"] == "completed" for s in statuses)
    # The run is recorded in the project's Dagster instance, so `dagster dev` shows it.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(config.dagster_home)) as instance:
        assert any(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())


@pytest.mark.slow
def test_two_queued_syncs_at_once_both_succeed(tmp_path: Path) -> None:
    """Two writers started together: one waits for the other, neither fails."""
    project = init_demo_project(tmp_path / "shop", rows=100)
    procs = [
        subprocess.Popen(
            [CLI, "sync", "--project", str(project), "--wait", "180"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    config = load_config(project)
    phases = [json.loads(p.read_text())["phase"] for p in config.state_dir.glob("sync_status_*")]
    assert phases == ["completed", "completed"]
    with duckdb.connect(str(config.published_snapshot_path), read_only=True) as snap:
        assert snap.execute("select count(*) from raw_orders.orders").fetchone()[0] == 100
