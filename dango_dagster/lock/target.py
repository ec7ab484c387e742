"""Which lock a project uses: the file backend (``flock``) or the Postgres one, and its key.

Chosen from the project settings (``lock.backend``, ``lock.dsn``, ``lock.key``), each overridable by
the environment (``DANGO_LOCK_BACKEND``, ``DANGO_LOCK_DSN``, ``DANGO_LOCK_KEY``), so a deployment
can switch every host without editing the project. One place decides, so ``DbtLock``,
``read_lock_holder`` and ``lock status`` can never disagree about which lock they look at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dango_dagster.errors import ProjectConfigError

__all__ = ["BACKEND_ENV", "DSN_ENV", "KEY_ENV", "LockTarget", "lock_target"]

BACKEND_ENV = "DANGO_LOCK_BACKEND"
DSN_ENV = "DANGO_LOCK_DSN"
KEY_ENV = "DANGO_LOCK_KEY"


@dataclass(frozen=True)
class LockTarget:
    """The lock of one project: ``backend``, and for postgres the server and the warehouse key.

    ``flock``: whether the local ``.dango/state/dbt.lock`` is taken too. Always for the file
    backend; for postgres when the warehouse is a local file, so Dango on the same host (which
    knows only the file lock) stays excluded. Order: postgres first, then flock; release reverse.
    """

    backend: Literal["file", "postgres"]
    dsn: str | None = None
    key: str | None = None
    flock: bool = True

    @property
    def registry_key(self) -> str | None:
        """The per-process re-entrancy key for postgres (None: the lock file's path is the key)."""
        if self.backend != "postgres":
            return None
        from dango_dagster.lock.postgres import redact_dsn

        return f"pg:{redact_dsn(self.dsn or '')}#{self.key}"


def lock_target(project_dir: str | os.PathLike[str]) -> LockTarget:
    """The lock ``project_dir`` uses, from the environment over its settings."""
    backend_env = os.environ.get(BACKEND_ENV, "").strip().lower()
    if backend_env not in ("", "file", "postgres"):
        raise ProjectConfigError(
            f"{BACKEND_ENV}={backend_env!r} is not a lock backend.",
            hint=f"Set {BACKEND_ENV} to 'file' (one host) or 'postgres' (several hosts).",
        )
    if backend_env == "file":
        return LockTarget("file")  # the file lock needs nothing from the settings
    from dango_dagster.config import load_config

    config = load_config(project_dir)
    settings = config.lock
    backend = backend_env or settings.backend
    if backend == "file":
        return LockTarget("file")
    dsn = os.environ.get(DSN_ENV) or settings.dsn
    if not dsn:
        raise ProjectConfigError(
            f"The lock backend of {config.root} is postgres, but no lock server is set.",
            hint=f"Set lock.dsn in the project settings or {DSN_ENV} (postgresql://user@host/db).",
        )
    key = os.environ.get(KEY_ENV) or settings.key or Path(config.root).name
    return LockTarget("postgres", dsn=dsn, key=key, flock=config.settings.warehouse.kind == "file")
