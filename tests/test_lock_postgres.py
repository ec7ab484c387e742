"""The Postgres lock backend across real OS processes, on a real PostgreSQL the session starts.

Each "host" is a separate process in a project folder of its own; they share one lock only through
the server (``DANGO_LOCK_BACKEND=postgres``, ``DANGO_LOCK_DSN``, ``DANGO_LOCK_KEY``), since their
``.dango/state/dbt.lock`` files are different files. Holders are killed with a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lockprocs.harness import Spawner, spawner_fixture
from pgserver import PgServer

from dango_dagster.errors import DbtLockError, DbtLockTimeout, ProjectConfigError
from dango_dagster.lock import DbtLock, lock_target, read_lock_holder
from dango_dagster.lock.postgres import lock_key_int, read_pg_holder

spawn = pytest.fixture(spawner_fixture, name="spawn")
CLI = str(Path(sys.executable).with_name("dango-dagster"))


@pytest.fixture
def pg_env(pg_server: PgServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Every process of this test (and its children) on the postgres backend, a key of its own."""
    key = f"wh-{request.node.name}"[:60]
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "postgres")
    monkeypatch.setenv("DANGO_LOCK_DSN", pg_server.dsn("lock"))
    monkeypatch.setenv("DANGO_LOCK_KEY", key)
    return key


def _hosts(tmp_path: Path, n: int) -> list[Path]:
    hosts = []
    for i in range(n):
        root = tmp_path / f"host{i}"
        (root / ".dango" / "state").mkdir(parents=True)
        hosts.append(root)
    return hosts


def test_settings_and_environment_pick_the_backend(tmp_path: Path, monkeypatch) -> None:
    (root,) = _hosts(tmp_path, 1)
    assert lock_target(root).backend == "file"
    (root / ".dango" / "project.yml").write_text(
        "lock:\n  backend: postgres\n  dsn: postgresql://u@db/lock\n"
        "warehouse:\n  kind: ducklake\n  catalog: postgres:dbname=lake\n"
    )
    target = lock_target(root)
    assert (target.backend, target.dsn, target.key, target.flock) == (
        "postgres",
        "postgresql://u@db/lock",
        "host0",  # default key: the project folder's name
        False,  # a DuckLake warehouse is no local file: no flock
    )
    monkeypatch.setenv("DANGO_LOCK_KEY", "shop")
    monkeypatch.setenv("DANGO_LOCK_DSN", "postgresql://v@other/lock")
    assert (lock_target(root).key, lock_target(root).dsn) == ("shop", "postgresql://v@other/lock")
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "file")
    assert lock_target(root).backend == "file"
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "redis")
    with pytest.raises(ProjectConfigError, match="DANGO_LOCK_BACKEND"):
        DbtLock(root)
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "postgres")
    (root / ".dango" / "project.yml").write_text("lock: {}\n")
    monkeypatch.delenv("DANGO_LOCK_DSN")
    with pytest.raises(ProjectConfigError, match="no lock server"):
        DbtLock(root)


def test_three_hosts_never_overlap(pg_env: str, tmp_path: Path, spawn: Spawner) -> None:
    """3 processes in 3 project folders x 15 acquisitions: one shared witness, no overlap."""
    witness, log = tmp_path / "witness", tmp_path / "log"
    witness.write_bytes(b"")
    workers = [spawn("worker", host, witness, log, 15) for host in _hosts(tmp_path, 3)]
    violations = [int(w.expect("DONE", timeout=120)[0]) for w in workers]
    assert [w.let_go() for w in workers] == [0] * 3
    assert violations == [0, 0, 0]
    events = sorted(
        (int(ns), kind, int(pid)) for ns, kind, pid in (line.split() for line in log.open())
    )
    assert len(events) == 3 * 15 * 2
    for (_, kind_in, pid_in), (_, kind_out, pid_out) in zip(events[::2], events[1::2], strict=True):
        assert (kind_in, kind_out, pid_in) == ("enter", "exit", pid_out)
    assert read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env) is None


