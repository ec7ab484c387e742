"""Who holds the warehouse lock: the holder info file, stale detection and the kernel lock table.

Split from ``dango_dagster.lock`` so the read-only side (``lock status``, error messages) is one
concept: nothing here takes or releases the lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

LOCK_RELPATH = Path(".dango") / "state" / "dbt.lock"
INFO_RELPATH = Path(".dango") / "state" / "dbt.lock.json"
# Two start times closer than this belong to the same process (psutil rounds differently across
# platforms and Dango writes none at all).
_START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class LockHolder(Mapping[str, Any]):
    """Who holds the lock: the fields of ``dbt.lock.json``, readable as attributes or as a mapping.

    ``known`` is False when the lock is held by a process that wrote no holder info (a foreign
    tool, or Dango between taking the lock and writing its info); ``pid`` may still be known then,
    from the kernel's lock table.
    """

    pid: int | None
    source: str = "unknown"
    operation: str = "unknown"
    started_at: str | None = None
    hostname: str | None = None
    process_start_time: float | None = None
    known: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}

    def to_json(self) -> dict[str, Any]:
        """The fields written to ``dbt.lock.json`` (Dango's five plus our process start time)."""
        data = self.as_dict()
        data.pop("known")
        return data

    @property
    def held_seconds(self) -> float | None:
        """Seconds since ``started_at``, or None when the holder did not say."""
        started = parse_time(self.started_at)
        if started is None:
            return None
        return max(0.0, (dt.datetime.now(dt.UTC) - started).total_seconds())

    def describe(self) -> str:
        """One line naming the holder, for error messages and logs."""
        if not self.known and self.extra.get("backend") == "postgres":
            return (
                f"an unknown holder (Postgres session {self.extra.get('backend_pid')}, "
                f"application {self.extra.get('application_name') or '?'!r}, "
                f"PID {self.pid or '?'} on host {self.hostname or '?'}; it wrote no holder info)"
            )
        if not self.known:
            who = "an unknown holder (a process holds dbt.lock but wrote no holder info"
            who += f"; kernel lock table names PID {self.pid})" if self.pid else ")"
            return who
        held = self.held_seconds
        held_txt = f", held for {held:.1f} s" if held is not None else ""
        return (
            f"PID {self.pid} on host {self.hostname or '?'} (source {self.source!r}, "
            f"operation {self.operation!r}) since {self.started_at or '?'}{held_txt}"
        )


@dataclass(frozen=True)
class LockWait:
    """One step of a wait, handed to the ``on_wait`` hook (the Dagster gate shows it to users)."""

    waited_seconds: float
    timeout: float | None
    holder: LockHolder | None


def lock_paths(project_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The lock file and the holder-info file of a project."""
    root = Path(project_dir)
    return root / LOCK_RELPATH, root / INFO_RELPATH


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    # Dango writes naive local times; treat them as local.
    return parsed.astimezone(dt.UTC) if parsed.tzinfo is None else parsed


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when no such live process exists.

    A zombie counts as gone: it has exited (so the kernel already freed its locks) and merely
    waits for its parent to reap it.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.Error, OSError, ValueError):
        return None


def _text(value: Any, default: str) -> str:
    return default if value is None or value == "" else str(value)


def read_holder_info(info_path: Path) -> LockHolder | None:
    """Parse ``dbt.lock.json``; None when missing, empty or corrupt (never trusted blindly)."""
    try:
        raw = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    pid = raw.get("pid")
    if isinstance(pid, str) and pid.isdigit():
        pid = int(pid)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    pst = raw.get("process_start_time")
    started_at, hostname = raw.get("started_at"), raw.get("hostname")
    known_keys = {"pid", "source", "operation", "started_at", "hostname", "process_start_time"}
    known_keys.add("known")  # older files of ours may carry it
    return LockHolder(
        pid=pid,
        source=_text(raw.get("source"), "unknown"),
        operation=_text(raw.get("operation"), "unknown"),
        started_at=started_at if isinstance(started_at, str) else None,
        hostname=hostname if isinstance(hostname, str) else None,
        process_start_time=float(pst)
        if isinstance(pst, int | float) and not isinstance(pst, bool)
        else None,
        extra={str(k): v for k, v in raw.items() if k not in known_keys},
    )


def holder_is_alive(holder: LockHolder) -> bool:
    """True when the holder's process still runs and is the same process (not a reused PID)."""
    return _dead_reason(holder) is None


def _dead_reason(holder: LockHolder) -> str | None:
    """Why the process ``holder`` names is not the one that wrote it; None while it lives."""
    if holder.pid is None:
        return "it names no process"
    return process_gone_reason(holder.pid, holder.hostname, holder.process_start_time)


def process_gone_reason(
    pid: int, hostname: str | None = None, start_time: float | None = None
) -> str | None:
    """Why process ``pid`` (started at ``start_time`` on ``hostname``) no longer runs; None while
    it does. A PID now used by another process counts as gone; a process on another host is
    never called gone, since its processes cannot be seen from here. Used for lock holders and
    for the runs recorded in status files and Dagster run tags alike."""
    if hostname and hostname != socket.gethostname():
        return None
    current = process_start_time(pid)
    if current is None:
        return f"process {pid} is gone"
    if start_time is None:
        return None  # Dango writes no start time: a live PID is all we can check
    if abs(current - start_time) > _START_TIME_TOLERANCE_S:
        return f"PID {pid} now belongs to another process (its start time differs)"
    return None


def stale_reason(info_path: Path, live_holder: LockHolder | None) -> str | None:
    """Why ``dbt.lock.json`` does not describe the live holder, or None when it does (or is absent).

    ``live_holder`` is what ``read_lock_holder`` found (None: the lock is free). Stale info is
    harmless, since the lock itself is the kernel's, and the next acquisition cleans it.
    """
    if not info_path.exists():
        return None
    on_disk = read_holder_info(info_path)
    if on_disk is None:
        return "it is empty or corrupt"
    dead = _dead_reason(on_disk)
    if dead is not None:
        return dead
    if live_holder is None:
        return f"the lock is free, yet it names live process {on_disk.pid}"
    if not live_holder.known or live_holder.pid != on_disk.pid:
        return f"process {on_disk.pid} it names does not hold the lock"
    return None


def kernel_lock_pids(lock_path: Path) -> set[int] | None:
    """PIDs holding a lock on ``lock_path`` per /proc/locks (Linux); None when we cannot tell.

    Reading the kernel's table disturbs nobody, unlike a probing ``flock`` that could make a
    concurrent ``acquire(timeout=0)`` fail. A holder in another PID namespace (a container) shows
    as PID 0 and an open-file-description lock as -1: both still mean "held".
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = lock_path.stat()
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            table = fh.read()
    except OSError:
        return None
    exact = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    by_device: set[int] = set()
    by_inode: set[int] = set()
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; blocked waiters carry "->".
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":
            continue
        try:
            pid = int(parts[4])
        except ValueError:
            continue
        if parts[5] == exact:
            by_device.add(pid)
        elif parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
            by_inode.add(pid)
    # Overlay file systems report the backing device in /proc/locks: fall back to the inode.
    return by_device or by_inode


def clean_stale_info(info_path: Path, lock_path: Path) -> bool:
    """Remove holder info whose process is gone; True when something was removed.

    This runs without holding the lock (the seed cleans before every attempt), so it must never
    touch info a live holder may be writing. Dango's ``DbtLock`` writes its info *in place*
    (truncate, then write) right after it takes the lock, so for a moment the file is empty and
    looks corrupt. Hence empty or corrupt info is cleaned only while the kernel's lock table says
    nobody holds the lock (checked before and after moving the file). Info that names a process
    that is gone (or a reused PID) is cleaned whoever holds the lock: a holder that rewrites it
    meanwhile changes its mtime or inode, and the version check below puts its file back.

    The file judged stale is moved aside under a private name (an atomic rename); if what was
    moved is not the file we judged (a holder replaced it meanwhile: ``os.replace`` makes a new
    inode, Dango's in-place write a new mtime), or a holder appeared meanwhile, it is linked back,
    unless newer info already took its place.
    """
    try:
        before = os.stat(info_path)
    except OSError:
        return False
    pids = kernel_lock_pids(lock_path)
    info = read_holder_info(info_path)
    if info is not None and holder_is_alive(info):
        return False
    if info is None and pids != set():
        return False  # empty or torn while the lock is held (or unknown): a holder is writing it
    aside = info_path.with_name(f".{info_path.name}.stale.{os.getpid()}.{threading.get_ident()}")
    try:
        os.replace(info_path, aside)
    except OSError:
        return False
    try:
        moved = os.stat(aside)
        if _same_version(moved, before) and (
            info is not None or kernel_lock_pids(lock_path) == set()
        ):
            return True
        with contextlib.suppress(OSError):  # FileExistsError: newer info is already there
            os.link(aside, info_path)
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(aside)


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_mtime_ns, a.st_size) == (
        b.st_dev,
        b.st_ino,
        b.st_mtime_ns,
        b.st_size,
    )
