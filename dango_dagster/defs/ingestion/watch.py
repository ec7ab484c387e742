"""What the uploads sensor compares: the upload files on disk, and the files the warehouse loaded.

No Dagster here. The disk side is a stat of the watched files (no file is read), cheap enough to
run every few seconds. The warehouse side is read once, when the sensor has no cursor for a source
(the first ``dagster dev`` on a project a sync already loaded): from Dango's own record of loaded
files (``main._dango_file_metadata``), which both tools keep. It is read under the warehouse lock,
taken without waiting: if a writer holds it, the answer is "unknown" and the sensor looks again
next tick.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dango_dagster.config import ProjectConfig
from dango_dagster.dango_project import DangoSource
from dango_dagster.defs.ingestion.dango_files import source_files
from dango_dagster.lock import DbtLock, DbtLockTimeout
from dango_dagster.snapshots.verify import table_names

# A file's mtime as a loader recorded it may be rounded (DuckDB TIMESTAMP: microseconds).
_MTIME_TOLERANCE_S = 0.001


@dataclass(frozen=True)
class UploadFile:
    relpath: str  # relative to the source folder, '/'-separated
    size: int
    mtime: float


def upload_files(config: ProjectConfig, source: DangoSource) -> list[UploadFile]:
    """The files of a csv/local_files source Dango's watcher reacts to: what its loader would load
    (``directory`` + ``file_pattern``) that matches ``platform.watch_patterns``. A stat each."""
    root = config.source_dir(source)
    patterns = config.platform.watch_patterns
    found: list[UploadFile] = []
    for name in source_files(config, source):
        base = os.path.basename(name)
        if base.startswith(".") or not any(fnmatch.fnmatch(base, p) for p in patterns):
            continue
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(name)
            rel = Path(name).relative_to(root).as_posix() if name.startswith(str(root)) else name
            found.append(UploadFile(rel, st.st_size, st.st_mtime))
    return sorted(found, key=lambda f: f.relpath)


def fingerprint(files: list[UploadFile]) -> tuple[str, float]:
    """A digest of the files (name, size, mtime) and the newest mtime among them."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relpath}\0{f.size}\0{f.mtime!r}\n".encode())
    return digest.hexdigest()[:16], max((f.mtime for f in files), default=0.0)


def already_loaded(config: ProjectConfig, source: DangoSource) -> bool | None:
    """Whether the warehouse already holds exactly the files now on disk; None if it is busy.

    Nothing loaded yet (no warehouse, no table) is False: the files are new.
    """
    files = upload_files(config, source)
    from dango_dagster.lake.catalog import connect_warehouse, warehouse_exists

    if not warehouse_exists(config):
        return not files
    lock = DbtLock(config.root, source="dagster", operation="uploads sensor: read loaded files")
    try:
        lock.acquire(timeout=0)
    except DbtLockTimeout:
        return None
    try:
        with connect_warehouse(config, read_only=True) as con:
            return _matches(con, config, source, files)
    finally:
        lock.release()


def _matches(con, config: ProjectConfig, source: DangoSource, files: list[UploadFile]) -> bool:  # noqa: ANN001
    """Dango's own record of loaded files (``main._dango_file_metadata``, kept by both tools)
    lists exactly the files on disk, each with the size and mtime it has now."""
    if ("main", "_dango_file_metadata") not in table_names(con):
        return False
    root = config.source_dir(source)
    rows = con.execute(
        "select file_path, file_size, file_mtime from main._dango_file_metadata "
        "where source_name = ? and status in ('loaded', 'updated')",
        [source.name],
    ).fetchall()
    recorded: dict[str, tuple[int | None, dt.datetime | None]] = {}
    for path, size, mtime in rows:
        rel = Path(path)
        with contextlib.suppress(ValueError):
            rel = rel.relative_to(root) if rel.is_absolute() else rel
        recorded[rel.as_posix()] = (size, mtime)
    if set(recorded) != {f.relpath for f in files}:
        return False

    # Dango stores datetime.fromtimestamp(st_mtime): local and naive.
    def same(f: Any) -> bool:
        size, mtime = recorded[f.relpath]
        if size not in (None, f.size):
            return False
        if mtime is None:
            return True
        return abs((mtime - dt.datetime.fromtimestamp(f.mtime)).total_seconds()) <= (
            _MTIME_TOLERANCE_S
        )

    return all(same(f) for f in files)
