"""What this process holds of the warehouse lock: re-entrancy, threads and ``fork``.

``flock`` locks belong to an open file description, not to a process, so two ``open`` calls in one
process would exclude each other. This registry makes the lock re-entrant per process instead:
one descriptor per lock file, a count of nested holds, and the waiter thread (if any) still queued
in the kernel. After ``fork`` the child starts empty and closes its copies of the descriptors.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dango_dagster.lock.info import LockHolder
from dango_dagster.lock.primitives import BlockingWaiter


@dataclass
class Held:
    fd: int | None  # None: postgres backend on a warehouse that is no local file
    count: int
    holder: LockHolder
    session: Any = None  # the PgLockSession holding the advisory lock (postgres backend)


class KeyState:
    """What this process holds or is doing about one lock file; guarded by ``cond``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.held: Held | None = None
        self.acquiring = False  # one thread of ours is taking the OS lock
        self.waiter: BlockingWaiter | None = None  # still queued in the kernel (maybe abandoned)


_KEYS: dict[str, KeyState] = {}
_KEYS_LOCK = threading.Lock()
# Bumped in a forked child: DbtLock objects from before the fork hold nothing there.
_GENERATION = 0


def key_for(lock_path: Path) -> str:
    return os.path.realpath(lock_path)


def state_for(key: str) -> KeyState:
    with _KEYS_LOCK:
        return _KEYS.setdefault(key, KeyState())


def held_by_this_process(key: str) -> LockHolder | None:
    with _KEYS_LOCK:
        state = _KEYS.get(key)
    held = state.held if state is not None else None
    return held.holder if held is not None else None


def _after_fork_in_child() -> None:
    """Forget the parent's holds and close our copies of its descriptors (never unlock them).

    The child shares the parent's open file descriptions: unlocking one would free the parent's
    lock, while merely keeping it open would keep the lock alive after the parent dies. Closing
    a copy does neither. The locks are replaced too: a thread of the parent may have held them.
    """
    global _KEYS, _KEYS_LOCK, _GENERATION
    old, _KEYS, _KEYS_LOCK = _KEYS, {}, threading.Lock()
    _GENERATION += 1
    for state in old.values():
        fds = {state.held.fd if state.held else None}
        fds.add(state.waiter.fd_if_open() if state.waiter else None)
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def generation() -> int:
    """Changes in a forked child, so objects made before the fork can tell they hold nothing."""
    return _GENERATION


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
