"""Notebook access to the warehouse: always through a snapshot, never the live file.

A DuckDB connection to the live file, even a read-only one, would block every writer (the next
sync would fail with "database is locked"). So a notebook reads its own snapshot,
``.dango/snapshots/warehouse_{user}_{YYYYMMDD_HHMMSS}.duckdb``, and sees the data as of that
snapshot. The snapshot asset refreshes the snapshots of ``notebooks.users`` after every
pipeline run; ``connect(refresh=True)`` takes a fresh one on demand.

    from dango_dagster.notebook import connect
    con = connect()            # the newest snapshot of the current OS user
    con.sql("select * from marts.fct_daily_sales").df()
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.snapshots import (
    SnapshotError,
    newest_snapshot,
    sanitize_username,
    snapshot_lock,
    take_snapshot,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["connect"]

_ATTEMPTS = 3


def connect(
    username: str | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    *,
    refresh: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A read-only DuckDB connection to ``username``'s newest snapshot.

    ``username`` defaults to the OS user; ``project_dir`` to ``DANGO_PROJECT_DIR``, then the
    current folder. When the user has no snapshot yet (or ``refresh`` is set), one is taken
    first through the warehouse lock, waiting up to ``lock.queue_timeout_seconds`` for a running
    sync: a notebook user would rather wait a few seconds than get an error. Taking it does not
    change the published snapshot that the query API and Metabase read.
    """
    import duckdb

    config = load_config(project_dir)
    if config.settings.warehouse.kind == "ducklake":
        return _connect_lake(config, refresh=refresh)
    user = sanitize_username(username if username is not None else getpass.getuser())
    for _ in range(_ATTEMPTS):
        path = None if refresh else newest_snapshot(config, user)
        if path is None:
            lock = snapshot_lock(
                config, timeout=config.lock.queue_timeout_seconds, source="notebook"
            )
            result = take_snapshot(config, users=[user], lock=lock, publish=False)
            path = result.user_paths[user]
            refresh = False
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException:
            if path.exists():
                raise
            # Another run's retention removed it between listing and opening: look again.
    raise SnapshotError(
        f"Could not open a snapshot for {user!r}: each one disappeared before it could be "
        "opened (snapshots are being taken very fast); try again."
    )


def _connect_lake(config: ProjectConfig, *, refresh: bool) -> duckdb.DuckDBPyConnection:
    """DuckLake: the published snapshot, pinned (no copy exists or is needed); ``refresh`` pins
    the newest commit instead. Either way the data cannot change under the notebook."""
    from dango_dagster.lake import lake_for, open_published

    if not refresh:
        return open_published(config)
    lake = lake_for(config)
    return lake.connect(read_only=True, snapshot=lake.current_snapshot_id())
