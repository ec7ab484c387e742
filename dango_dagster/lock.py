"""The warehouse write lock: one writer at a time, across every process on the project.

DuckDB lets one process write a database file. Everything that writes the warehouse (a dlt load,
a dbt run, a snapshot checkpoint, Dango's own CLI) takes this lock first, so writers queue instead
of failing with "database is locked".

The lock is the same one Dango's own ``DbtLock`` takes, so the two interoperate on one project:
``flock(LOCK_EX | LOCK_NB)`` on ``.dango/state/dbt.lock`` (``msvcrt.locking`` on byte 0 on
Windows), with the holder described in ``.dango/state/dbt.lock.json``.

Rules this module keeps (see docs/LOCKING.md):

* ``dbt.lock`` is never deleted. ``flock`` locks an inode; unlinking and recreating the file would
  let two processes each hold "the lock" on different inodes. The kernel frees the lock when its
  holder dies, so only the JSON holder info can go stale, and that is what gets cleaned.
* Holder info is written atomically (temporary file + ``os.replace``) and names the holder's
  process start time, so a PID reused by another process is recognised as stale.
* A waiter blocks in the kernel (a helper thread sits in a blocking ``flock``), so it takes the lock
  within microseconds of its release and burns no CPU while waiting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "DbtLock",
    "DbtLockError",
    "DbtLockTimeout",
    "LockHolder",
    "LockWait",
    "lock_paths",
    "read_lock_holder",
    "read_holder_info",
]

IS_WINDOWS = sys.platform == "win32"
if IS_WINDOWS:  # pragma: no cover - CI runs on Linux
    import msvcrt
else:
    import fcntl

LOCK_RELPATH = Path(".dango") / "state" / "dbt.lock"
INFO_RELPATH = Path(".dango") / "state" / "dbt.lock.json"
# Two start times closer than this belong to the same process (psutil rounds differently across
# platforms and Dango writes none at all).
_START_TIME_TOLERANCE_S = 1.0
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_REPORT_INTERVAL_S = 5.0


class DbtLockError(RuntimeError):
    """Base class for warehouse lock failures."""


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
        started = _parse_time(self.started_at)
        if started is None:
            return None
        return max(0.0, (dt.datetime.now(dt.UTC) - started).total_seconds())

    def describe(self) -> str:
        """One line naming the holder, for error messages and logs."""
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


class DbtLockTimeout(DbtLockError):
    """The lock stayed held for the whole timeout; ``holder`` is the holder info (None: unknown)."""

    def __init__(
        self, project_dir: Path, holder: LockHolder | None, waited: float, timeout: float | None
    ) -> None:
        self.project_dir = project_dir
        self.holder = holder if holder is not None and holder.known else None
        self.raw_holder = holder
        self.waited_seconds = waited
        self.timeout = timeout
        who = holder.describe() if holder is not None else "an unknown holder"
        wait_txt = (
            "did not wait (fail-fast)" if not timeout else f"gave up after waiting {waited:.1f} s"
        )
        super().__init__(
            f"The warehouse of {project_dir} is locked by {who}; {wait_txt}. "
            "Wait for that operation to finish (`dango-dagster lock wait`), or see who holds it "
            "with `dango-dagster lock status`. Never delete .dango/state/dbt.lock."
        )


def lock_paths(project_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The lock file and the holder-info file of a project."""
    root = Path(project_dir)
    return root / LOCK_RELPATH, root / INFO_RELPATH


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    # Dango writes naive local times; treat them as local.
    return parsed.astimezone(dt.UTC) if parsed.tzinfo is None else parsed


def _process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError, ValueError):
        return None


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
    known_keys = {"pid", "source", "operation", "started_at", "hostname", "process_start_time"}
    known_keys.add("known")  # older files of ours may carry it
    return LockHolder(
        pid=pid,
        source=str(raw.get("source", "unknown")),
        operation=str(raw.get("operation", "unknown")),
        started_at=raw.get("started_at") if isinstance(raw.get("started_at"), str) else None,
        hostname=raw.get("hostname") if isinstance(raw.get("hostname"), str) else None,
        process_start_time=float(pst) if isinstance(pst, int | float) else None,
        extra={k: v for k, v in raw.items() if k not in known_keys},
    )


def holder_is_alive(holder: LockHolder) -> bool:
    """True when the holder's process still runs and is the same process (not a reused PID)."""
    if holder.pid is None:
        return False
    if holder.hostname and holder.hostname != socket.gethostname():
        # Another host (a shared folder): we cannot see its processes, so never call it stale.
        return True
    current = _process_start_time(holder.pid)
    if current is None:
        return False
    if holder.process_start_time is None:
        return True
    return abs(current - holder.process_start_time) <= _START_TIME_TOLERANCE_S


