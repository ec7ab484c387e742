"""Fairness towards Dango's own waiters, who poll instead of queueing in the kernel.

Dango's ``DbtLock`` tries ``flock(LOCK_EX | LOCK_NB)`` every 3 s. Our waiters block in the kernel
and take the lock within a millisecond of its release, so two dango-dagster writers re-queuing
back to back can keep it busy through every one of Dango's polls: Dango starves (measured: 12 s
and more). Dango leaves no trace in the kernel's lock table while it waits, but each of its polls
opens ``dbt.lock`` with ``open("w")``, which truncates it and so bumps its mtime; ours open it
without ``O_TRUNC`` and never do. So:

- a waiter of ours notes the lock file's mtime when it starts waiting; if, when it gets the lock,
  the mtime has moved, a foreign process polled meanwhile and is probably still waiting;
- it then **yields**: lets the lock go, and leaves it free until a holder appears in the kernel's
  table (Dango's next poll took it) or one poll interval (3.2 s) has passed, whichever is first;
- likewise a holder of ours that sees the mtime move while it held the lock (Dango polled during
  the hold) leaves the same marker as it lets go, so the waiter it hands over to yields too;
- while it yields, a marker ``dbt.lock.yield`` tells every other waiter of ours to hold back too,
  so a writer re-queuing at that moment cannot take the lock Dango's poll is due to find free.

The cost lands only where a foreign poller was seen: at most one poll interval per handoff. A
fail-fast attempt (``timeout=0``) ignores the marker. No Dagster here.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from dango_dagster.lock.info import kernel_lock_pids

DANGO_POLL_S = 3.0
YIELD_S = DANGO_POLL_S + 0.2
_STEP_S = 0.05
MAX_YIELDS = 3  # per acquisition: a yielder never livelocks


_held_marks: dict[Path, int | None] = {}


def marker_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".yield")


def _marker_until(lock_path: Path) -> float:
    try:
        return float(json.loads(marker_path(lock_path).read_text(encoding="utf-8"))["until"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def yield_pending(lock_path: Path) -> bool:
    """A holder or waiter of ours asked to leave the lock free for a foreign poller."""
    return _marker_until(lock_path) > time.time()


def _write_marker(lock_path: Path, until: float) -> None:
    marker = marker_path(lock_path)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({"until": until, "pid": os.getpid()}), encoding="utf-8")
        os.replace(tmp, marker)


def note_acquired(lock_path: Path) -> None:
    """Called once the lock is ours: remember the lock file's mtime."""
    _held_marks[lock_path] = touch_mark(lock_path)


def before_release(lock_path: Path) -> None:
    """Called just before letting go: if a foreign poller touched the file meanwhile, ask the
    next holder of ours to leave the lock free for one poll."""
    mark = _held_marks.pop(lock_path, None)
    if foreign_touched(lock_path, mark):
        _write_marker(lock_path, time.time() + YIELD_S)


def touch_mark(lock_path: Path) -> int | None:
    """The lock file's mtime now (None if it cannot be read)."""
    try:
        return os.stat(lock_path).st_mtime_ns
    except OSError:
        return None


def foreign_touched(lock_path: Path, mark: int | None) -> bool:
    """True when someone opened the lock file with truncation since ``mark`` (Dango polled)."""
    now = touch_mark(lock_path)
    return mark is not None and now is not None and now != mark


def _hold_back(
    lock_path: Path, until: float, expired: Callable[[], bool], tick: Callable[[], None]
) -> None:
    """Sleep until a holder shows in the kernel table, ``until`` passes or the caller's deadline."""
    while time.time() < until and not expired():
        if kernel_lock_pids(lock_path):
            # Someone (the foreign poller, normally) took it: the yield did its job.
            with contextlib.suppress(OSError):
                marker_path(lock_path).unlink()
            return
        tick()
        time.sleep(_STEP_S)


def honour_yield(lock_path: Path, expired: Callable[[], bool], tick: Callable[[], None]) -> None:
    """Before trying the lock: respect another waiter's yield to a foreign poller."""
    until = _marker_until(lock_path)
    if until > time.time():
        _hold_back(lock_path, until, expired, tick)


def yield_to_foreign(
    lock_path: Path, expired: Callable[[], bool], tick: Callable[[], None]
) -> None:
    """The lock was just let go for a foreign poller: keep ours away from it for one poll."""
    until = max(time.time() + YIELD_S, _marker_until(lock_path))
    _write_marker(lock_path, until)
    _hold_back(lock_path, until, expired, tick)
