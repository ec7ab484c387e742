"""``dango-dagster snapshot create|list`` and ``notebook.connect``, as users run them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from snapshot_support import call, make_warehouse, wait_for, write_config

from dango_dagster.config import load_config
from dango_dagster.notebook import connect
from dango_dagster.snapshots import list_snapshots, take_snapshot


def _cli(python: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "dango_dagster.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project(project_dir: Path) -> Path:
    write_config(project_dir, notebooks={"users": ["alice"]}, lock={"queue_timeout_seconds": 30})
    make_warehouse(load_config(project_dir).warehouse_path)
    return project_dir


def _hold_lock(python: str, project: Path, release: Path) -> subprocess.Popen[str]:
    ready = project / "holder_ready"
    holder = call(python, "hold_lock", str(project), str(ready), str(release))
    wait_for(ready, proc=holder)
    return holder


def test_create_and_list(project: Path, python_exe: str) -> None:
    made = _cli(python_exe, "snapshot", "create", "--project", str(project), "--user", "Bob")
    assert made.returncode == 0, made.stderr
    assert "published:" in made.stdout and "bob:" in made.stdout

    made = _cli(python_exe, "snapshot", "create", "--project", str(project), "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert list(result["user_paths"]) == ["alice"]  # default: notebooks.users
    assert Path(result["user_paths"]["alice"]).exists()

    listed = _cli(python_exe, "snapshot", "list", "--project", str(project), "--json")
    data = json.loads(listed.stdout)
    assert data["published"]["path"] == str(load_config(project).published_snapshot_path)
    assert sorted(s["user"] for s in data["snapshots"]) == ["alice", "bob"]
    text = _cli(python_exe, "snapshot", "list", "--project", str(project), "--user", "BOB")
    assert text.returncode == 0
    assert "bob" in text.stdout and "alice" not in text.stdout


def test_create_fails_fast_naming_the_holder(project: Path, python_exe: str) -> None:
    release = project / "release"
    holder = _hold_lock(python_exe, project, release)
    try:
        started = time.monotonic()
        made = _cli(python_exe, "snapshot", "create", "--project", str(project))
        took = time.monotonic() - started
    finally:
        release.touch()
        holder.communicate(timeout=30)
    assert made.returncode == 2, made.stderr
    assert str(holder.pid) in made.stderr and "nightly-sync" in made.stderr
    assert took < 30  # it did not wait for the holder
    assert list_snapshots(load_config(project)) == []


def test_create_with_wait_takes_over_when_the_holder_finishes(
    project: Path, python_exe: str
) -> None:
    release = project / "release"
    holder = _hold_lock(python_exe, project, release)
    proc = subprocess.Popen(
        [python_exe, "-m", "dango_dagster.cli", "snapshot", "create"]
        + ["--project", str(project), "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    assert proc.poll() is None  # still waiting
    release.touch()
    out, err = proc.communicate(timeout=60)
    holder.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "waiting for the warehouse lock" in err
    assert len(list_snapshots(load_config(project), "alice")) == 1


def test_create_errors_are_clear(project_dir: Path, python_exe: str) -> None:
    missing = _cli(python_exe, "snapshot", "create", "--project", str(project_dir))
    assert missing.returncode == 3
    assert "Run the pipeline first" in missing.stderr and "Traceback" not in missing.stderr
    make_warehouse(load_config(project_dir).warehouse_path)
    bad = _cli(python_exe, "snapshot", "create", "--project", str(project_dir), "--user", "..")
    assert bad.returncode == 2
    assert "user name" in bad.stderr.lower()


def test_notebook_connect_creates_then_reuses(project: Path) -> None:
    cfg = load_config(project)
    con = connect("Alice", project)
    first = con.execute("select path from duckdb_databases() where not internal").fetchone()[0]
    assert Path(first).parent == cfg.snapshots_dir and Path(first).name.startswith(
        "warehouse_alice_"
    )
    assert con.execute("select count(*) from marts.fct_daily_sales").fetchone() == (97,)
    with pytest.raises(duckdb.Error, match="read-only"):
        con.execute("create table marts.x (i integer)")
    con.close()
    assert not cfg.published_snapshot_path.exists()  # a notebook does not republish

    again = connect("alice", project)
    path = again.execute("select path from duckdb_databases() where not internal").fetchone()[0]
    again.close()
    assert path == first
    assert len(list_snapshots(cfg, "alice")) == 1

    fresh = connect("alice", project, refresh=True)
    newer = fresh.execute("select path from duckdb_databases() where not internal").fetchone()[0]
    fresh.close()
    assert newer != first and len(list_snapshots(cfg, "alice")) == 2


def test_notebook_never_opens_the_live_file(project: Path, python_exe: str) -> None:
    """With a snapshot in place, connect works while a writer holds the lock and the file."""
    cfg = load_config(project)
    take_snapshot(cfg, users=["alice"])
    release = project / "release"
    holder = _hold_lock(python_exe, project, release)
    ready = project / "rogue_ready"
    live = call(python_exe, "hold_live_open", str(cfg.warehouse_path), str(ready), str(release))
    try:
        wait_for(ready, proc=live)
        con = connect("alice", project)
        assert con.execute("select count(*) from raw_shop.orders").fetchone() == (1000,)
        con.close()
    finally:
        release.touch()
        holder.communicate(timeout=30)
        live.communicate(timeout=30)


def test_notebook_connect_waits_for_a_running_sync(project: Path, python_exe: str) -> None:
    release = project / "release"
    holder = _hold_lock(python_exe, project, release)
    call(python_exe, "release_later", str(release), 1.0)
    try:
        started = time.monotonic()
        con = connect("dave", project)
        waited = time.monotonic() - started
    finally:
        release.touch()
        holder.communicate(timeout=30)
    assert con.execute("select count(*) from raw_shop.orders").fetchone() == (1000,)
    con.close()
    assert waited >= 0.5  # it queued behind the holder instead of failing