def _kernel_lock_pids(lock_path: Path) -> set[int] | None:
    """PIDs holding a lock on ``lock_path`` per /proc/locks (Linux); None when we cannot tell.

    Reading the kernel's table disturbs nobody, unlike a probing ``flock`` that could make a
    concurrent ``acquire(timeout=0)`` fail.
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
        if len(parts) < 6 or parts[1] == "->" or not parts[4].isdigit():
            continue
        if parts[5] == exact:
            by_device.add(int(parts[4]))
        elif parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
            by_inode.add(int(parts[4]))
    # Overlay filesystems report the backing device in /proc/locks: fall back to the inode.
    return by_device or by_inode


def _probe_free(lock_path: Path) -> bool:
    """Fallback where there is no /proc/locks: try the lock and let it go at once."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return True
    try:
        if _try_lock(fd):
            _unlock(fd)
            return True
        return False
    finally:
        os.close(fd)


def read_lock_holder(project_dir: str | os.PathLike[str]) -> LockHolder | None:
    """The live holder of a project's lock, or None when the lock is free.

    Never takes or disturbs the lock, and never trusts the JSON file alone: info whose process is
    gone (or whose PID now belongs to another process) is ignored, and a holder that wrote no info
    is reported with ``known=False``.
    """
    lock_path, info_path = lock_paths(project_dir)
    ours = _held_by_this_process(lock_path)
    if ours is not None:
        return ours
    if not lock_path.exists():
        return None
    pids = _kernel_lock_pids(lock_path)
    held = bool(pids) if pids is not None else not _probe_free(lock_path)
    if not held:
        return None
    info = read_holder_info(info_path)
    if info is not None and holder_is_alive(info) and (not pids or info.pid in pids):
        return info
    return LockHolder(pid=min(pids) if pids else None, known=False)


def _clean_stale_info(info_path: Path) -> bool:
    """Remove holder info whose process is gone; True when something was removed.

    Only the exact file we judged is removed (same inode and mtime), so info that a new holder
    wrote in the meantime (``os.replace`` gives it a new inode) survives.
    """
    try:
        before = info_path.stat()
    except OSError:
        return False
    info = read_holder_info(info_path)
    if info is not None and holder_is_alive(info):
        return False
    try:
        now = info_path.stat()
        if (now.st_ino, now.st_mtime_ns) != (before.st_ino, before.st_mtime_ns):
            return False
        info_path.unlink()
    except OSError:
        return False
    return True


def _atomic_write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(dict(data), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- OS primitives -----------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    try:
        if IS_WINDOWS:  # pragma: no cover
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if IS_WINDOWS:  # pragma: no cover
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _open_lock_file(lock_path: Path) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # O_CREAT without O_TRUNC: the file is created once and never replaced or deleted by us.
    return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)


