"""Keeping a DuckLake warehouse small: merge small files, expire old snapshots, delete their files.

Every DuckLake commit is a snapshot, and every commit above a few rows writes Parquet files of its
own, so a lake that syncs often grows many small files and keeps every old version. Compaction
merges adjacent files, then expires snapshots that no reader can be pinned to any more, and
deletes the files only those snapshots used.

Which snapshots are safe to expire: readers pin the *published* snapshot or a newer one (a
notebook's ``refresh``), so every snapshot at or after the published pin is kept; of the older
ones, those younger than ``keep_hours`` are kept too, for a notebook that pinned a previous
publish and is still open. Runs under the warehouse lock: no writer commits meanwhile.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from dango_dagster.errors import SnapshotError
from dango_dagster.lake.catalog import LAKE_NAME, lake_for, published_snapshot
from dango_dagster.lock import DbtLock

if TYPE_CHECKING:
    from dango_dagster.config import ProjectConfig

__all__ = ["compact_lake"]


def compact_lake(
    config: ProjectConfig, *, keep_hours: float = 24.0, lock_timeout: float | None = 0.0
) -> dict[str, Any]:
    """Merge, expire and clean up; returns what it did (files before/after, snapshots expired)."""
    lake = lake_for(config)
    pinned = published_snapshot(config)
    if pinned is None:
        raise SnapshotError(
            f"Nothing is published for {config.root} yet, so no snapshot is known to be unused.",
            hint="Run the pipeline once (`dango-dagster sync`), then compact.",
        )
    started = time.perf_counter()
    files_before = sum(1 for _ in lake.data_path.rglob("*.parquet"))
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=keep_hours)
    lock = DbtLock(config.root, source="cli", operation="lake compact")
    lock.acquire(timeout=lock_timeout)
    try:
        with lake.connect() as con:
            con.execute(f"CALL ducklake_merge_adjacent_files('{LAKE_NAME}')")
            expire = [
                int(row[0])
                for row in con.execute(
                    f"SELECT snapshot_id FROM ducklake_snapshots('{LAKE_NAME}') "
                    "WHERE snapshot_id < ? AND snapshot_time < ?",
                    [pinned, cutoff],
                ).fetchall()
            ]
            if expire:
                con.execute(f"CALL ducklake_expire_snapshots('{LAKE_NAME}', versions => {expire})")
            con.execute(f"CALL ducklake_cleanup_old_files('{LAKE_NAME}', cleanup_all => true)")
    finally:
        lock.release()
    return {
        "published_snapshot": pinned,
        "snapshots_expired": len(expire),
        "parquet_files_before": files_before,
        "parquet_files_after": sum(1 for _ in lake.data_path.rglob("*.parquet")),
        "seconds": round(time.perf_counter() - started, 3),
    }
