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
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dango_dagster.fsutil import atomic_write_json
from dango_dagster.lock_info import (
    LockHolder,
    LockWait,
    clean_stale_info,
    holder_is_alive,
    kernel_lock_pids,
    lock_paths,
    now_iso,
    process_start_time,
    read_holder_info,
)
from dango_dagster.lock_os import (
    IS_WINDOWS,
    BlockingWaiter,
    open_lock_file,
    probe_free,
    same_file,
    try_lock,
    unlock,
)

__all__ = [
    "DbtLock",
    "DbtLockError",
    "DbtLockTimeout",
    "LockHolder",
    "LockWait",
    "holder_is_alive",
    "lock_paths",
    "read_lock_holder",
    "read_holder_info",
]

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_REPORT_INTERVAL_S = 5.0


class DbtLockError(RuntimeError):
    """Base class for warehouse lock failures."""


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
    pids = kernel_lock_pids(lock_path)
    held = bool(pids) if pids is not None else not probe_free(lock_path)
    if not held:
        return None
    info = read_holder_info(info_path)
    if info is not None and holder_is_alive(info) and (not pids or info.pid in pids):
        return info
    return LockHolder(pid=min(pids) if pids else None, known=False)


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
            started_at=now_iso(),
            hostname=socket.gethostname(),
            process_start_time=process_start_time(os.getpid()),
        )
        try:
            atomic_write_json(self.info_path, holder.to_json())
        except OSError:
            unlock(fd)
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
            clean_stale_info(self.info_path)
            fd = open_lock_file(self.lock_path)
            if try_lock(fd):
                if same_file(fd, self.lock_path):
                    return fd
                unlock(fd)
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
            if same_file(got, self.lock_path):
                return got
            unlock(got)
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
        waiter = BlockingWaiter(fd)
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
        while not try_lock(fd):
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
            unlock(entry.fd)
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
