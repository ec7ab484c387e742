"""Consistent, point-in-time copies of the warehouse: what every reader opens instead of it.

Readers never touch the live file (a DuckDB reader would block every writer), so they read
snapshots. ``take_snapshot`` makes one:

1. under the warehouse lock: open the live file read-write (which also proves no process that
   bypasses the lock has it open), ``CHECKPOINT`` so no committed data is left in the WAL,
   record the catalog, and copy the file to a hidden temporary name; then release the lock;
2. ``fsync`` the copy and verify it (open read-only; same tables, views and row counts as the
   live catalog had under the lock);
3. make it read-only (0444) and give it its final names: the published path readers such as
   the query API and Metabase open (``os.replace``: readers holding the old one keep it), and
   one ``warehouse_{user}_{YYYYMMDD_HHMMSS}.duckdb`` per notebook user, each a hard link of the
   same verified file, so each extra user costs a link, not a copy;
4. only then apply retention (keep the newest ``snapshots.retention`` per user).

Any failure before step 3 (full disk, verification failure, a kill) leaves no file under a final
name and deletes nothing; the next run removes the temporary file of a killed one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dango_dagster.config import ProjectConfig
from dango_dagster.lock.core import DbtLock, LockWait
from dango_dagster.snapshots.files import (
    TIMESTAMP_FORMAT,
    InvalidUsernameError,
    SnapshotInfo,
    apply_retention,
    clean_stale_temps,
    fsync_dir,
    iter_snapshots,
    next_sequence,
    place_file,
    sanitize_username,
    snapshot_filename,
    temp_path,
)
from dango_dagster.snapshots.verify import (
    Catalog,
    SnapshotError,
    WarehouseMissingError,
    checkpoint_and_catalog,
    open_live_warehouse,
    verify_copy,
)

__all__ = [
    "InvalidUsernameError",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotResult",
    "WarehouseMissingError",
    "list_snapshots",
    "newest_snapshot",
    "sanitize_username",
    "snapshot_lock",
    "take_snapshot",
]

# Refuse to start when the destination has less free space than the warehouse plus this margin.
_FREE_SPACE_MARGIN = 16 * 1024 * 1024


@dataclass(frozen=True)
class SnapshotResult:
    """What one snapshot produced and what it cost (the snapshot asset's metadata)."""

    published_path: Path | None
    user_paths: dict[str, Path]
    size_bytes: int
    tables: int
    table_names: list[str]
    lock_wait_seconds: float
    lock_held_seconds: float
    copy_seconds: float
    verify_seconds: float
    taken_at: dt.datetime
    deleted: list[Path] = field(default_factory=list)
    checkpoint_seconds: float = 0.0
    fsync_seconds: float = 0.0
    place_seconds: float = 0.0  # publish + per-user links + retention: what grows with users
    total_seconds: float = 0.0
    row_counts: dict[str, int] = field(default_factory=dict)
    copy_method: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``snapshot create --json``, logs)."""
        data = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        data["published_path"] = str(self.published_path) if self.published_path else None
        data["user_paths"] = {u: str(p) for u, p in self.user_paths.items()}
        data["deleted"] = [str(p) for p in self.deleted]
        data["taken_at"] = self.taken_at.isoformat()
        return data


@dataclass
class _Copy:
    """The state a snapshot carries out of the lock."""

    temp: Path
    fd: int
    size: int
    catalog: Catalog
    taken_at: dt.datetime
    seq: int
    method: str = ""
    wait: float = 0.0
    held: float = 0.0
    checkpoint: float = 0.0
    copy: float = 0.0

    @property
    def timestamp(self) -> str:
        return self.taken_at.strftime(TIMESTAMP_FORMAT)


@contextlib.contextmanager
def snapshot_lock(
    config: ProjectConfig,
    *,
    timeout: float | None = 0.0,
    source: str = "cli",
    on_wait: Callable[[LockWait], None] | None = None,
) -> Iterator[DbtLock]:
    """The warehouse lock for a snapshot outside Dagster: ``timeout=0`` fails at once if held."""
    lock = DbtLock(config.root, source=source, operation="snapshot", on_wait=on_wait)
    lock.acquire(timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()


def _resolve_users(config: ProjectConfig, users: Sequence[str] | None) -> list[str]:
    if isinstance(users, str):
        raise TypeError("users must be a sequence of names, not one string")
    wanted = config.notebook_users if users is None else list(users)
    return list(dict.fromkeys(sanitize_username(u) for u in wanted))


def _require_warehouse(config: ProjectConfig) -> None:
    if not config.warehouse_path.is_file():
        raise WarehouseMissingError(
            f"There is no warehouse at {config.warehouse_path} yet, so there is nothing to "
            "snapshot. Run the pipeline first: `dango-dagster sync`, or materialize the assets "
            "in Dagster."
        )


def _check_free_space(config: ProjectConfig) -> None:
    size = config.warehouse_path.stat().st_size
    free = shutil.disk_usage(config.snapshots_dir).free
    needed = size + _FREE_SPACE_MARGIN
    if free < needed:
        # Needed rounded up and free rounded down, in the same unit, so the numbers a user reads
        # always show the shortfall they describe (never "needs 9 MB, 10 MB are free").
        need_mb, free_mb = math.ceil(needed / 1e6), math.floor(free / 1e6)
        raise SnapshotError(
            f"Not enough free space for a snapshot in {config.snapshots_dir}: it needs "
            f"{need_mb} MB free (the warehouse's {size / 1e6:.1f} MB plus a "
            f"{_FREE_SPACE_MARGIN / 1e6:.0f} MB margin) and only {free_mb} MB are free. Free at "
            f"least {max(1, need_mb - free_mb)} MB there (older snapshots in that folder are safe "
            "to delete) and try again; nothing was changed."
        )


def _copy_under_lock(config: ProjectConfig, lock: AbstractContextManager[Any]) -> _Copy:
    """Steps that need the lock: checkpoint, catalog, copy. Nothing else runs inside it."""
    folders = (config.snapshots_dir, config.published_dir)
    asked = time.monotonic()
    with lock:
        got = time.monotonic()
        _require_warehouse(config)  # it may have gone while we waited
        con = open_live_warehouse(config.warehouse_path)
        try:
            catalog = checkpoint_and_catalog(con, config.warehouse_path)
            checkpointed = time.monotonic()
            taken_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
            seq = next_sequence(folders, taken_at.strftime(TIMESTAMP_FORMAT))
            stamp = taken_at.strftime(TIMESTAMP_FORMAT)
            temp = temp_path(config.snapshots_dir, "snapshot", stamp, seq)
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                raise _copy_failed(temp.parent, exc) from exc
            copy = _Copy(temp, fd, 0, catalog, taken_at, seq)
            try:
                copy.method = _copy_file(config.warehouse_path, copy)
            except BaseException:
                _discard(copy)
                raise
        finally:
            con.close()
        released = time.monotonic()
    copy.wait, copy.held = got - asked, released - got
    copy.checkpoint, copy.copy = checkpointed - got, released - checkpointed
    return copy


def _copy_failed(folder: Path, exc: OSError) -> SnapshotError:
    return SnapshotError(
        f"Copying the warehouse to {folder} failed: {exc}. Free some space or fix the folder "
        "and try again; the previous snapshots and the warehouse are untouched, and no partial "
        "snapshot was left under a final name."
    )


def _copy_file(source: Path, copy: _Copy) -> str:
    from dango_dagster.snapshots.copy import copy_into

    try:
        src = os.open(source, os.O_RDONLY)
        try:
            copy.size = os.fstat(src).st_size
            return copy_into(src, copy.fd, copy.size)
        finally:
            os.close(src)
    except OSError as exc:
        raise _copy_failed(copy.temp.parent, exc) from exc


def _close(copy: _Copy) -> None:
    if copy.fd >= 0:
        fd, copy.fd = copy.fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)


def _discard(copy: _Copy) -> None:
    """Drop the temporary copy (its final names, if any, are hard links that stay)."""
    _close(copy)
    with contextlib.suppress(OSError):
        copy.temp.unlink()


def _fsync_and_verify(copy: _Copy, durable: bool) -> tuple[dict[str, int], float]:
    """Flush the copy to disk while verifying it: one waits on the disk, the other on the CPU.

    Returns the verified row counts and the seconds the flush took. Both must succeed before
    the copy may get a final name.
    """
    outcome: dict[str, Any] = {}

    def flush() -> None:
        start = time.monotonic()
        try:
            if durable:
                os.fsync(copy.fd)
        except OSError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - start

    flusher = threading.Thread(target=flush, name="snapshot-fsync")
    flusher.start()
    try:
        counts = verify_copy(copy.temp, copy.catalog, copy.size)
    finally:
        flusher.join()
        _close(copy)
    if "error" in outcome:
        raise SnapshotError(
            f"Writing the snapshot copy to disk failed: {outcome['error']}. The previous "
            "snapshots are untouched."
        ) from outcome["error"]
    return counts, outcome["seconds"]


def _publish(copy: _Copy, final: Path) -> Path:
    tmp = functools.partial(temp_path, final.parent, "publish", copy.timestamp, copy.seq)
    place_file(copy.temp, final, replace=True, tmp=tmp)
    return final


def _link_user(copy: _Copy, folder: Path, user: str) -> Path:
    seq = copy.seq
    while True:
        final = folder / snapshot_filename(user, copy.timestamp, seq)
        tmp = functools.partial(temp_path, folder, "user", copy.timestamp, seq)
        try:
            place_file(copy.temp, final, replace=False, tmp=tmp)
            return final
        except FileExistsError:
            seq += 1  # a name taken outside the lock (e.g. by another tool): next number


def take_snapshot(
    config: ProjectConfig,
    *,
    users: Sequence[str] | None = None,
    lock: AbstractContextManager[Any] | None = None,
    publish: bool = True,
    lock_timeout: float | None = 0.0,
    on_lock_wait: Callable[[LockWait], None] | None = None,
    durable: bool = True,
) -> SnapshotResult:
    """Take one consistent snapshot, publish it and hand it to each notebook user.

    ``users=None`` means ``config.notebook_users``. ``lock`` is a context manager holding the
    warehouse write lock (the Dagster gate passes its own); without one, ``DbtLock`` is taken
    with ``lock_timeout`` seconds of patience (0: fail at once, as the CLI does; None: forever)
    and ``on_lock_wait`` sees the wait. Raises ``SnapshotError`` (``WarehouseMissingError``)
    or ``DbtLockTimeout`` naming the holder; on any failure the previous snapshots are intact.

    ``durable=False`` skips the ``fsync`` before the copy gets its final names: faster, but a
    power cut soon after could leave a damaged snapshot while retention already removed an
    older good one. Meant for throwaway projects and for measuring what durability costs.
    """
    started = time.monotonic()
    names = _resolve_users(config, users)
    if not names and not publish:
        raise SnapshotError("Nothing to do: no notebook users given and publish=False.")
    _require_warehouse(config)
    folders = [config.snapshots_dir] + ([config.published_dir] if publish else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps([config.snapshots_dir, config.published_dir])
    _check_free_space(config)
    if lock is None:
        lock = snapshot_lock(config, timeout=lock_timeout, on_wait=on_lock_wait)

    copy = _copy_under_lock(config, lock)
    try:
        verify_start = time.monotonic()
        row_counts, fsync_seconds = _fsync_and_verify(copy, durable)
        verified = time.monotonic()
        os.chmod(copy.temp, 0o444)
        published = _publish(copy, config.published_snapshot_path) if publish else None
        user_paths = {user: _link_user(copy, config.snapshots_dir, user) for user in names}
    finally:
        _discard(copy)
    for folder in folders if durable else ():
        fsync_dir(folder)
    deleted = apply_retention(config.snapshots_dir, names, config.snapshots.retention)
    placed = time.monotonic()
    table_names = copy.catalog.table_names
    return SnapshotResult(
        published_path=published,
        user_paths=user_paths,
        size_bytes=copy.size,
        tables=len(table_names),
        table_names=table_names,
        lock_wait_seconds=copy.wait,
        lock_held_seconds=copy.held,
        copy_seconds=copy.copy,
        verify_seconds=verified - verify_start,
        taken_at=copy.taken_at,
        deleted=deleted,
        checkpoint_seconds=copy.checkpoint,
        fsync_seconds=fsync_seconds,
        place_seconds=placed - verified,
        total_seconds=time.monotonic() - started,
        row_counts=row_counts,
        copy_method=copy.method,
    )


def list_snapshots(config: ProjectConfig, user: str | None = None) -> list[SnapshotInfo]:
    """Notebook snapshots, by user, newest first (of ``user`` only, if given)."""
    wanted = sanitize_username(user) if user is not None else None
    found = list(iter_snapshots(config.snapshots_dir, wanted))
    found.sort(key=lambda s: s.sort_key, reverse=True)
    found.sort(key=lambda s: s.user)
    return found


def newest_snapshot(config: ProjectConfig, user: str) -> Path | None:
    """The newest snapshot of ``user``, or None when there is none."""
    found = list(iter_snapshots(config.snapshots_dir, sanitize_username(user)))
    return max(found, key=lambda s: s.sort_key).path if found else None
