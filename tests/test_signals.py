"""Ctrl-C and SIGTERM during a real sync's dbt build: one line, the right exit code, the lock free,
the Dagster run canceled, the status file ``interrupted`` (the console script, a real instance)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from pause_support import CLI, add_sleeping_model, start_sync, sync_env, wait_until

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project
from dango_dagster.sync_status import list_statuses

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = init_demo_project(tmp_path_factory.mktemp("signals") / "shop", rows=100)
    add_sleeping_model(project)
    return project


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_dbt_exits_with_one_line(shop: Path, sig: int, code: int) -> None:
    mark = shop / f"in_dbt_{sig}"
    proc = start_sync(shop, env=sync_env(sleep=120, mark=mark))
    wait_until(mark.exists, 240, "the sync to reach its dbt build")
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, out + err
    assert time.monotonic() - sent < 15  # not dagster-dbt's 25 s grace, nor the model's 120 s
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    name = signal.Signals(sig).name
    assert lines[0].startswith(f"error: interrupted by {name} during dbt build"), err
    assert "published snapshot is unchanged" in lines[0]

    status = subprocess.run(
        [CLI, "lock", "status", "--project", str(shop)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "lock:      free" in status.stdout, status.stdout
    config = load_config(shop)
    (mine,) = [s for s in list_statuses(config.state_dir) if s["pid"] == proc.pid]
    assert mine["phase"] == "interrupted" and mine["interrupted_during"] == "dbt"
    with dg.DagsterInstance.from_config(str(config.dagster_home)) as instance:
        run = instance.get_run_by_id(mine["run_id"])
        assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
