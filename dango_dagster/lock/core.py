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
* Re-entrant per process (any thread, any object): see ``lock_registry``, which also makes it
  safe across ``fork``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dango_dagster._fs import atomic_write_json
from dango_dagster.errors import DbtLockError, DbtLockTimeout
from dango_dagster.lock import fairness
from dango_dagster.lock.holder import read_file_lock_holder, read_lock_holder
from dango_dagster.lock.info import (
    LockHolder,
    LockWait,
    clean_stale_info,
    holder_is_alive,
    lock_paths,
    now_iso,
    process_start_time,
    read_holder_info,
)
from dango_dagster.lock.primitives import (
    IS_WINDOWS,
    BlockingWaiter,
    open_lock_file,
    poll_lock,
    same_file,
    try_lock,
    unlock,
)
from dango_dagster.lock.registry import Held, KeyState, generation, key_for, state_for
from dango_dagster.lock.reporter import WaitReporter as _Reporter
from dango_dagster.lock.target import lock_target

if TYPE_CHECKING:
    from dango_dagster.lock.postgres import PgLockSession

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


@functools.lru_cache(maxsize=4)
def _own_start_time(pid: int) -> float | None:
    """Our own start time never changes (keyed by PID: a forked child has its own)."""
    return process_start_time(pid)