def test_sigkilled_holder_is_replaced_within_a_second_and_status_names_it(
    pg_env: str, tmp_path: Path, spawn: Spawner
) -> None:
    a, b, c = _hosts(tmp_path, 3)
    holder = spawn("hold", a, "host-a", "dbt build")
    holder_pid = int(holder.expect("HELD")[0])

    # `lock status` from a third folder ("another host") names the holder's pid and host.
    status = subprocess.run(
        [CLI, "lock", "status", "--project", str(c), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1, status.stderr
    report = json.loads(status.stdout)
    assert report["backend"] == "postgres" and report["key"] == pg_env
    assert report["holder"]["pid"] == holder_pid
    assert report["holder"]["hostname"] == socket.gethostname()
    assert report["holder"]["operation"] == "dbt build"
    text = subprocess.run(
        [CLI, "lock", "status", "--project", str(c)], capture_output=True, text=True
    ).stdout
    assert f"pid:        {holder_pid}" in text and "backend:   postgres" in text

    waiter = spawn("wait", b, 30)
    waiting = waiter.expect("WAITING")
    assert int(waiting[1]) == holder_pid  # the wait reports who it waits for
    holder.kill()
    killed_ns = time.monotonic_ns()
    got_ns = int(waiter.expect("GOT", timeout=10)[0])
    assert (got_ns - killed_ns) / 1e9 < 1.0
    assert read_lock_holder(c).pid == waiter.pid
    assert waiter.let_go() == 0
    assert read_lock_holder(c) is None


def test_fail_fast_and_timeout_name_the_holder(pg_env: str, tmp_path: Path) -> None:
    """Another host fails at once (timeout 0) or after its wait, naming us; waits report."""
    a, b = _hosts(tmp_path, 2)
    code = (
        "import sys\nfrom dango_dagster.lock import DbtLock, DbtLockTimeout\n"
        "for t in (0, 0.7):\n"
        "    try:\n        DbtLock(sys.argv[1], report_interval=0.2).acquire(timeout=t, "
        "on_wait=lambda w: print('WAIT', round(w.waited_seconds, 1), w.holder.pid))\n"
        "    except DbtLockTimeout as e:\n        print('TIMEOUT', e.holder.pid, e)\n"
    )
    with DbtLock(a, source="host-a", operation="dlt load"):
        out = subprocess.run(
            [sys.executable, "-c", code, str(b)], capture_output=True, text=True, timeout=60
        ).stdout
    fail_fast, timed_out = [line for line in out.splitlines() if line.startswith("TIMEOUT")]
    assert f"TIMEOUT {os.getpid()} " in fail_fast and "did not wait (fail-fast)" in fail_fast
    assert "operation 'dlt load'" in fail_fast
    assert "gave up after waiting 0.7 s" in timed_out and "source 'host-a'" in timed_out, out
    assert out.count("WAIT ") >= 2 and f" {os.getpid()}\n" in out, out


def test_reentrant_in_one_process_and_local_flock_taken_too(
    pg_env: str, project_dir: Path, spawn: Spawner
) -> None:
    """Nested holds join; a file warehouse also takes the local flock, so Dango stays out."""
    outer = DbtLock(project_dir, source="outer").acquire(timeout=0)
    inner = DbtLock(project_dir, source="inner").acquire(timeout=0)
    assert read_lock_holder(project_dir).source == "outer"
    dango = spawn("dango", project_dir)
    dango.expect("BUSY")  # Dango's LOCK_EX|LOCK_NB on dbt.lock fails: we hold the flock too
    inner.release()
    assert read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env).source == "outer"
    outer.release()
    assert read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env) is None


def test_dango_holding_the_local_flock_blocks_and_is_named(
    pg_env: str, project_dir: Path, spawn: Spawner
) -> None:
    dango = spawn("dango", project_dir, "ui", "sync shop")
    dango_pid = int(dango.expect("HELD")[0])
    with pytest.raises(DbtLockTimeout) as info:
        DbtLock(project_dir).acquire(timeout=0.3)
    assert info.value.holder.pid == dango_pid and "sync shop" in str(info.value)
    # Postgres was let go again: nobody holds the advisory lock while we failed.
    assert read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env) is None
    assert read_lock_holder(project_dir).pid == dango_pid  # status shows the local holder
    dango.let_go()


def test_forked_child_cannot_end_the_parents_hold(
    pg_env: str, project_dir: Path, spawn: Spawner
) -> None:
    forker = spawn("forker", project_dir)
    line = forker.expect("CHILD")
    assert line[1] == "False"  # the child holds nothing and could not take it
    assert read_lock_holder(project_dir).source == "forker"  # the child's exit path left it alone
    forker.kill()
    deadline = time.monotonic() + 10
    while read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env) is not None:
        assert time.monotonic() < deadline, "the child kept the dead parent's lock alive"
        time.sleep(0.05)


def test_dead_holders_row_is_never_believed(pg_env: str, project_dir: Path) -> None:
    lock = DbtLock(project_dir, source="ghost").acquire(timeout=0)
    state_session = lock.target  # the session is in the registry; end it under the holder
    from dango_dagster.lock.registry import state_for

    session = state_for(state_session.registry_key).held.session
    session.conn.close()  # as if the holder died: the row stays, the lock goes
    assert read_pg_holder(os.environ["DANGO_LOCK_DSN"], pg_env) is None
    lock.release()  # the release of a lost session is harmless


def test_unreachable_server_is_a_clear_error_without_the_password(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "postgres")
    monkeypatch.setenv("DANGO_LOCK_DSN", "postgresql://u:s3cret@127.0.0.1:1/lock")
    with pytest.raises(DbtLockError) as info:
        DbtLock(project_dir).acquire(timeout=0)
    assert "s3cret" not in str(info.value) and "DANGO_LOCK_DSN" in str(info.value).splitlines()[-1]


def test_keys_are_stable_64_bit_integers() -> None:
    assert lock_key_int("warehouse") == lock_key_int("warehouse") == -3871128109523096412
    assert lock_key_int("a") != lock_key_int("b")


def test_holder_session_has_keepalives_so_a_dead_host_is_dropped(pg_server: PgServer) -> None:
    """A host that dies silently closes no socket: the server drops its session (and lock) only
    through TCP keepalives, set on every holder's session (~25 s instead of the OS's ~2 h)."""
    from dango_dagster.lock.postgres import PgLockSession

    session = PgLockSession(pg_server.dsn("lock"), "keepalive-test")
    try:
        shown = {
            name: session._scalar(f"SHOW {name}")
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert shown == {
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
        }
        assert session._scalar("SHOW tcp_user_timeout") in ("25000", "25s")
        assert session.conn.get_dsn_parameters().get("keepalives") == "1"
    finally:
        session.close()
