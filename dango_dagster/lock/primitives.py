"""OS primitives of the warehouse lock: ``flock`` (``msvcrt.locking`` on Windows) and the waiter.

Everything platform-specific lives here; ``dango_dagster.lock`` builds the lock's rules on top.
The primitives are exactly Dango's: ``flock(LOCK_EX | LOCK_NB)`` on the whole file on Unix, a
one-byte ``msvcrt.locking`` at offset 0 on Windows. That is what makes the two tools exclude each
other on one project.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

IS_WINDOWS = sys.platform == "win32"
if IS_WINDOWS:  # pragma: no cover - CI runs on Linux
    import msvcrt
else:
    import fcntl

# errno values that mean "someone else holds it" rather than "locking itself failed".
_HELD_ERRNOS = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES}
if IS_WINDOWS:  # pragma: no cover
    _HELD_ERRNOS.add(errno.EDEADLOCK)


def try_lock(fd: int) -> bool:
    """One non-blocking attempt: True when ``fd`` now holds the lock, False when another does.

    Any other failure (say ``ENOLCK`` on a network file system that cannot lock) raises
    ``OSError``: treating it as "held" would make every writer wait its full timeout for a holder
    that does not exist.
    """
    try:
        if sys.platform == "win32":  # pragma: no cover (IS_WINDOWS, spelt for type checkers)
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _HELD_ERRNOS:
            return False
        raise
    return True


def unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover (IS_WINDOWS, spelt for type checkers)
        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_lock_file(lock_path: Path) -> int:
    """Open (creating if missing) the lock file; the descriptor is not inherited by children."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # O_CREAT without O_TRUNC: the file is created once and never replaced or deleted by us.
    return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)


def same_file(fd: int, lock_path: Path) -> bool:
    """Guard against a lock file that someone (an old Dango) unlinked and recreated meanwhile."""
    if IS_WINDOWS:  # pragma: no cover - an open file cannot be unlinked there
        return True
    try:
        a, b = os.fstat(fd), os.stat(lock_path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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
    except OSError:
        return True
    finally:
        os.close(fd)


def poll_lock(
    fd: int, expired: Callable[[], bool], tick: Callable[[], None]
) -> bool:  # pragma: no cover - Windows only
    """Windows' wait: ``msvcrt`` has no blocking lock we could abandon, so poll, 1 ms doubling to
    20 ms (still far below Dango's 5 s). True once ``fd`` holds the lock, False when ``expired``."""
    delay = 0.001
    while not try_lock(fd):
        if expired():
            return False
        tick()
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


@contextlib.contextmanager
def file_mutex(
    path: Path,
    poll: float = 0.05,
    on_wait: Callable[[float], None] | None = None,
    report_every: float = 5.0,
) -> Iterator[None]:
    """A small cross-process mutex on ``path`` for short, rare sections (not the warehouse lock).

    Used where two processes must not do the same preparation at once (``dbt parse`` of one dbt
    project, the working folder of one source); a 50 ms poll is plenty there and costs no
    measurable CPU. ``on_wait(seconds_waited)`` is called when it is busy, then every
    ``report_every`` seconds, so a run waiting here can say so.
    """
    fd = open_lock_file(path)
    try:
        started = last = None
        while not try_lock(fd):
            now = time.monotonic()
            started = now if started is None else started
            if on_wait is not None and (last is None or now - last >= report_every):
                last = now
                on_wait(now - started)
            time.sleep(poll)
        yield
    finally:
        with contextlib.suppress(OSError):
            unlock(fd)
        os.close(fd)


class BlockingWaiter:
    """A thread blocked in ``flock(LOCK_EX)`` so the kernel wakes it the instant the lock is free.

    This is what makes handoff take microseconds at no CPU cost, instead of a poll every few
    seconds. Linux has no timed ``flock`` and a blocked one cannot be cancelled from Python, so a
    waiter whose owner gives up is *abandoned*, not stopped: it stays queued in the kernel and,
    when the lock finally comes, lets it go at once and closes its descriptor. The next wait of
    this process on the same lock *adopts* it instead of starting another thread, so a long-lived
    process that times out again and again keeps at most one such thread per lock file.

    States: ``waiting`` (an owner wants it) -> ``got`` -> ``taken`` (the owner has the fd), or
    ``waiting`` -> ``abandoned`` -> ``closed`` (released unused), or ``error``.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self._cond = threading.Condition()
        self._state = "waiting"
        threading.Thread(target=self._run, name="dbt-lock-waiter", daemon=True).start()

    @property
    def state(self) -> str:
        return self._state

    def _run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
            got = False
        else:
            got = True
        with self._cond:
            if self._state == "abandoned":
                if got:
                    unlock(self.fd)
                os.close(self.fd)
                self._state = "closed"
            else:
                self._state = "got" if got else "error"
            self._cond.notify_all()

    def wait(self, timeout: float | None) -> bool:
        """True once the wait is over (lock obtained, or failed: ``take`` tells which)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._state in ("got", "error"), timeout)

    def take(self) -> int:
        """The locked descriptor, now the caller's; raises the ``OSError`` if locking failed."""
        with self._cond:
            fd = self._hand_over()
        if fd is not None:
            return fd
        if self.error is not None:
            raise self.error
        raise RuntimeError(f"BlockingWaiter.take() in state {self._state!r}")

    def abandon(self) -> int | None:
        """Stop wanting the lock; the fd if it arrived meanwhile (it is then the caller's)."""
        with self._cond:
            if self._state == "waiting":
                self._state = "abandoned"
                return None
            return self._hand_over()

    def _hand_over(self) -> int | None:
        """With ``_cond`` held, end a finished wait: the fd if the lock came, else close it."""
        if self._state == "got":
            self._state = "taken"
            return self.fd
        if self._state == "error":
            os.close(self.fd)
            self._state = "closed"
        return None

    def adopt(self) -> bool:
        """Claim an abandoned waiter still queued in the kernel; False once it has finished."""
        with self._cond:
            if self._state == "abandoned":
                self._state = "waiting"
                return True
            return False

    def fd_if_open(self) -> int | None:
        """The descriptor while this waiter still owns it (for closing after ``fork``)."""
        return self.fd if self._state in ("waiting", "abandoned", "got", "error") else None
