"""DbtLock's contract inside one process (re-entrancy, threads, hooks, bad holder info), checked
against holders in real other processes."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from lockprocs.harness import Spawner, spawner_fixture

from dango_dagster._fs import atomic_write_json
from dango_dagster.cli.lock_cmd import lock_report
from dango_dagster.lock import (
    DbtLock,
    DbtLockError,
    DbtLockTimeout,
    LockWait,
    lock_paths,
    read_holder_info,
    read_lock_holder,
)
from dango_dagster.lock.info import kernel_lock_pids
from dango_dagster.lock.primitives import open_lock_file, poll_lock, unlock

spawn = pytest.fixture(spawner_fixture, name="spawn")


def waiter_threads() -> int:
    return sum(t.name == "dbt-lock-waiter" and t.is_alive() for t in threading.enumerate())


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def other_process_can_take_it(spawn: Spawner, project: Path) -> bool:
    """One ``acquire(timeout=0)`` in another process."""
    return spawn("probe", project).proc.wait(30) == 0


def test_reentrant_nested_acquisition(project_dir: Path, spawn: Spawner) -> None:
    lock_path, info_path = lock_paths(project_dir)
    outer = DbtLock(project_dir, source="outer", operation="dbt build").acquire(timeout=0)
    inner = DbtLock(project_dir, source="inner", operation="snapshot")
    started = time.monotonic()
    inner.acquire(timeout=5)  # must not wait for ourselves
    assert time.monotonic() - started < 1.0
    with inner:  # and deeper still, through the context manager
        assert inner.held and outer.held
    assert read_holder_info(info_path).source == "outer"  # outer info kept
    inner.release()
    assert read_holder_info(info_path).source == "outer"
    assert not other_process_can_take_it(spawn, project_dir), "released by an inner release"
    outer.release()
    assert not info_path.exists()
    assert other_process_can_take_it(spawn, project_dir)
    with pytest.raises(DbtLockError, match="not held"):
        outer.release()


def test_threads_of_one_process_share_one_os_lock(project_dir: Path, spawn: Spawner) -> None:
    """Two threads starting to acquire at once, while another process holds the lock."""
    lock_path, _ = lock_paths(project_dir)
    holder = spawn("hold", project_dir, "other", "load")
    holder.expect("HELD")
    locks = [DbtLock(project_dir, source=f"thread{i}") for i in range(2)]
    threads = [threading.Thread(target=lock.acquire, kwargs={"timeout": 30}) for lock in locks]
    for thread in threads:
        thread.start()
    wait_until(lambda: waiter_threads() >= 1)
    time.sleep(0.2)
    assert waiter_threads() == 1  # one waiter per lock file, not one per thread
    holder.let_go()
    for thread in threads:
        thread.join(30)
    assert all(lock.held for lock in locks)
    assert kernel_lock_pids(lock_path) == {os.getpid()}
    locks[0].release()
    assert not other_process_can_take_it(spawn, project_dir)
    locks[1].release()
    assert other_process_can_take_it(spawn, project_dir)


def test_on_wait_hook_reports_each_step(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("hold", project_dir, "sensor", "dlt load orders")
    pid = int(holder.expect("HELD")[0])
    steps: list[LockWait] = []
    lock = DbtLock(project_dir, on_wait=steps.append, report_interval=0.2)
    with pytest.raises(DbtLockTimeout):
        lock.acquire(timeout=1)
    assert len(steps) >= 3
    assert steps[0].waited_seconds < 0.5
    assert [s.waited_seconds for s in steps] == sorted(s.waited_seconds for s in steps)
    assert all(s.timeout == 1 and s.holder is not None for s in steps)
    assert {(s.holder.pid, s.holder.source, s.holder.operation) for s in steps} == {
        (pid, "sensor", "dlt load orders")
    }
    assert not lock.held


def test_interrupted_wait_leaves_no_lock_behind(project_dir: Path, spawn: Spawner) -> None:
    """A hook that raises (or Ctrl-C) cancels the wait; the waiter thread must not keep the lock."""
    holder = spawn("hold", project_dir)
    holder.expect("HELD")

    def interrupt(step: LockWait) -> None:
        if step.waited_seconds > 0.2:
            raise KeyboardInterrupt

    lock = DbtLock(project_dir, on_wait=interrupt, report_interval=0.1)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire(timeout=30)
    assert not lock.held
    holder.let_go()
    wait_until(lambda: waiter_threads() == 0)  # it took the lock, saw it was unwanted, let go
    assert read_lock_holder(project_dir) is None
    assert other_process_can_take_it(spawn, project_dir)


def test_repeated_timeouts_keep_one_waiter_thread(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("bare", project_dir)
    holder.expect("HELD")
    before = waiter_threads()
    for _ in range(5):
        with pytest.raises(DbtLockTimeout, match="unknown holder"):
            DbtLock(project_dir).acquire(timeout=0.1)
    assert waiter_threads() - before == 1  # adopted again and again, not five threads
    holder.let_go()
    wait_until(lambda: waiter_threads() == before)
    DbtLock(project_dir).acquire(timeout=0).release()


def test_lock_file_is_never_replaced(project_dir: Path, spawn: Spawner) -> None:
    lock_path, _ = lock_paths(project_dir)
    with DbtLock(project_dir):
        inode = lock_path.stat().st_ino
    for i in range(200):
        with DbtLock(project_dir, operation=f"run {i}"):
            pass
    spawn("hold", project_dir).expect("HELD")
    with pytest.raises(DbtLockTimeout):
        DbtLock(project_dir).acquire(timeout=0)
    assert lock_path.stat().st_ino == inode


BAD_INFO = [
    b"",
    b"   \n",
    b'{"pid": 12',
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"42",
    b'{"pid": "abc", "source": "x"}',
    b'{"pid": true}',
    b'{"pid": -7}',
    b'{"pid": 99999999, "source": null, "started_at": 5, "process_start_time": "x"}',
    b'{"pid": 1, "source": ["odd"], "hostname": 3, "started_at": "not a time"}',
]


@pytest.mark.parametrize("content", BAD_INFO, ids=range(len(BAD_INFO)))
def test_bad_holder_info_never_crashes(project_dir: Path, spawn: Spawner, content: bytes) -> None:
    _, info_path = lock_paths(project_dir)
    info_path.write_bytes(content)

    assert read_lock_holder(project_dir) is None  # the lock is free, whatever the file says
    report = lock_report(project_dir)
    assert report["held"] is False and report["info_stale"] is True
    holder = read_holder_info(info_path)
    if holder is not None:  # parseable enough to name someone: it must still describe itself
        assert holder.describe()

    foreign = spawn("bare", project_dir)
    foreign.expect("HELD")
    info_path.write_bytes(content)
    holder = read_lock_holder(project_dir)
    assert holder is not None and holder.known is False and holder.pid == foreign.pid
    with pytest.raises(DbtLockTimeout, match="unknown holder"):
        DbtLock(project_dir).acquire(timeout=0)
    assert lock_report(project_dir)["held"] is True
    foreign.let_go()

    info_path.write_bytes(content)
    with DbtLock(project_dir, source="after") as lock:
        assert read_holder_info(info_path).source == "after"
        assert lock.held
    assert not info_path.exists()


def test_holder_info_has_the_documented_fields(project_dir: Path) -> None:
    _, info_path = lock_paths(project_dir)
    with DbtLock(project_dir, source="dagster", operation="dbt build"):
        raw = json.loads(info_path.read_text())
    assert set(raw) == {
        "pid",
        "source",
        "operation",
        "started_at",
        "hostname",
        "process_start_time",
    }
    assert raw["pid"] == os.getpid() and raw["started_at"].endswith("+00:00")
    assert not list(info_path.parent.glob(".*tmp"))  # no temporary files left behind


def test_atomic_write_json_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"state": object()})
    assert json.loads(target.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_polling_wait_used_on_windows(project_dir: Path, spawn: Spawner) -> None:
    """The Windows wait (a short poll) runs on the portable try_lock, so it is checked here too."""
    lock_path, _ = lock_paths(project_dir)
    holder = spawn("hold", project_dir)
    holder.expect("HELD")
    fd = open_lock_file(lock_path)
    try:
        ticks: list[float] = []
        deadline = time.monotonic() + 0.3
        assert not poll_lock(fd, lambda: time.monotonic() >= deadline, lambda: ticks.append(1))
        assert ticks
        holder.let_go()
        assert poll_lock(fd, lambda: False, lambda: None)
        assert kernel_lock_pids(lock_path) == {os.getpid()}
        unlock(fd)
    finally:
        os.close(fd)
