"""A real OS process that holds, waits for or hammers the warehouse lock, driven by the tests.

Run as ``python lockproc.py MODE PROJECT ...``. It reports on stdout, one line per event
(``HELD <pid> <monotonic_ns>``, ``WAITING ...``, ``GOT ...``, ``TIMEOUT ...``, ``BUSY``), and a
holder keeps the lock until its stdin closes, so a test decides exactly when it lets go (or kills
it). ``time.monotonic_ns`` is CLOCK_MONOTONIC, one clock for every process on Linux, so the
timestamps of two processes can be compared.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from dango_dagster.lock import DbtLock, DbtLockTimeout, LockWait


def say(*parts: object) -> None:
    print(*parts, flush=True)


def until_stdin_closes() -> None:
    sys.stdin.read()


def hold(project: str, source: str = "test", operation: str = "hold") -> int:
    lock = DbtLock(project, source=source, operation=operation).acquire(timeout=60)
    say("HELD", os.getpid(), time.monotonic_ns())
    until_stdin_closes()
    lock.release()
    say("RELEASED", time.monotonic_ns())
    return 0


def wait(project: str, timeout: str, source: str = "waiter") -> int:
    def report(step: LockWait) -> None:
        who = step.holder.pid if step.holder is not None else None
        say("WAITING", f"{step.waited_seconds:.3f}", who)

    lock = DbtLock(project, source=source, operation="wait", report_interval=0.2)
    try:
        lock.acquire(timeout=float(timeout), on_wait=report)
    except DbtLockTimeout as exc:
        say("TIMEOUT", str(exc).replace("\n", " "))
        return 3
    say("GOT", time.monotonic_ns(), os.getpid())
    until_stdin_closes()
    lock.release()
    return 0


def probe(project: str) -> int:
    """One ``acquire(timeout=0)``: exit 0 when it got the lock (released at once), 3 when not."""
    try:
        DbtLock(project, source="probe").acquire(timeout=0).release()
    except DbtLockTimeout:
        return 3
    return 0


def _open_lock(project: str) -> int:
    path = Path(project) / ".dango" / "state" / "dbt.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def bare(project: str) -> int:
    """A foreign tool: holds the flock and writes no holder info."""
    fd = _open_lock(project)
    fcntl.flock(fd, fcntl.LOCK_EX)
    say("HELD", os.getpid(), time.monotonic_ns())
    until_stdin_closes()
    return 0


def dango(project: str, source: str = "ui", operation: str = "sync google_sheets") -> int:
    """Dango's own DbtLock as its docs describe it: LOCK_EX|LOCK_NB, then the five-field JSON."""
    fd = _open_lock(project)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say("BUSY")
        return 1
    info = Path(project) / ".dango" / "state" / "dbt.lock.json"
    info.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "source": source,
                "operation": operation,
                "started_at": dt.datetime.now().isoformat(),  # naive local time, as Dango writes
                "hostname": socket.gethostname(),
            }
        )
    )
    say("HELD", os.getpid(), time.monotonic_ns())
    until_stdin_closes()
    info.unlink()
    fcntl.flock(fd, fcntl.LOCK_UN)
    return 0


def worker(project: str, witness: str, log: str, rounds: str) -> int:
    """Take the lock ``rounds`` times; the witness file proves nobody else was inside meanwhile.

    On entry the witness must be empty (the previous holder emptied it before letting go); we
    write our PID, work a little, check it is still ours, and empty it again. Every entry and
    exit also goes to ``log`` (O_APPEND, one write per line) with a CLOCK_MONOTONIC timestamp.
    """
    me = str(os.getpid()).encode()
    log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    violations = 0
    for i in range(int(rounds)):
        with DbtLock(project, source="worker", operation=f"round {i}"):
            os.write(log_fd, f"{time.monotonic_ns()} enter {os.getpid()}\n".encode())
            with open(witness, "r+b") as fh:
                if fh.read():
                    violations += 1
                fh.seek(0)
                fh.write(me)
                fh.flush()
            time.sleep(0.0005 * (i % 3))
            with open(witness, "r+b") as fh:
                if fh.read() != me:
                    violations += 1
                fh.seek(0)
                fh.truncate()
            os.write(log_fd, f"{time.monotonic_ns()} exit {os.getpid()}\n".encode())
    say("DONE", violations)
    return 0


def forker(project: str) -> int:
    """Hold the lock, then fork a child that outlives us (the test SIGKILLs this process)."""
    lock = DbtLock(project, source="forker", operation="fork").acquire(timeout=60)
    child = os.fork()
    if child == 0:
        # The child must not hold, and must not be able to release, the parent's lock.
        lock.release()
        try:
            DbtLock(project).acquire(timeout=0)
            os.write(1, b"CHILD-GOT-LOCK\n")
        except DbtLockTimeout:
            os.write(1, f"CHILD {os.getpid()} {lock.held}\n".encode())
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let the test's pipes close when the parent dies
            os.dup2(devnull, fd)
        time.sleep(60)
        os._exit(0)
    until_stdin_closes()
    return 0


MODES = {"hold": hold, "wait": wait, "bare": bare, "dango": dango, "worker": worker}
MODES |= {"forker": forker, "probe": probe}

if __name__ == "__main__":
    sys.exit(MODES[sys.argv[1]](*sys.argv[2:]))
