"""``dango-dagster lock status|wait`` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lockprocs.harness import Spawner, spawner_fixture

from dango_dagster.lock import lock_paths

CLI = str(Path(sys.executable).with_name("dango-dagster"))


spawn = pytest.fixture(spawner_fixture, name="spawn")


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


def status_json(project: Path) -> tuple[int, dict]:
    done = cli("lock", "status", "--json", "--project", project)
    return done.returncode, json.loads(done.stdout)


def test_status_free(project_dir: Path) -> None:
    done = cli("lock", "status", "--project", project_dir)
    assert done.returncode == 0, done.stderr
    assert "lock:      free" in done.stdout
    code, report = status_json(project_dir)
    assert code == 0
    assert report["held"] is False and report["holder"] is None and report["info_stale"] is False
    assert not lock_paths(project_dir)[0].exists()  # looking never creates (or deletes) anything


def test_status_held_names_every_holder_field(project_dir: Path, spawn: Spawner) -> None:
    lock_path, _ = lock_paths(project_dir)
    holder = spawn("hold", project_dir, "schedule", "dbt build nightly")
    pid = int(holder.expect("HELD")[0])
    inode = lock_path.stat().st_ino

    done = cli("lock", "status", "--project", project_dir)
    assert done.returncode == 1, done.stderr
    for text in ("HELD", str(pid), "schedule", "dbt build nightly", "started_at", "held for"):
        assert text in done.stdout

    code, report = status_json(project_dir)
    assert code == 1 and report["held"] is True
    assert report["holder"]["pid"] == pid
    assert report["holder"]["known"] is True
    assert report["holder"]["source"] == "schedule"
    assert report["holder"]["operation"] == "dbt build nightly"
    assert report["holder"]["hostname"] and report["holder"]["started_at"]
    assert report["holder"]["process_start_time"] > 0
    assert 0 <= report["holder"]["held_seconds"] < 120
    assert report["info_stale"] is False and report["info_stale_reason"] is None
    assert report["lock_file"] == str(lock_path)
    assert lock_path.stat().st_ino == inode


def test_status_reports_stale_info_of_a_killed_holder(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("hold", project_dir, "ui", "sync")
    pid = int(holder.expect("HELD")[0])
    holder.kill()
    holder.cleanup()

    done = cli("lock", "status", "--project", project_dir)
    assert done.returncode == 0, done.stderr
    assert "free" in done.stdout and "stale" in done.stdout
    assert f"process {pid} is gone" in done.stdout
    code, report = status_json(project_dir)
    assert code == 0 and report["info_stale"] is True
    assert report["info_on_disk"]["pid"] == pid
    assert lock_paths(project_dir)[1].exists()  # status only looks; acquisition cleans


def test_status_unknown_holder(project_dir: Path, spawn: Spawner) -> None:
    foreign = spawn("bare", project_dir)
    pid = int(foreign.expect("HELD")[0])
    done = cli("lock", "status", "--project", project_dir)
    assert done.returncode == 1
    assert "unknown holder" in done.stdout and str(pid) in done.stdout
    code, report = status_json(project_dir)
    assert code == 1 and report["holder"]["known"] is False and report["holder"]["pid"] == pid


def test_status_survives_corrupt_info(project_dir: Path) -> None:
    lock_paths(project_dir)[1].write_text("{not json")
    done = cli("lock", "status", "--project", project_dir)
    assert done.returncode == 0, done.stderr
    assert "empty or corrupt" in done.stdout
    code, report = status_json(project_dir)
    assert report["info_corrupt"] is True and report["info_stale"] is True


def test_status_uses_dango_project_dir(project_dir: Path, spawn: Spawner) -> None:
    spawn("hold", project_dir).expect("HELD")
    env_run = subprocess.run(
        [CLI, "lock", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"DANGO_PROJECT_DIR": str(project_dir), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert env_run.returncode == 1 and str(project_dir) in env_run.stdout


def test_wait_times_out_naming_the_holder(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("hold", project_dir, "sensor", "dlt load")
    pid = int(holder.expect("HELD")[0])
    started = time.monotonic()
    done = cli("lock", "wait", "--timeout", 1, "--project", project_dir)
    assert 0.9 <= time.monotonic() - started < 30
    assert done.returncode == 2
    assert "waiting for" in done.stdout and str(pid) in done.stdout  # progress
    assert "still locked" in done.stderr.splitlines()[-1] and "'dlt load'" in done.stderr


def test_wait_returns_once_the_holder_lets_go(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("hold", project_dir)
    holder.expect("HELD")
    waiting = subprocess.Popen(
        [CLI, "lock", "wait", "--timeout", "60", "--project", str(project_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None
    assert waiting.stdout.readline().startswith("waiting for")
    holder.let_go()
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "lock is free" in out


def test_lock_status_imports_no_dagster_or_dbt(project_dir: Path) -> None:
    """The console script's own code path, with the modules it loaded listed at exit."""
    heavy = ("dagster", "dbt", "dlt", "duckdb", "fastapi", "uvicorn", "dagster_dbt")
    code = (
        "import sys, json\n"
        "from dango_dagster.cli import main\n"
        f"rc = main(['lock', 'status', '--json', '--project', {str(project_dir)!r}])\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))\n"
        "print('LOADED', json.dumps(loaded), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr.split("LOADED ", 1)[1])
    assert loaded == [], f"`lock status` imported {loaded}"


def _write_status(project: Path, run_id: str, phase: str, pid: int, start: float | None) -> Path:
    path = project / ".dango" / "state" / f"sync_status_{run_id[:12]}.json"
    data = {
        "sync_id": run_id[:12],
        "run_id": run_id,
        "pid": pid,
        "process_start_time": start,
        "hostname": socket.gethostname(),
        "phase": phase,
        "message": f"{phase}: writing the warehouse",
        "updated_at": "2026-12-01T00:00:00.000+00:00",
    }
    path.write_text(json.dumps(data))
    return path


def test_status_lists_waiting_runs_and_reconciles_dead_ones(project_dir: Path) -> None:
    """Status files: a live waiting run is listed; a run whose process is gone, or whose PID now
    belongs to another process, is marked interrupted with the phase it died in."""
    import psutil

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    me = psutil.Process()
    waiting = _write_status(project_dir, "a" * 36, "lock_waiting", me.pid, me.create_time())
    dead = _write_status(project_dir, "b" * 36, "dbt", dead_pid, 1.0)
    reused = _write_status(project_dir, "c" * 36, "data_load", me.pid, me.create_time() - 100)

    code, report = status_json(project_dir)
    assert code == 0
    assert [r["run_id"] for r in report["runs"]] == ["a" * 36]
    dead_runs = {r["run_id"][0]: r for r in report["dead_runs"]}
    assert sorted(dead_runs) == ["b", "c"]
    assert f"process {dead_pid} gone during dbt build" in dead_runs["b"]["message"]
    assert "belongs to another process" in dead_runs["c"]["message"]
    for path in (dead, reused):
        data = json.loads(path.read_text())
        assert data["phase"] == "interrupted" and data["pid"] in (dead_pid, me.pid)
    assert json.loads(waiting.read_text())["phase"] == "lock_waiting"

    text = cli("lock", "status", "--project", project_dir).stdout
    assert f"run:       {'a' * 8} lock_waiting" in text
