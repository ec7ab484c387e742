"""Dango's csv / local_files loader, rebuilt so a Dango CLI and Dagster can take turns.

The warehouse ends up exactly as Dango's own ``CSVLoader`` (getdango 1.0.13) leaves it: one table
``raw_<src>.<src>`` with the file's columns (types as DuckDB's ``read_csv_auto`` /
``read_json_auto`` / ``read_parquet`` infer them from the first file) plus ``_dango_filename``,
``_dango_file_mtime``, ``_dango_loaded_at`` and ``_dango_deleted``; one row per file in
``main._dango_file_metadata`` (absolute path, size, local mtime, rows, status ``loaded`` /
``updated`` / ``deleted``). Files are classified by that table the way Dango does (new: unknown or
deleted before; updated: newer mtime; deleted: gone from disk), so a file loaded by either tool is
never loaded again by the other.

Where it differs from Dango, on purpose:

- **All or nothing.** Every file to load is parsed into a staging database first; the live table
  changes in one transaction (delete old rows, insert new ones, update the metadata) or not at
  all. A bad file (a value that does not fit the column's type, binary garbage, other columns)
  fails the sync with its name, line and column, and the live table stays as it was. Dango skips
  a file it cannot read and loads the rest.
- **The lock is held only for the swap.** Files are parsed outside the warehouse lock into
  ``.dango/state/dango_dagster/staging/<src>.duckdb``, guided by what the previous sync saw; under
  the lock the metadata is read again, and any file the guess missed (Dango loaded something in
  between) is parsed then. Dango's own CSV load takes no lock at all.

Dagster-free: the Dagster asset (``assets.py``) and the benchmarks call :func:`load_files_source`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from dango_dagster._fs import atomic_write_json
from dango_dagster.config import ProjectConfig
from dango_dagster.dango_project import DangoSource
from dango_dagster.defs.ingestion.files_sql import (
    DANGO_COLUMNS,
    READ_FUNCTIONS,
    FilesLoadError,
    Staged,
    check_against,
    create_table_sql,
    insert_sql,
    quote,
    sql_text,
    stage_file,
)
from dango_dagster.lake.catalog import connect_warehouse
from dango_dagster.lock.primitives import file_mutex

__all__ = ["FilesLoadError", "FilesLoadResult", "load_files_source", "source_files"]

EMPTY_REPLACE = "empty_replace_protection"


@dataclass
class FilesLoadResult:
    """What one sync of a file source did (Dango's counters plus ours)."""

    source: str
    table: str
    status: str = "success"
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: int = 0
    rows_added: int = 0
    rows_removed: int = 0
    total_rows: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    staged_outside_lock: int = 0
    staged_under_lock: int = 0
    error: str | None = None
    error_type: str | None = None
    hold: Any = None  # what ``hold()`` gave (the gate's LockSession in a Dagster run)


def source_files(config: ProjectConfig, source: DangoSource) -> list[str]:
    """The files Dango's loader would see: ``glob(directory/file_pattern)`` of readable formats,
    absolute paths, sorted (exactly Dango's list, so metadata paths agree)."""
    directory = config.source_dir(source)
    pattern = str(directory / source.file_pattern)
    return [f for f in sorted(glob.glob(pattern)) if Path(f).suffix.lower() in READ_FUNCTIONS]


def _mtime(path: str) -> dt.datetime:
    # Dango stores datetime.fromtimestamp(st_mtime): local time, naive, with microseconds.
    return dt.datetime.fromtimestamp(os.stat(path).st_mtime)


def _check_duplicates(directory: Path, files: list[str]) -> None:
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_name.setdefault(os.path.basename(f), []).append(f)
    dupes = {n: p for n, p in by_name.items() if len(p) > 1}
    if dupes:
        shown = "; ".join(
            f"{n} ({', '.join(os.path.relpath(p, directory) for p in paths)})"
            for n, paths in list(dupes.items())[:3]
        )
        raise FilesLoadError(
            f"Multiple files share the same file name: {shown}. Rows are tracked by file name "
            "(as Dango does), so each name may appear once. Nothing was changed.\n"
            "Rename the files (for example 2026-09-sales.csv) or narrow `file_pattern` in "
            ".dango/sources.yml, then sync again."
        )


def _classify(
    meta: dict[str, tuple[dt.datetime, str]], files: list[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Dango's rules: (new, updated, unchanged, deleted) from the metadata rows of the source."""
    new, updated, unchanged = [], [], []
    for f in files:
        known = meta.get(f)
        if known is None or known[1] == "deleted":
            new.append(f)
        elif _mtime(f) > known[0]:
            updated.append(f)
        else:
            unchanged.append(f)
    current = set(files)
    deleted = [p for p, (_m, status) in meta.items() if p not in current and status != "deleted"]
    return new, updated, unchanged, deleted


class _Cache:
    """What the previous sync saw (metadata and table columns), to parse outside the lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
        self.meta = {
            p: (dt.datetime.fromisoformat(m), s) for p, (m, s) in data.get("files", {}).items()
        }
        cols = data.get("columns")
        self.columns: list[tuple[str, str]] | None = [tuple(c) for c in cols] if cols else None

    def save(self, meta: dict[str, tuple[dt.datetime, str]], columns: list[tuple[str, str]]):
        body = {"files": {p: [m.isoformat(), s] for p, (m, s) in meta.items()}, "columns": columns}
        atomic_write_json(self.path, body, durable=False)  # a hint only; the metadata is the truth


def _staged_name(path: str) -> str:
    return "f_" + hashlib.sha1(path.encode()).hexdigest()[:16]


def _stage_all(
    con: duckdb.DuckDBPyConnection, prefix: str, files: list[str], staged: dict[str, Staged]
) -> int:
    """Parse ``files`` into the staging database (``prefix``: its catalog, '' when connected to
    it directly), skipping those already staged as they are now. Returns how many it parsed."""
    count = 0
    for f in files:
        st = os.stat(f)
        have = staged.get(f)
        if have and (have.size, have.mtime_ns) == (st.st_size, st.st_mtime_ns):
            continue
        staged[f] = stage_file(con, prefix, _staged_name(f), f, st)
        count += 1
    return count


def load_files_source(
    config: ProjectConfig,
    source: DangoSource,
    hold: Callable[[], AbstractContextManager[Any]],
    *,
    allow_empty_replace: bool | None = None,
    on_locked: Callable[[duckdb.DuckDBPyConnection, FilesLoadResult], None] | None = None,
    on_busy: Callable[[float], None] | None = None,
) -> FilesLoadResult:
    """Sync one csv/local_files source; ``hold()`` holds the warehouse lock around the swap.

    ``on_locked(con, result)`` runs under the same hold after the swap (sync history);
    ``on_busy(seconds)`` while another process syncs the same source (we wait for it). Raises
    :class:`FilesLoadError` for bad files (nothing changed); a blocked empty replace is returned
    as ``status="failed"`` with ``error_type="empty_replace_protection"``, as Dango reports it.
    """
    if allow_empty_replace is None:
        allow_empty_replace = source.empty_sync_policy == "allow"
    schema, table = source.schema_name, source.name
    result = FilesLoadResult(source=source.name, table=f"{schema}.{table}")
    directory = config.source_dir(source)
    if not directory.is_dir():
        raise FilesLoadError(
            f"Source {source.name!r}: folder {directory} does not exist (directory: in "
            ".dango/sources.yml). Create it or fix the path, then sync again."
        )
    work = config.own_state_dir
    staging_path = work / "staging" / f"{source.name}.duckdb"
    cache = _Cache(work / f"files_{source.name}.json")
    with file_mutex(work / f"files_{source.name}.lock", on_wait=on_busy):
        files = source_files(config, source)
        _check_duplicates(directory, files)
        # Outside the lock: parse what the previous sync's view says is new or changed.
        for stale in (staging_path, staging_path.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
        staged: dict[str, Staged] = {}
        guess_new, guess_upd, _u, _d = _classify(cache.meta, files)
        with _connect(staging_path) as scon:
            result.staged_outside_lock = _stage_all(scon, "", guess_new + guess_upd, staged)
        lake = config.settings.warehouse.kind == "ducklake"
        with hold() as result.hold, connect_warehouse(config, read_only=False) as con:
            meta = _swap(
                con, source, files, staged, staging_path, allow_empty_replace, result, lake
            )
            if on_locked is not None:
                on_locked(con, result)
        if meta is not None:
            cache.save(meta, result.columns)
        for stale in (staging_path, staging_path.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
    return result


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        yield con
    finally:
        con.close()


def _meta_rows(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, tuple[dt.datetime, str]]:
    rows = con.execute(
        "SELECT file_path, file_mtime, status FROM _dango_file_metadata WHERE source_name = ?",
        [source],
    ).fetchall()
    return {p: (m, s) for p, m, s in rows}


def _table_columns(con: duckdb.DuckDBPyConnection, schema: str, table: str):
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return [(n, t) for n, t in rows]


def _swap(
    con: duckdb.DuckDBPyConnection,
    source: DangoSource,
    files: list[str],
    staged: dict[str, Staged],
    staging_path: Path,
    allow_empty_replace: bool,
    result: FilesLoadResult,
    lake: bool = False,
) -> dict[str, tuple[dt.datetime, str]] | None:
    """Under the lock: classify by the real metadata, then change the table in one transaction.
    Returns the source's metadata rows afterwards (None when nothing was committed)."""
    schema, table = source.schema_name, source.name
    target = f"{quote(schema)}.{quote(table)}"
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(
        "CREATE TABLE IF NOT EXISTS _dango_file_metadata (source_name VARCHAR, file_path VARCHAR,"
        " file_size BIGINT, file_mtime TIMESTAMP, rows_loaded BIGINT, status VARCHAR,"
        " loaded_at TIMESTAMP, error_message VARCHAR"
        # DuckLake has no keys; one row per file is kept by delete-then-insert in _apply.
        + ("" if lake else ", PRIMARY KEY (source_name, file_path)")
        + ")"
    )
    meta = _meta_rows(con, source.name)
    new, updated, unchanged, deleted = _classify(meta, files)
    result.skipped = len(unchanged)
    existing = [c for c in _table_columns(con, schema, table) if c[0] not in DANGO_COLUMNS]
    con.execute(f"ATTACH {sql_text(str(staging_path))} AS stg")  # a string literal (duckdb 1.5)
    try:
        # Files the outside guess missed (Dango synced in between) are parsed now.
        result.staged_under_lock = _stage_all(con, "stg", new + updated, staged)
        loading = [f for f in new + updated if staged[f].rows > 0]
        columns = existing or (staged[loading[0]].columns if loading else [])
        for f in loading:
            check_against(con, "stg", staged[f], columns, result.table)
        before = (
            (con.execute(f"SELECT count(*) FROM {target}").fetchone() or (0,))[0] if existing else 0
        )
        con.execute("BEGIN TRANSACTION")
        try:
            _apply(con, source, target, columns, existing, staged, loading, new, deleted, result)
            if before > 0 and result.total_rows == 0 and not allow_empty_replace:
                con.execute("ROLLBACK")
                _blocked(result, before)
                return None
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        result.columns = columns
        return _meta_rows(con, source.name)
    finally:
        con.execute("DETACH stg")


def _blocked(result: FilesLoadResult, before: int) -> None:
    """Dango's empty-replace protection: the sync would leave the table empty; nothing changed."""
    result.status, result.error_type = "failed", EMPTY_REPLACE
    result.error = (
        f"All source files are missing or empty — existing {before:,} rows preserved. "
        f"To replace them with nothing, set `empty_sync_policy: allow` for source "
        f"{result.source!r} in .dango/sources.yml (Dango: dango sync {result.source} "
        "--allow-empty-replace)."
    )
    result.new, result.updated, result.deleted = [], [], []
    result.rows_added = result.rows_removed = 0
    result.total_rows = before


def _remove_file_rows(con: duckdb.DuckDBPyConnection, target: str, name: str) -> int:
    """Delete one file's rows from the raw table (a removed or changed file); how many went."""
    row = con.execute(f"SELECT count(*) FROM {target} WHERE _dango_filename = ?", [name]).fetchone()
    con.execute(f"DELETE FROM {target} WHERE _dango_filename = ?", [name])
    return int(row[0]) if row else 0


def _apply(
    con: duckdb.DuckDBPyConnection,
    source: DangoSource,
    target: str,
    columns: list[tuple[str, str]],
    existing: list[tuple[str, str]],
    staged: dict[str, Staged],
    loading: list[str],
    new: list[str],
    deleted: list[str],
    result: FilesLoadResult,
) -> None:
    if not existing and loading:
        con.execute(create_table_sql(target, columns))
    table_exists = bool(existing) or bool(loading)
    # Removed files (and the old path of a moved file) go first, so a moved file's new rows stay.
    for path in deleted:
        name = os.path.basename(path)
        if table_exists:
            result.rows_removed += _remove_file_rows(con, target, name)
        con.execute(
            "UPDATE _dango_file_metadata SET status = 'deleted', loaded_at = CURRENT_TIMESTAMP "
            "WHERE source_name = ? AND file_path = ?",
            [source.name, path],
        )
        result.deleted.append(name)
    new_set = set(new)
    for path in loading:
        item = staged[path]
        name = os.path.basename(path)
        if path not in new_set:  # updated: its old rows go, in the same transaction
            result.rows_removed += _remove_file_rows(con, target, name)
        try:
            con.execute(insert_sql(target, "stg", item, columns))
        except duckdb.Error as exc:
            raise FilesLoadError(
                f"Could not load {path} into {result.table}: {exc}\n"
                "Nothing was changed. Fix or remove the file, then sync again."
            ) from exc
        con.execute(
            "DELETE FROM _dango_file_metadata WHERE source_name = ? AND file_path = ?",
            [source.name, path],
        )
        con.execute(
            "INSERT INTO _dango_file_metadata (source_name, file_path, file_size,"
            " file_mtime, rows_loaded, status, loaded_at) VALUES (?, ?, ?, ?, ?, ?,"
            " CURRENT_TIMESTAMP)",
            [
                source.name,
                path,
                item.size,
                item.mtime,
                item.rows,
                "loaded" if path in new_set else "updated",
            ],
        )
        result.rows_added += item.rows
        (result.new if path in new_set else result.updated).append(name)
    if table_exists:
        result.total_rows = (con.execute(f"SELECT count(*) FROM {target}").fetchone() or (0,))[0]
