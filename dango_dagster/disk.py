"""Disk use: what runs leave behind is pruned, and a full disk gets a message a user can act on.

Every sync writes files nobody reads again: dlt's finished load packages, the sync's log, Dagster's
event log of the run (dagster-dbt's per-invocation target folders are pruned beside the dbt
assets). Left alone, a sensor-driven project fills its disk with them, so each run prunes what is
older than a few runs once it ends. No Dagster import here: ``lock status`` and the CLI's error
path use it too.
"""

from __future__ import annotations

import contextlib
import errno
import math
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dango_dagster.config import ProjectConfig

# Finished dlt load packages kept per pipeline (the newest, for a look after a surprise).
KEEP_LOAD_PACKAGES = 1
# Sync log files kept (``.dango/logs/sync_*.log``, ``error_*.log``), newest first.
KEEP_LOG_FILES = 30
# What a full disk says, across Python, SQLite (Dagster's storage), DuckDB, dlt and dbt.
_DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk is full", "enospc")
_MB = 1e6
# A disk with less free space than this is full for our purposes (SQLite, DuckDB need pages).
NEARLY_FULL_BYTES = 1_000_000


def is_disk_full(exc: BaseException | str) -> bool:
    """True when an error (or its text) says the disk is full, whoever raised it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return any(word in text for word in _DISK_FULL_TEXT)


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(paths, key=mtime, reverse=True)


def prune_load_packages(dlt_dir: Path, keep: int = KEEP_LOAD_PACKAGES) -> int:
    """Delete all but the newest ``keep`` finished load packages of every dlt pipeline under
    ``dlt_dir``; returns how many were deleted. dlt never reads them again (the loaded state
    lives in the warehouse and ``state.json``); packages not yet loaded are left alone."""
    removed = 0
    for loaded in dlt_dir.glob("*/load/loaded"):
        for old in _newest_first(p for p in loaded.iterdir() if p.is_dir())[keep:]:
            shutil.rmtree(old, ignore_errors=True)
            removed += 1
    return removed


def prune_logs(logs_dir: Path, keep: int = KEEP_LOG_FILES) -> int:
    """Delete all but the newest ``keep`` sync and error logs; returns how many went."""
    logs = [*logs_dir.glob("sync_*.log"), *logs_dir.glob("error_*.log")]
    old = _newest_first(logs)[keep:]
    for path in old:
        path.unlink(missing_ok=True)
    return len(old)


def _folders(config: ProjectConfig) -> tuple[Path, ...]:
    """The folders a sync writes, most specific first."""
    return (
        config.published_dir,
        config.snapshots_dir,
        config.dagster_home,
        config.dbt_project_dir / "target",
        config.state_dir,
        config.logs_dir,
        config.warehouse_path.parent,
    )


def _free(folder: Path) -> int:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def full_folder(config: ProjectConfig, text: str = "") -> Path | None:
    """The folder a sync writes whose disk is (nearly) full, or None.

    Not every writer says "no space left": SQLite (Dagster's storage) reports a full disk as a
    "disk I/O error" when it cannot create its journal. So the disks themselves are asked: a
    folder named in the error comes first, then any with less than 1 MB free.
    """
    folders = _folders(config)
    named = [f for f in folders if str(f) in text]
    for folder in [*named, *folders]:
        with contextlib.suppress(OSError):
            if _free(folder) < NEARLY_FULL_BYTES:
                return folder
    return named[0] if named and is_disk_full(text) else None


def disk_advice(config: ProjectConfig, text: str = "") -> str:
    """Which folder ran out of space, how much is free and roughly how much a sync needs.

    Needed and free are rounded the same way (up and down, in MB), so the numbers always show the
    shortfall they describe.
    """
    folder = full_folder(config, text) or config.warehouse_path.parent
    free = _free(folder)
    warehouse = config.warehouse_path.stat().st_size if config.warehouse_path.exists() else 0
    # A sync rewrites tables (old and new pages coexist until CHECKPOINT) and copies the
    # warehouse once for the snapshot: about twice its size, plus room for dlt, dbt and Dagster.
    needed = 2 * warehouse + 64 * _MB
    need_mb, free_mb = math.ceil(needed / _MB), math.floor(free / _MB)
    return (
        f"The disk holding {folder} is full: {free_mb} MB free, a sync needs about {need_mb} MB "
        f"(twice the {warehouse / _MB:.1f} MB warehouse plus 64 MB). Free at least "
        f"{max(1, need_mb - free_mb)} MB there, then run the sync again. Nothing was lost: the "
        "warehouse keeps its last committed data and the published snapshot is unchanged."
    )
