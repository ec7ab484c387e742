"""The warehouse lock across real OS processes: exclusion, crash recovery, foreign holders, Dango.

Every holder and waiter here is a separate process (``tests/lockprocs/lockproc.py``); holders are
killed with a real SIGKILL. Timing bounds are the generous ones the issue asks for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest
from lockprocs.harness import Spawner, spawner_fixture

from dango_dagster.lock import (
    DbtLock,
    DbtLockTimeout,
    lock_paths,
    read_holder_info,
    read_lock_holder,
)

spawn = pytest.fixture(spawner_fixture, name="spawn")


def test_eight_processes_never_overlap(project_dir: Path, spawn: Spawner, tmp_path: Path) -> None:
    """8 processes x 50 acquisitions: the witness file and the timestamped log show no overlap."""
    witness, log = tmp_path / "witness", tmp_path / "log"
    witness.write_bytes(b"")
    lock_path, info_path = lock_paths(project_dir)
    lock_path.touch()
    inode = lock_path.stat().st_ino

    workers = [spawn("worker", project_dir, witness, log, 50) for _ in range(8)]
    violations = [int(w.expect("DONE", timeout=120)[0]) for w in workers]
    assert [w.let_go() for w in workers] == [0] * 8

    assert violations == [0] * 8, "a holder found the witness taken by another process"
    events = sorted(
        (int(ns), kind, int(pid)) for ns, kind, pid in (line.split() for line in log.open())
    )
    assert len(events) == 8 * 50 * 2
    assert len({pid for _, _, pid in events}) == 8
    # Entries and exits strictly alternate in time, each exit by the process that entered.
    for (_, kind_in, pid_in), (_, kind_out, pid_out) in zip(events[::2], events[1::2], strict=True):
        assert (kind_in, kind_out, pid_in) == ("enter", "exit", pid_out)
    # The lock file was never replaced, and the last holder removed its info.
    assert lock_path.stat().st_ino == inode
    assert not info_path.exists()
    assert read_lock_holder(project_dir) is None


def test_sigkilled_holder_is_replaced_within_a_fraction_of_a_second(
    project_dir: Path, spawn: Spawner
) -> None:
    holder = spawn("hold", project_dir, "dagster", "dbt build")
    holder_pid = int(holder.expect("HELD")[0])
    waiter = spawn("wait", project_dir, 30)
    assert waiter.expect("WAITING")[1] == str(holder_pid)  # the wait names the holder

    killed_at = time.monotonic_ns()
    holder.kill()  # SIGKILL; not reaped yet, so it is a zombie for a moment
    got_ns, waiter_pid = map(int, waiter.expect("GOT", timeout=10))
    handoff = (got_ns - killed_at) / 1e9
    assert handoff < 0.9, f"waiter took {handoff:.3f} s to replace a killed holder"

    # The dead holder's info is gone: the file now names the waiter.
    info = read_holder_info(lock_paths(project_dir)[1])
    assert info is not None and info.pid == waiter_pid and info.source == "waiter"
    holder.cleanup()
    assert waiter.let_go() == 0


def test_stale_info_of_killed_holder_is_cleaned_before_the_next_attempt(
    project_dir: Path, spawn: Spawner
) -> None:
    """The next attempt removes dead info even when it then fails (the lock is held anew)."""
    _, info_path = lock_paths(project_dir)
    holder = spawn("hold", project_dir, "cli", "sync")
    dead_pid = int(holder.expect("HELD")[0])
    holder.kill()
    holder.cleanup()
    assert read_holder_info(info_path).pid == dead_pid  # left behind by the crash
    assert read_lock_holder(project_dir) is None  # ... but never believed

    foreign = spawn("bare", project_dir)
    foreign.expect("HELD")
    with pytest.raises(DbtLockTimeout):
        DbtLock(project_dir).acquire(timeout=0)
    assert not info_path.exists(), "stale info naming a dead PID survived an acquisition attempt"


def test_reused_pid_is_stale(project_dir: Path, spawn: Spawner) -> None:
    """Info naming a live process whose start time differs is someone else's PID: stale."""
    _, info_path = lock_paths(project_dir)
    foreign = spawn("bare", project_dir)
    pid = int(foreign.expect("HELD")[0])
    real_start = psutil.Process(pid).create_time()

    def write_info(start_time: float) -> None:
        info = {"pid": pid, "source": "old", "operation": "old run", "hostname": os.uname()[1]}
        info |= {"started_at": "2020-01-01T00:00:00+00:00", "process_start_time": start_time}
        info_path.write_text(json.dumps(info))

    write_info(real_start)  # control: right start time, so the info is believed
    holder = read_lock_holder(project_dir)
    assert holder is not None and holder.known and holder.source == "old"

    write_info(real_start - 3600)  # same PID, another process
    holder = read_lock_holder(project_dir)
    assert holder is not None and not holder.known and holder.pid == pid
    with pytest.raises(DbtLockTimeout, match="unknown holder"):
        DbtLock(project_dir).acquire(timeout=0)
    assert not info_path.exists(), "info naming a reused PID was not cleaned"


