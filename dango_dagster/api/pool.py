"""Ready read-only connections to the published snapshot, switched over when it is replaced.

The API never opens the live warehouse: it reads ``config.published_snapshot_path``, which the
snapshot asset replaces atomically (``os.replace``) after every pipeline run. So no writer can
ever wait for the API, and the API never fails because a writer holds the live file.

Why the connections look the way they do:

* One DuckDB database instance per snapshot file version (a "generation"), and cursors on it as
  the pooled connections: opening a file costs milliseconds, a cursor almost nothing.
* The instance is an in-memory database with the snapshot ATTACHed read-only as ``warehouse``
  (the catalog name a direct ``duckdb.connect('.../warehouse.duckdb')`` would give). Python's
  ``duckdb.connect(path)`` caches instances by canonical path, so after the file is replaced it
  would hand back the instance still reading the old file; an attached file has no such cache.
* Hardening is set before any user SQL can run: extension autoload/autoinstall, Python
  replacement scans, community extensions and persistent secrets off, no spilling to disk, memory
  and thread limits at connect time; then external access off (after the ATTACH, which needs
  it) and ``lock_configuration`` last, so no ``SET`` can undo any of it.
* Every lease stats the path (microseconds). A different inode/mtime/size means a new snapshot:
  new leases go to a new generation; the old one is closed once its last query returns.
  A missing file keeps the current generation serving (its file is still open); before any
  snapshot exists, leases fail with 503 and a message that says to run the pipeline.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from dango_dagster.api.errors import ApiError
from dango_dagster.config import ApiSettings, ProjectConfig

CATALOG = "warehouse"
_OPEN_ATTEMPTS = 3
log = logging.getLogger(__name__)

Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def snapshot_time(st: os.stat_result) -> str:
    """When the snapshot file was written (its mtime), ISO 8601 in UTC."""
    return dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat(timespec="seconds")


def no_snapshot_error(path: Path) -> ApiError:
    return ApiError(
        503,
        "no_snapshot",
        f"No published snapshot yet at {path}. Run the pipeline (sources -> dbt -> snapshot, "
        "e.g. `dango-dagster sync` or materialize the assets in Dagster); the API picks the "
        "snapshot up without a restart.",
        headers={"Retry-After": "30"},
    )


def _connect_config(settings: ApiSettings) -> dict[str, Any]:
    return {
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
        "allow_persistent_secrets": False,
        "python_enable_replacements": False,
        "temp_directory": "",
        "memory_limit": settings.memory_limit,
        "threads": settings.threads,
    }


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


@dataclass(eq=False)
class Generation:
    """One version of the snapshot file, open in one DuckDB instance."""

    ident: Identity
    root: duckdb.DuckDBPyConnection
    snapshot_at: str
    idle: list[duckdb.DuckDBPyConnection] = field(default_factory=list)
    leased: int = 0
    retired: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        with self.lock:
            cursor = self.root.cursor()
        cursor.execute(f"USE {CATALOG}")
        return cursor

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for cursor in self.idle:
                cursor.close()
            self.idle.clear()
            self.root.close()


@dataclass(frozen=True)
class Lease:
    """A pooled cursor on one snapshot generation; give it back with ``SnapshotPool.release``."""

    cursor: duckdb.DuckDBPyConnection
    generation: Generation

    @property
    def snapshot_at(self) -> str:
        return self.generation.snapshot_at


def open_snapshot(
    path: Path, settings: ApiSettings
) -> tuple[duckdb.DuckDBPyConnection, os.stat_result]:
    """A hardened, read-only DuckDB instance on ``path`` and the stat of the file it opened."""
    last: Exception | None = None
    for _ in range(_OPEN_ATTEMPTS):
        before = os.stat(path)
        root = duckdb.connect(":memory:", config=_connect_config(settings))
        try:
            root.execute(f"ATTACH {_quote(path)} AS {CATALOG} (READ_ONLY)")
            # Replaced between our stat and the ATTACH? Then we cannot tell which file we got.
            if _identity(os.stat(path)) != _identity(before):
                root.close()
                last = RuntimeError("the snapshot was replaced while it was being opened")
                continue
            root.execute(f"USE {CATALOG}")
            root.execute("SET enable_external_access = false")
            root.execute("SET lock_configuration = true")
        except BaseException:
            root.close()
            raise
        return root, before
    raise RuntimeError(str(last))


Opener = Callable[[Path, ApiSettings], tuple[duckdb.DuckDBPyConnection, os.stat_result]]


def lake_opener(config: ProjectConfig) -> Opener:
    """``open_snapshot`` for a DuckLake warehouse: ``path`` is the pin file
    (``.dango/published/ducklake.json``, replaced at each publish, so the pool's stat-based
    switch-over works unchanged); the instance attaches the pinned snapshot read-only with the
    same hardening. Its Parquet folder stays readable (``allowed_directories``): it holds the
    lake's own data, nothing else."""
    from dango_dagster.lake import lake_for, published_snapshot
    from dango_dagster.lake.extensions import extension_directory

    def open_lake(path: Path, settings: ApiSettings):  # noqa: ANN202
        before = os.stat(path)
        snapshot = published_snapshot(config)
        if snapshot is None:
            raise RuntimeError(f"{path} names no snapshot")
        lake = lake_for(config)
        options = _connect_config(settings) | {"extension_directory": str(extension_directory())}
        options.pop("allow_persistent_secrets")  # DuckLake's catalog attach needs the store
        root = duckdb.connect(":memory:", config=options)
        try:
            root.execute("LOAD ducklake")
            root.execute("LOAD postgres")
            root.execute(lake.attach_sql(read_only=True, snapshot=snapshot, alias=CATALOG))
            root.execute(f"USE {CATALOG}")
            root.execute(f"SET allowed_directories = [{_quote(f'{lake.data_path}/')}]")
            root.execute("SET enable_external_access = false")
            root.execute("SET lock_configuration = true")
        except BaseException:
            root.close()
            raise
        return root, before

    return open_lake


