"""Sync history in Dango's format, so Dango's web UI and dashboards show Dagster's syncs too.

Dango keeps it in two places: ``.dango/history/<source>.json`` (a list of entries, the newest
100, written by every ``dango sync``) and the warehouse table ``_dango_meta.sync_history``, which
Dango rebuilds from those JSON files after each of its syncs (``materialize_pipeline_health``).
A row only in the table would vanish at Dango's next sync, so each sync here appends to both:
the JSON entry (durable, Dango re-reads it) and the table row (visible at once). Dagster-free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb

from dango_dagster.config import ProjectConfig
from dango_dagster.lock.primitives import file_mutex

KEEP = 100  # Dango keeps the newest 100 entries per source

_DDL = (
    "CREATE TABLE IF NOT EXISTS _dango_meta.sync_history (source_name VARCHAR, "
    "sync_timestamp TIMESTAMP, status VARCHAR, duration_seconds DOUBLE, rows_processed BIGINT, "
    "error_message VARCHAR)"
)


def history_path(config: ProjectConfig, source: str) -> Path:
    return config.dango_dir / "history" / f"{source}.json"


def make_entry(
    started: dt.datetime,
    status: str,
    duration: float,
    rows: int,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One entry as Dango writes it (``status`` is ``success`` or ``failed``)."""
    return {
        "timestamp": started.astimezone(dt.UTC).isoformat(),
        "status": status,
        "duration_seconds": round(duration, 2),
        "rows_processed": rows,
        "total_row_count": extra.pop("total_row_count", None),
        "full_refresh": False,
        "error_message": error,
        "start_date": None,
        "triggered_by": "dango-dagster",
        **extra,
    }


def append_json(config: ProjectConfig, source: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` to ``.dango/history/<source>.json`` (atomically; newest 100 kept)."""
    path = history_path(config, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_mutex(config.own_state_dir / "history.lock"):
        history: list[Any] = []
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
            history = loaded if isinstance(loaded, list) else []
        history.append(entry)
        _write_list(path, history[-KEEP:])


def _write_list(path: Path, items: list[Any]) -> None:
    # Dango's file is a JSON list (atomic_write_json writes mappings); a reader (Dango's web UI)
    # sees the old list or the new one. The mutex above keeps our writers off one temp name.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(items, indent=2), encoding="utf-8")
    tmp.replace(path)


def append_row(con: duckdb.DuckDBPyConnection, source: str, entry: dict[str, Any]) -> None:
    """Add ``entry`` to ``_dango_meta.sync_history`` (caller holds the warehouse lock)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS _dango_meta")
    con.execute(_DDL)
    stamp = dt.datetime.fromisoformat(entry["timestamp"]).astimezone(dt.UTC).replace(tzinfo=None)
    con.execute(
        "INSERT INTO _dango_meta.sync_history VALUES (?, ?, ?, ?, ?, ?)",
        [
            source,
            stamp,
            entry["status"],
            entry["duration_seconds"],
            entry["rows_processed"],
            entry["error_message"],
        ],
    )


def record(
    config: ProjectConfig,
    source: str,
    started: dt.datetime,
    status: str,
    rows: int,
    error: str | None,
    run_id: str,
    con: duckdb.DuckDBPyConnection | None = None,
    **extra: Any,
) -> None:
    """One sync in Dango's history: the JSON entry always, the table row when ``con`` (a
    connection under the warehouse lock) is given."""
    duration = (dt.datetime.now(dt.UTC) - started).total_seconds()
    entry = make_entry(started, status, duration, rows, error, run_id=run_id, **extra)
    append_json(config, source, entry)
    if con is not None:
        append_row(con, source, entry)


__all__ = ["append_json", "append_row", "history_path", "make_entry", "record"]
