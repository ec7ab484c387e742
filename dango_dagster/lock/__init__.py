"""The warehouse write lock (``DbtLock``), with no Dagster in it.

One OS-level lock on ``.dango/state/dbt.lock`` shared with Dango's own CLI; holder info in
``dbt.lock.json``. ``core`` holds the rules, ``info`` the holder info and stale detection,
``primitives`` the platform calls, ``registry`` the per-process re-entrancy, ``reporter`` the
wait as its user sees it, ``target`` which backend a project uses, ``holder`` who holds it now,
``postgres`` the advisory lock for several hosts (docs/SCALING.md).
"""

from dango_dagster.lock.core import (
    DbtLock,
    DbtLockError,
    DbtLockTimeout,
    LockHolder,
    LockWait,
    holder_is_alive,
    lock_paths,
    read_holder_info,
    read_lock_holder,
)
from dango_dagster.lock.target import LockTarget, lock_target

__all__ = [
    "DbtLock",
    "DbtLockError",
    "DbtLockTimeout",
    "LockHolder",
    "LockTarget",
    "LockWait",
    "holder_is_alive",
    "lock_paths",
    "lock_target",
    "read_holder_info",
    "read_lock_holder",
]