class SnapshotPool:
    """Leases cursors on the current published snapshot; see the module docstring."""

    def __init__(self, path: Path, settings: ApiSettings, opener: Opener | None = None) -> None:
        self.path = path
        self.settings = settings
        self._open = opener or open_snapshot
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self._failed: Identity | None = None

    def lease(self) -> Lease:
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        with self._lock:
            gen = self._current
            if st is not None and (gen is None or gen.ident != _identity(st)):
                gen = self._switch(st) or gen
            if gen is None:
                raise no_snapshot_error(self.path)
            cursor = gen.idle.pop() if gen.idle else None
            gen.leased += 1
        if cursor is None:
            try:
                cursor = gen.new_cursor()
            except BaseException:
                self._give_back(gen, None)
                raise
        return Lease(cursor, gen)

    def _switch(self, st: os.stat_result) -> Generation | None:
        """Open the file ``st`` describes; None (keep serving the old one) if that fails."""
        ident = _identity(st)
        if ident == self._failed and self._current is not None:
            return None
        try:
            root, opened = self._open(self.path, self.settings)
        except (duckdb.Error, OSError, RuntimeError) as exc:
            self._failed = ident
            if self._current is None:
                raise ApiError(
                    503,
                    "snapshot_unavailable",
                    f"The published snapshot {self.path} cannot be opened ({exc}). Run the "
                    "snapshot step again to publish a good one.",
                    headers={"Retry-After": "30"},
                ) from exc
            log.warning("keeping the previous snapshot: cannot open %s: %s", self.path, exc)
            return None
        self._failed = None
        new = Generation(ident=_identity(opened), root=root, snapshot_at=snapshot_time(opened))
        old, self._current = self._current, new
        if old is not None:
            old.retired = True
            if old.leased == 0:
                old.close()
        return new

    def release(self, lease: Lease, *, discard: bool = False) -> None:
        """Return a cursor; ``discard`` closes it (after an error that may have spoiled it)."""
        self._give_back(lease.generation, lease.cursor, discard=discard)

    def _give_back(
        self, gen: Generation, cursor: duckdb.DuckDBPyConnection | None, *, discard: bool = False
    ) -> None:
        with self._lock:
            gen.leased -= 1
            keep = (
                cursor is not None
                and not discard
                and not gen.retired
                and len(gen.idle) < self.settings.pool_size
            )
            if keep and cursor is not None:
                gen.idle.append(cursor)
            close_gen = gen.retired and gen.leased == 0
        if cursor is not None and not keep:
            cursor.close()
        if close_gen:
            gen.close()

    def retire(self, gen: Generation) -> None:
        """Stop using a generation (its instance hit an internal error); the next lease reopens."""
        with self._lock:
            if self._current is gen:
                self._current = None
                gen.retired = True
                close_now = gen.leased == 0
            else:
                close_now = False
        if close_now:
            gen.close()

    def status(self) -> tuple[bool, str | None]:
        """(a snapshot is available, when it was written) without opening anything."""
        try:
            return True, snapshot_time(os.stat(self.path))
        except OSError:
            with self._lock:
                gen = self._current
            return (gen is not None, gen.snapshot_at if gen else None)

    def close(self) -> None:
        with self._lock:
            gen, self._current = self._current, None
        if gen is not None:
            gen.close()
