"""OS primitives of the warehouse lock: ``flock`` (``msvcrt.locking`` on Windows) and the waiter.

Split from ``dango_dagster.lock``; everything platform-specific lives here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"
if IS_WINDOWS:  # pragma: no cover - CI runs on Linux
    import msvcrt
else:
    import fcntl


def probe_free(lock_path: Path) -> bool:
    """Fallback where there is no /proc/locks: try the lock and let it go at once."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return True
    try:
        if try_lock(fd):
            unlock(fd)
            return True
        return False
    finally:
        os.close(fd)


def try_lock(fd: int) -> bool:
    try:
        if IS_WINDOWS:  # pragma: no cover
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def unlock(fd: int) -> None:
    if IS_WINDOWS:  # pragma: no cover
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_lock_file(lock_path: Path) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # O_CREAT without O_TRUNC: the file is created once and never replaced or deleted by us.
    return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)


def same_file(fd: int, lock_path: Path) -> bool:
    """Guard against a lock file that someone (an old Dango) unlinked and recreated meanwhile."""
    if IS_WINDOWS:  # pragma: no cover
        return True
    try:
        a, b = os.fstat(fd), os.stat(lock_path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class BlockingWaiter:
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
                unlock(self.fd)
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