def test_bare_foreign_flock_is_an_unknown_holder(project_dir: Path, spawn: Spawner) -> None:
    foreign = spawn("bare", project_dir)
    pid = int(foreign.expect("HELD")[0])

    holder = read_lock_holder(project_dir)
    assert holder is not None and holder.known is False and holder.pid == pid
    started = time.monotonic()
    with pytest.raises(DbtLockTimeout) as info:
        DbtLock(project_dir, source="cli").acquire(timeout=0)
    assert time.monotonic() - started < 1.0  # fail-fast: one attempt, no waiting
    assert info.value.holder is None
    assert "unknown holder" in str(info.value) and str(pid) in str(info.value)
    assert not lock_paths(project_dir)[1].exists()  # we wrote nothing while not holding it


def test_timeout_against_a_holder_that_never_releases(project_dir: Path, spawn: Spawner) -> None:
    holder = spawn("hold", project_dir, "schedule", "dbt build nightly")
    pid = int(holder.expect("HELD")[0])
    started = time.monotonic()
    with pytest.raises(DbtLockTimeout) as info:
        DbtLock(project_dir, source="sensor").acquire(timeout=2)
    waited = time.monotonic() - started
    assert 1.8 <= waited <= 6.0
    message = str(info.value)
    for part in (f"PID {pid}", "'schedule'", "'dbt build nightly'", os.uname()[1], "since 20"):
        assert part in message
    assert "held for" in message and "gave up after waiting 2." in message
    assert info.value.holder is not None and info.value.holder.pid == pid

    # Our abandoned waiter must not keep the lock once the holder lets go.
    holder.let_go()
    other = spawn("wait", project_dir, 10)
    other.expect("GOT")
    assert other.let_go() == 0


def test_dango_holder_excludes_us_and_is_named(project_dir: Path, spawn: Spawner) -> None:
    dango = spawn("dango", project_dir, "ui", "sync google_sheets")
    pid = int(dango.expect("HELD")[0])
    holder = read_lock_holder(project_dir)
    assert holder is not None and holder.known and holder.pid == pid
    assert holder.process_start_time is None and holder.held_seconds is not None
    with pytest.raises(DbtLockTimeout, match="sync google_sheets") as info:
        DbtLock(project_dir).acquire(timeout=0)
    assert info.value.holder.source == "ui"
    assert dango.let_go() == 0
    with DbtLock(project_dir):
        pass


def test_we_exclude_a_dango_process(project_dir: Path, spawn: Spawner) -> None:
    ours = spawn("hold", project_dir, "dagster", "dbt build")
    ours.expect("HELD")
    dango = spawn("dango", project_dir)
    dango.expect("BUSY")
    assert dango.proc.wait(30) == 1
    ours.let_go()
    dango = spawn("dango", project_dir)
    dango.expect("HELD")
    assert dango.let_go() == 0


def test_lock_file_replaced_under_a_waiter(project_dir: Path, spawn: Spawner) -> None:
    """An old Dango that deletes and recreates dbt.lock must not give us a lock on a dead inode."""
    lock_path, _ = lock_paths(project_dir)
    first = spawn("bare", project_dir)
    first.expect("HELD")
    waiter = spawn("wait", project_dir, 30)
    waiter.expect("WAITING")
    lock_path.unlink()  # what Dango's stale cleanup does ("removes both lock files")
    second = spawn("bare", project_dir)  # ... and the next Dango locks the new file
    second.expect("HELD")
    first.let_go()  # the old inode is free now; the waiter gets it, notices, and waits anew
    time.sleep(0.5)
    assert read_lock_holder(project_dir).pid == second.pid
    assert waiter.proc.poll() is None
    released_at = time.monotonic_ns()
    second.let_go()
    got_ns = int(waiter.expect("GOT")[0])
    assert got_ns > released_at, "the waiter claimed the lock on the deleted inode"
    assert waiter.let_go() == 0


def test_forked_child_cannot_keep_a_killed_parents_lock(project_dir: Path, spawn: Spawner) -> None:
    parent = spawn("forker", project_dir)
    child_pid, child_held = parent.expect("CHILD")
    assert child_held == "False"  # the child does not think it holds the lock ...
    assert read_lock_holder(project_dir).pid == parent.pid  # ... and it cannot take it either
    try:
        parent.kill()
        parent.cleanup()
        assert psutil.pid_exists(int(child_pid))
        lock = DbtLock(project_dir).acquire(timeout=5)  # free although the child still runs
        lock.release()
    finally:
        os.kill(int(child_pid), 9)
