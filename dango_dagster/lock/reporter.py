"""A wait for the warehouse lock, as its user sees it: progress reports and the timeout error.

Shared by both phases of ``DbtLock.acquire`` (the Postgres advisory lock, then the local flock):
one deadline, one ``on_wait`` rhythm, and an error that names whoever blocked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dango_dagster.errors import DbtLockTimeout
from dango_dagster.lock.holder import read_lock_holder
from dango_dagster.lock.info import LockHolder, LockWait

if TYPE_CHECKING:
    from dango_dagster.lock.core import DbtLock

__all__ = ["WaitReporter"]


class WaitReporter:
    """Calls the ``on_wait`` hook when a wait starts and every ``interval`` seconds after."""

    def __init__(
        self, lock: DbtLock, hook: Callable[[LockWait], None] | None, timeout: float | None
    ) -> None:
        self.lock, self.hook, self.timeout = lock, hook, timeout
        # Who blocks us, for reports and the timeout error (DbtLock points it at the phase's lock:
        # the Postgres session's view while it queues there, the local flock's after).
        self.who: Callable[[], LockHolder | None] = lambda: read_lock_holder(
            lock.project_dir, lock.target
        )
        self.start = time.monotonic()
        self.deadline = None if timeout is None else self.start + max(0.0, timeout)
        self._next = self.start

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def slice(self) -> float:
        """How long to block before the next report or the deadline, whichever comes first."""
        now = time.monotonic()
        wake = self._next if self.hook is not None else now + self.lock.report_interval
        if self.deadline is not None:
            wake = min(wake, self.deadline)
        return max(0.0, wake - now)

    def tick(self) -> None:
        now = time.monotonic()
        if self.hook is None or now < self._next:
            return
        self._next = now + self.lock.report_interval
        self.hook(LockWait(now - self.start, self.timeout, self.who()))

    def timeout_error(self) -> DbtLockTimeout:
        holder = self.who()
        waited = time.monotonic() - self.start
        return DbtLockTimeout(self.lock.project_dir, holder, waited, self.timeout)
