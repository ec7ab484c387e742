"""What the uploads sensor compares: the upload files on disk, and the files the warehouse loaded.

No Dagster here. The disk side is a stat of the watched files (no file is read), cheap enough to
run every few seconds. The warehouse side is read once, when the sensor has no cursor for a source
(the first ``dagster dev`` on a project a sync already loaded): from Dango's own record of loaded
files (``main._dango_file_metadata``) when the warehouse has one, else from the raw tables'
``_dango_file`` column and dlt's last load. It is read under the warehouse lock, taken without
waiting: if a writer holds it, the answer is "unknown" and the sensor looks again next tick.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from dango_dagster.config import ProjectConfig, SourceSettings
from dango_dagster.lock import DbtLock, DbtLockTimeout
from dango_dagster.snapshots.verify import quote_ident, table_names

# A file's mtime as a loader recorded it may be rounded (DuckDB TIMESTAMP: microseconds).
_MTIME_TOLERANCE_S = 0.001


@dataclass(frozen=True)
class UploadFile:
    relpath: str  # relative to the source folder, '/'-separated
    size: int
    mtime: float


def upload_files(config: ProjectConfig, source: SourceSettings) -> list[UploadFile]:
    """Every visible file of a files source with the source's extension: a stat each, no read."""
    root = config.source_path(source)
    suffix = f".{source.format}".lower()
    found: list[UploadFile] = []

    def walk(folder: Path, prefix: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith((".", "_")):  # writers' temp files, metadata
                    continue
                if entry.is_dir():
                    walk(Path(entry.path), f"{prefix}{entry.name}/")
                elif entry.name.lower().endswith(suffix):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat()
                        found.append(UploadFile(prefix + entry.name, st.st_size, st.st_mtime))

    walk(root, "")
    return sorted(found, key=lambda f: f.relpath)


def fingerprint(files: list[UploadFile]) -> tuple[str, float]:
    """A digest of the files (name, size, mtime) and the newest mtime among them."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relpath}\0{f.size}\0{f.mtime!r}\n".encode())
    return digest.hexdigest()[:16], max((f.mtime for f in files), default=0.0)


def already_loaded(config: ProjectConfig, source: SourceSettings) -> bool | None:
    """Whether the warehouse already holds exactly the files now on disk; None if it is busy.

    Nothing loaded yet (no warehouse, no table) is False: the files are new.
    """
    files = upload_files(config, source)
    if not config.warehouse_path.exists():
        return not files
    lock = DbtLock(config.root, source="dagster", operation="uploads sensor: read loaded files")
    try:
        lock.acquire(timeout=0)
    except DbtLockTimeout:
        return None
    try:
        import duckdb

        with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
            return _matches(con, config, source, files)
    finally:
        lock.release()


def _matches(con, config: ProjectConfig, source: SourceSettings, files: list[UploadFile]) -> bool:  # noqa: ANN001
    tables = table_names(con)
    root = config.source_path(source)
    if ("main", "_dango_file_metadata") in tables:  # Dango's own record, per file
        rows = con.execute(
            "select file_path, file_size, epoch(file_mtime) from main._dango_file_metadata "
            "where source_name = ? and coalesce(status, 'loaded') = 'loaded'",
            [source.name],
        ).fetchall()
        recorded: dict[str, tuple[int | None, float | None]] = {}
        for path, size, mtime in rows:
            rel = Path(path)
            with contextlib.suppress(ValueError):
                rel = rel.relative_to(root) if rel.is_absolute() else rel
            recorded[rel.as_posix()] = (size, mtime)
        if set(recorded) != {f.relpath for f in files}:
            return False
        return all(
            recorded[f.relpath][0] in (None, f.size)
            and (
                recorded[f.relpath][1] is None
                or abs(recorded[f.relpath][1] - f.mtime) <= _MTIME_TOLERANCE_S
            )
            for f in files
        )
    return _matches_raw_tables(con, source, files, tables)


def _matches_raw_tables(con, source: SourceSettings, files: list[UploadFile], tables) -> bool:  # noqa: ANN001
    """Without Dango's record: the files named in the raw tables, none newer than the last load."""
    schema = source.schema_name
    if (schema, "_dlt_loads") not in tables:
        return False
    last = con.execute(
        f"select max(inserted_at) from {quote_ident(schema)}._dlt_loads where status = 0"
    ).fetchone()[0]
    if last is None:
        return False
    if last.tzinfo is None:
        last = last.replace(tzinfo=dt.UTC)
    loaded: set[str] = set()
    for s, table in tables:
        if s != schema or table.startswith("_dlt"):
            continue
        cols = {
            c[0] for c in con.execute(f"describe {quote_ident(s)}.{quote_ident(table)}").fetchall()
        }
        if "_dango_file" in cols:
            sql = f"select distinct _dango_file from {quote_ident(s)}.{quote_ident(table)}"
            loaded |= {r[0] for r in con.execute(sql).fetchall()}
    # _dango_file is relative to the source folder, as is relpath; a table read from a single
    # ``<table>.csv`` records its bare file name.
    on_disk = {f.relpath for f in files}
    newest = max((f.mtime for f in files), default=0.0)
    return loaded == on_disk and newest <= last.timestamp()
