"""Who holds a project's warehouse lock right now, whichever backend it uses.

Read-only: nothing here takes, changes or deletes the lock, so ``lock status``, progress reports
and error messages can call it at any time.
"""

from __future__ import annotations

import os

from dango_dagster.lock.info import (
    LockHolder,
    holder_is_alive,
    kernel_lock_pids,
    lock_paths,
    read_holder_info,
)
from dango_dagster.lock.primitives import probe_free
from dango_dagster.lock.registry import held_by_this_process, key_for
from dango_dagster.lock.target import LockTarget, lock_target

__all__ = ["read_file_lock_holder", "read_lock_holder"]


def read_file_lock_holder(project_dir: str | os.PathLike[str]) -> LockHolder | None:
    """The live holder of the project's ``flock`` on ``.dango/state/dbt.lock``, or None.

    Reads the kernel's lock table and never trusts the JSON file alone: info whose process is
    gone (or whose PID now belongs to another process) is ignored, and a holder that wrote no info
    is reported with ``known=False``.
    """
    lock_path, info_path = lock_paths(project_dir)
    ours = held_by_this_process(key_for(lock_path))
    if ours is not None:
        return ours
    if not lock_path.exists():
        return None
    pids = kernel_lock_pids(lock_path)
    held = bool(pids) if pids is not None else not probe_free(lock_path)
    if not held:
        return None
    info = read_holder_info(info_path)
    if info is not None and holder_is_alive(info) and (not pids or info.pid in pids):
        return info
    named = sorted(p for p in pids or () if p > 0)  # 0 / -1: a PID we cannot see
    return LockHolder(pid=named[0] if named else None, known=False)


def read_lock_holder(
    project_dir: str | os.PathLike[str], target: LockTarget | None = None
) -> LockHolder | None:
    """The live holder of a project's lock, or None when it is free.

    Postgres backend: the holder of the advisory lock, as the server sees it (any host); when that
    is free but the warehouse is a local file, the local ``flock`` holder (Dango on this host).
    """
    target = target or lock_target(project_dir)
    if target.backend != "postgres":
        return read_file_lock_holder(project_dir)
    from dango_dagster.lock.postgres import read_pg_holder

    ours = held_by_this_process(target.registry_key or "")
    if ours is not None:
        return ours
    holder = read_pg_holder(target.dsn or "", target.key or "")
    if holder is None and target.flock:
        holder = read_file_lock_holder(project_dir)
    return holder