def _same_file(fd: int, lock_path: Path) -> bool:
    """Guard against a lock file that someone (an old Dango) unlinked and recreated meanwhile."""
    if IS_WINDOWS:  # pragma: no cover
        return True
    try:
        a, b = os.fstat(fd), os.stat(lock_path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _BlockingWaiter:
    """A thread that sits in a blocking ``flock`` so the kernel wakes us the instant it is free.

    If the caller gives up first, the thread is told so and lets the lock go the moment it gets it.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self._state = threading.Lock()
        self._abandoned = False
        self._got = False
        self.error: OSError | None = None
        threading.Thread(target=self._run, name="dbt-lock-waiter", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
            self.done.set()
            return
        with self._state:
            if self._abandoned:
                _unlock(self.fd)
                os.close(self.fd)
                return
            self._got = True
        self.done.set()

    def abandon(self) -> bool:
        """Give up; True if the lock arrived in the meantime and is ours after all."""
        with self._state:
            if self._got:
                return True
            if self.error is not None:
                os.close(self.fd)
                return False
            self._abandoned = True
            return False


# --- process-wide registry (re-entrancy) -------------------------------------------------------


@dataclass
class _Held:
    fd: int
    count: int
    holder: LockHolder


_REGISTRY: dict[str, _Held] = {}
_REGISTRY_LOCK = threading.Lock()


def _key(lock_path: Path) -> str:
    return os.path.realpath(lock_path)


def _held_by_this_process(lock_path: Path) -> LockHolder | None:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(_key(lock_path))
        return entry.holder if entry else None


def _forget_after_fork() -> None:
    # A forked child shares the parent's open file description: unlocking it would release the
    # parent's lock. The child simply forgets it holds anything.
    _REGISTRY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class DbtLock:
    """The project's warehouse write lock.

    ``with DbtLock(project_dir, source="dagster", operation="dbt build"):`` waits up to 300 s.
    ``acquire(timeout=0)`` makes one attempt (the CLI's fail-fast). Nested acquisition by the same
    process on the same project is re-entrant: it does not deadlock and keeps the outer holder info.
    ``on_wait`` is called when a wait starts and every ``report_interval`` seconds while it lasts.
    """

    def __init__(
        self,
        project_dir: str | os.PathLike[str],
        source: str = "unknown",
        operation: str = "dbt operation",
        *,
        on_wait: Callable[[LockWait], None] | None = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL_S,
    ) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.lock_path, self.info_path = lock_paths(self.project_dir)
        self.source = source
        self.operation = operation
        self.on_wait = on_wait
        self.report_interval = report_interval
        self._depth = 0
        self.wait_seconds = 0.0
        self.acquired_at: float | None = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(
        self,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        on_wait: Callable[[LockWait], None] | None = None,
    ) -> DbtLock:
        """Return once held; raise ``DbtLockTimeout`` naming the holder if it stays taken.

        ``timeout=0`` is a single attempt; ``None`` waits for ever.
        """
        hook = on_wait or self.on_wait
        key = _key(self.lock_path)
        with _REGISTRY_LOCK:
            entry = _REGISTRY.get(key)
            if entry is not None:
                entry.count += 1
                self._depth += 1
                self.wait_seconds = 0.0
                return self
        start = time.monotonic()
        fd = self._acquire_fd(timeout, hook, start)
        holder = LockHolder(
            pid=os.getpid(),
            source=self.source,
            operation=self.operation,
            started_at=_now_iso(),
            hostname=socket.gethostname(),
            process_start_time=_process_start_time(os.getpid()),
        )
        try:
            _atomic_write_json(self.info_path, holder.to_json())
        except OSError:
            _unlock(fd)
            os.close(fd)
            raise
        with _REGISTRY_LOCK:
            _REGISTRY[key] = _Held(fd=fd, count=1, holder=holder)
        self._depth += 1
        self.wait_seconds = time.monotonic() - start
        self.acquired_at = time.monotonic()
        return self

    def _acquire_fd(
        self, timeout: float | None, hook: Callable[[LockWait], None] | None, start: float
    ) -> int:
        deadline = None if timeout is None else start + max(0.0, timeout)
        reported = False
        while True:
            _clean_stale_info(self.info_path)
            fd = _open_lock_file(self.lock_path)
            if _try_lock(fd):
                if _same_file(fd, self.lock_path):
                    return fd
                _unlock(fd)
                os.close(fd)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                raise self._timeout(start, timeout)
            if hook is not None and not reported:
                holder = read_lock_holder(self.project_dir)
                hook(LockWait(time.monotonic() - start, timeout, holder))
                reported = True
            got = self._wait_fd(fd, deadline, hook, start, timeout)
            if got is None:
                raise self._timeout(start, timeout)
            if _same_file(got, self.lock_path):
                return got
            _unlock(got)
            os.close(got)

    def _wait_fd(
        self,
        fd: int,
        deadline: float | None,
        hook: Callable[[LockWait], None] | None,
        start: float,
        timeout: float | None,
    ) -> int | None:
        """Wait until ``fd`` is locked by us (returns it) or the deadline passes (None)."""
        if IS_WINDOWS:  # pragma: no cover - msvcrt has no blocking wait we can abandon
            return self._poll_fd(fd, deadline, hook, start, timeout)
        waiter = _BlockingWaiter(fd)
        next_report = time.monotonic() + self.report_interval
        while True:
            now = time.monotonic()
            wake = next_report if deadline is None else min(deadline, next_report)
            if waiter.done.wait(max(0.0, wake - now)):
                if waiter.error is not None:
                    os.close(fd)
                    raise DbtLockError(f"Could not lock {self.lock_path}: {waiter.error}")
                return fd
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return fd if waiter.abandon() else None
            if now >= next_report:
                next_report = now + self.report_interval
                if hook is not None:
                    hook(LockWait(now - start, timeout, read_lock_holder(self.project_dir)))

    def _poll_fd(  # pragma: no cover - Windows only
        self,
        fd: int,
        deadline: float | None,
        hook: Callable[[LockWait], None] | None,
        start: float,
        timeout: float | None,
    ) -> int | None:
        delay, next_report = 0.001, time.monotonic() + self.report_interval
        while not _try_lock(fd):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                os.close(fd)
                return None
            if hook is not None and now >= next_report:
                next_report = now + self.report_interval
                hook(LockWait(now - start, timeout, read_lock_holder(self.project_dir)))
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return fd

    def _timeout(self, start: float, timeout: float | None) -> DbtLockTimeout:
        return DbtLockTimeout(
            self.project_dir, read_lock_holder(self.project_dir), time.monotonic() - start, timeout
        )

    def release(self) -> None:
        """Let the lock go (the outermost release of this process frees it for others)."""
        if self._depth == 0:
            raise DbtLockError("release() called on a DbtLock that is not held")
        self._depth -= 1
        key = _key(self.lock_path)
        with _REGISTRY_LOCK:
            entry = _REGISTRY.get(key)
            if entry is None:
                return
            entry.count -= 1
            if entry.count > 0:
                return
            del _REGISTRY[key]
        # Remove our info before unlocking, so we can never delete the next holder's info.
        info = read_holder_info(self.info_path)
        if info is not None and info.pid == os.getpid():
            with contextlib.suppress(OSError):
                self.info_path.unlink()
        try:
            _unlock(entry.fd)
        finally:
            os.close(entry.fd)

    @property
    def held_seconds(self) -> float:
        return 0.0 if self.acquired_at is None else time.monotonic() - self.acquired_at

    def __enter__(self) -> DbtLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DbtLock({str(self.project_dir)!r}, source={self.source!r}, held={self.held})"
