"""Every error dango-dagster raises on purpose: one ``DangoError`` hierarchy with an exit code and
a hint that says what to do.

Why one hierarchy: the command line turns any ``DangoError`` into ``error: <what happened> <what to
do>`` and its ``exit_code`` in one place (``dango_dagster.cli.errors``), library users catch one
base class, and the hint travels with the error into Dagster's run log. Each class also keeps the
built-in base it had before (``ValueError``, ``RuntimeError``, ``OSError``), so code that caught
those still does.

No imports beyond the standard library: ``lock/``, ``snapshots/`` and ``api/`` import this module
and must stay free of Dagster and quick to import.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from dango_dagster.lock.info import LockHolder

__all__ = [
    "EXIT_ERROR",
    "EXIT_HELD",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "ApiError",
    "DangoError",
    "DbtLockError",
    "DbtLockTimeout",
    "DemoProjectError",
    "FileSourceError",
    "InvalidUsernameError",
    "KeyStoreError",
    "ProjectConfigError",
    "QueryError",
    "RunFailedError",
    "RunInterruptedError",
    "RunLockTimeoutError",
    "RunTerminatedError",
    "ShortCopyError",
    "SnapshotError",
    "SourceError",
    "SqlRejected",
    "WarehouseMissingError",
    "with_hint",
]

# Exit codes of `dango-dagster` (documented in README's command table).
EXIT_OK = 0
EXIT_HELD = 1  # `lock status`: the lock is held (an answer, not a failure)
EXIT_LOCKED = 2  # a write could not take the lock in time (fail-fast, or the wait ran out)
EXIT_USAGE = 2  # bad arguments (argparse uses 2 as well)
EXIT_ERROR = 3  # anything else that went wrong; the message says what
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM)


def with_hint(message: str, hint: str) -> str:
    """``message`` followed by ``hint`` (same line for a one-line message, else the last line),
    unless the message already ends with it."""
    message = message.rstrip()
    if not hint or message.endswith(hint):
        return message
    return f"{message}\n{hint}" if "\n" in message else f"{message} {hint}"


class DangoError(Exception):
    """Base of every deliberate dango-dagster error.

    ``str(error)`` is what happened followed by ``hint`` (what to do); ``exit_code`` is what the
    command line exits with. Subclasses set a default hint; a raiser may pass a sharper one.
    """

    exit_code: ClassVar[int] = EXIT_ERROR
    default_hint: ClassVar[str] = ""

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = self.default_hint if hint is None else hint

    @property
    def message(self) -> str:
        """What happened, without the hint."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return with_hint(self.message, self.hint)


# -- project settings ------------------------------------------------------------------------
class ProjectConfigError(DangoError, ValueError):
    """The project folder or its settings are unusable; the message says what to fix."""


class SourceError(ProjectConfigError):
    """A source cannot be built or read; the message names the source and what to fix."""


class FileSourceError(SourceError):
    """A file of a csv/local_files source cannot be loaded; nothing was changed."""


class DemoProjectError(DangoError, RuntimeError):
    """A demo project cannot be created where asked; the message says what to do instead."""


# -- the warehouse lock ----------------------------------------------------------------------
class DbtLockError(DangoError, RuntimeError):
    """Base class for warehouse lock failures."""


class DbtLockTimeout(DbtLockError):
    """The lock stayed held for the whole timeout; ``holder`` is the holder info (None: unknown)."""

    exit_code = EXIT_LOCKED
    default_hint = (
        "Wait for that operation to finish (`dango-dagster lock wait`), or see who holds it "
        "with `dango-dagster lock status`. Never delete .dango/state/dbt.lock."
    )

    def __init__(
        self,
        project_dir: Path,
        holder: LockHolder | None,
        waited: float,
        timeout: float | None,
        *,
        hint: str | None = None,
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
            f"The warehouse of {project_dir} is locked by {who}; {wait_txt}.", hint=hint
        )

    def __reduce__(self):  # picklable despite the richer constructor (multiprocessing, Dagster)
        return (
            _rebuild_lock_timeout,
            (self.project_dir, self.raw_holder, self.waited_seconds, self.timeout, self.hint),
        )


def _rebuild_lock_timeout(
    project_dir: Path,
    holder: LockHolder | None,
    waited: float,
    timeout: float | None,
    hint: str,
) -> DbtLockTimeout:
    return DbtLockTimeout(project_dir, holder, waited, timeout, hint=hint)


class RunFailedError(DangoError, RuntimeError):
    """A pipeline run through Dagster (``sync``, ``demo run``) failed; the message is the first
    failed step's reason."""


class RunInterruptedError(RunFailedError):
    """A pipeline run stopped by Ctrl-C (SIGINT); the message says during what and what state the
    warehouse is in. The Dagster run is marked canceled."""

    exit_code = EXIT_INTERRUPTED


class RunTerminatedError(RunInterruptedError):
    """A pipeline run stopped by SIGTERM (``kill``, a service manager, a container stop)."""

    exit_code = EXIT_TERMINATED


class RunLockTimeoutError(RunFailedError):
    """A pipeline run failed because the warehouse lock stayed held (exits as a lock timeout)."""

    exit_code = EXIT_LOCKED


# -- snapshots -------------------------------------------------------------------------------
class SnapshotError(DangoError, RuntimeError):
    """A snapshot could not be taken; the message says why and what to do. Nothing was lost."""


class WarehouseMissingError(SnapshotError):
    """There is no warehouse file yet (the pipeline has never run)."""


class InvalidUsernameError(DangoError, ValueError):
    """A user name that leaves nothing usable after sanitising."""

    exit_code = EXIT_USAGE


class ShortCopyError(DangoError, OSError):
    """The source ended before ``size`` bytes were copied (it shrank while we copied)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.errno = errno.EIO
        self.strerror = message


# -- the query API ---------------------------------------------------------------------------
class ApiError(DangoError):
    """A refusal with an HTTP status, a stable code and a message, raised anywhere in the API.

    The app turns it into an ``ErrorResponse`` body and records ``code`` as the audit outcome, so
    one exception type carries everything a client and an auditor need.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


class SqlRejected(ApiError):
    """The SQL guard refused the statement before it reached a connection."""


class QueryError(DangoError, RuntimeError):
    """A query through the API failed (client side): the server's status, code and reason."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class KeyStoreError(DangoError, ValueError):
    """A key store problem the user can fix (unknown key name, corrupt file)."""