class DbtLock:
    """The project's warehouse write lock.

    ``with DbtLock(project_dir, source="dagster", operation="dbt build"):`` waits up to 300 s.
    ``acquire(timeout=0)`` makes one attempt (the CLI's fail-fast). Nested acquisition by the same
    process on the same project is re-entrant: it does not deadlock and keeps the outer holder info.
    ``on_wait`` is called when a wait starts and every ``report_interval`` seconds while it lasts;
    an exception it raises cancels the wait (and propagates).
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
        self.report_interval = max(0.01, report_interval)
        # file (flock) or postgres (+ flock when the warehouse is a local file): lock/target.py
        self.target = lock_target(self.project_dir)
        self._file_key = key_for(self.lock_path)
        self._key = self.target.registry_key or self._file_key
        self._depth = 0
        self._forked_depth = 0
        self._generation = generation()
        self.wait_seconds = 0.0
        self.acquired_at: float | None = None

    def _sync_generation(self) -> None:
        if self._generation != generation():  # we are a forked child: the parent's hold is not ours
            self._generation = generation()
            self._forked_depth, self._depth = self._forked_depth + self._depth, 0

    @property
    def held(self) -> bool:
        self._sync_generation()
        return self._depth > 0

    def acquire(
        self,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        on_wait: Callable[[LockWait], None] | None = None,
    ) -> DbtLock:
        """Return once held; raise ``DbtLockTimeout`` naming the holder if it stays taken.

        ``timeout=0`` is a single attempt; ``None`` waits for ever.
        """
        self._sync_generation()
        rep = _Reporter(self, on_wait or self.on_wait, timeout)
        state = state_for(self._key)
        if self._join_or_claim(state, rep):
            session: PgLockSession | None = None
            fd: int | None = None
            try:
                # Postgres first, then the local flock (release in reverse): one order
                # everywhere, and Dango only ever takes the flock, so no cycle can form.
                if self.target.backend == "postgres":
                    session = self._acquire_pg(rep)
                if self.target.flock:
                    rep.who = lambda: read_file_lock_holder(self.project_dir)
                    fd = self._acquire_fd(state_for(self._file_key), rep)
                    fairness.note_acquired(self.lock_path)
                holder = self._write_info(fd, session)
            except BaseException:
                if session is not None:
                    session.release()
                with state.cond:
                    state.acquiring = False
                    state.cond.notify_all()
                raise
            with state.cond:
                state.held = Held(fd=fd, count=1, holder=holder, session=session)
                state.acquiring = False
                state.cond.notify_all()
                self._depth += 1
        self.wait_seconds = time.monotonic() - rep.start
        if self._depth == 1:
            self.acquired_at = time.monotonic()
        return self

    def _join_or_claim(self, state: KeyState, rep: _Reporter) -> bool:
        """Join this process's hold (False), or become the thread that takes the OS lock (True)."""
        while True:
            with state.cond:
                if state.held is not None:
                    state.held.count += 1
                    self._depth += 1
                    return False
                if not state.acquiring:
                    state.acquiring = True
                    return True
                if rep.expired():
                    break
                # Another thread of ours is taking it; we join its hold once it has it.
                state.cond.wait(rep.slice())
            rep.tick()
        raise rep.timeout_error()

    def _acquire_pg(self, rep: _Reporter) -> PgLockSession:
        """Take the advisory lock on a session of our own, queueing on the server in slices."""
        from dango_dagster.lock.postgres import PgLockSession

        session = PgLockSession(self.target.dsn or "", self.target.key or "")
        try:
            rep.who = session.read_holder
            got = session.try_lock()
            while not got:
                if rep.expired():
                    got = session.try_lock()  # a last attempt, as for the file lock
                    if not got:
                        raise rep.timeout_error()
                    break
                rep.tick()
                got = session.wait(max(0.001, rep.slice()))
        except BaseException:
            session.close()  # ending the session frees the lock if it came meanwhile
            raise
        return session

    def _acquire_fd(self, state: KeyState, rep: _Reporter) -> int:
        queues = rep.deadline is None or rep.deadline > rep.start  # not a fail-fast attempt
        yields = 0
        while True:
            clean_stale_info(self.info_path, self.lock_path)
            if queues:  # another waiter of ours is leaving the lock to a Dango poller
                fairness.honour_yield(self.lock_path, rep.expired, rep.tick)
            mark = fairness.touch_mark(self.lock_path)
            opened = open_lock_file(self.lock_path)
            try:
                got = try_lock(opened)
            except OSError as exc:
                os.close(opened)
                raise DbtLockError(f"Could not lock {self.lock_path}: {exc}") from exc
            fd = opened
            if not got:
                waited: int | None = None
                if rep.expired():
                    os.close(opened)
                else:
                    waited = self._wait(state, opened, rep)
                fd = waited if waited is not None else self._last_attempt(rep)
            if not same_file(fd, self.lock_path):
                unlock(fd)  # the lock file was replaced under us: lock the one now at that path
                os.close(fd)
                continue
            if (
                not got
                and yields < fairness.MAX_YIELDS
                and not rep.expired()
                and (
                    fairness.foreign_touched(self.lock_path, mark)
                    or fairness.yield_pending(self.lock_path)
                )
            ):
                # A Dango waiter polled while we waited: leave it the next poll (fairness.py).
                unlock(fd)
                os.close(fd)
                yields += 1
                fairness.yield_to_foreign(self.lock_path, rep.expired, rep.tick)
                continue
            return fd

    def _wait(self, state: KeyState, fd: int, rep: _Reporter) -> int | None:
        """Block until the lock is ours (the locked fd) or the deadline passes (None).

        Consumes ``fd``: it either becomes the returned one, or a waiter owns it.
        """
        if IS_WINDOWS:  # pragma: no cover - msvcrt has no blocking wait we could abandon
            try:
                if poll_lock(fd, rep.expired, rep.tick):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            return None
        waiter = state.waiter
        if waiter is not None and waiter.adopt():
            os.close(fd)
        else:
            waiter = state.waiter = BlockingWaiter(fd)
        try:
            while not rep.expired():
                rep.tick()
                if waiter.wait(rep.slice()):
                    state.waiter = None
                    try:
                        return waiter.take()
                    except OSError as exc:
                        raise DbtLockError(f"Could not lock {self.lock_path}: {exc}") from exc
        except BaseException:
            got = waiter.abandon()
            if got is not None:  # the lock came just as we were interrupted: let it go
                state.waiter = None
                unlock(got)
                os.close(got)
            raise
        got = waiter.abandon()
        if got is not None:
            state.waiter = None
        return got

    def _last_attempt(self, rep: _Reporter) -> int:
        """At the deadline: if the holder is gone by now, take the lock instead of failing."""
        if read_file_lock_holder(self.project_dir) is None:
            fd = open_lock_file(self.lock_path)
            try:
                if try_lock(fd):
                    return fd
            except OSError:
                pass
            os.close(fd)
        raise rep.timeout_error()

    def _write_info(self, fd: int | None, session: PgLockSession | None) -> LockHolder:
        pid = os.getpid()
        holder = LockHolder(
            pid=pid,
            source=self.source,
            operation=self.operation,
            started_at=now_iso(),
            hostname=socket.gethostname(),
            process_start_time=_own_start_time(pid),
        )
        try:
            if session is not None:  # what `lock status` shows on every host
                session.publish(holder)
            if fd is not None:
                # No fsync: after a crash the info is stale anyway; readers never trust it blindly.
                atomic_write_json(self.info_path, holder.to_json(), durable=False)
        except BaseException as exc:
            if fd is not None:
                unlock(fd)
                os.close(fd)
            if isinstance(exc, OSError):
                raise DbtLockError(
                    f"Took the lock of {self.project_dir} but could not write its holder info "
                    f"{self.info_path}: {exc}; the lock was let go again."
                ) from exc
            raise
        return holder

    def release(self) -> None:
        """Let the lock go (the outermost release of this process frees it for others)."""
        self._sync_generation()
        if self._depth == 0 and self._forked_depth > 0:
            self._forked_depth -= 1  # a forked child leaving its parent's `with` block
            return
        if self._depth == 0:
            raise DbtLockError("release() called on a DbtLock that is not held")
        state = state_for(self._key)
        with state.cond:
            self._depth -= 1
            entry = state.held
            if entry is None:
                return
            entry.count -= 1
            if entry.count > 0:
                return
            state.held = None
            # Still under ``cond``: no thread of ours can take the lock (and write its info)
            # before our info is gone. Removing it before unlocking means we can never delete
            # the info of the next holder in another process.
            try:
                if entry.fd is not None:
                    info = read_holder_info(self.info_path)
                    if info is not None and info.pid == os.getpid():
                        with contextlib.suppress(OSError):
                            self.info_path.unlink()
                    fairness.before_release(self.lock_path)
                    try:
                        unlock(entry.fd)
                    finally:
                        os.close(entry.fd)
            finally:
                if entry.session is not None:  # the flock first, then postgres (reverse order)
                    entry.session.release()

    @property
    def held_seconds(self) -> float:
        return 0.0 if self.acquired_at is None else time.monotonic() - self.acquired_at

    def __enter__(self) -> DbtLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DbtLock({str(self.project_dir)!r}, source={self.source!r}, held={self.held})"
