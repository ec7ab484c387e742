"""Dango's csv/local_files loader, rebuilt: real files, real DuckDB, the real lock.

What a user checks: the raw table and ``_dango_file_metadata`` after each sync, that a bad file
changes nothing live, and that the lock is held only for the swap.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.ingestion.dango_files import FilesLoadError, load_files_source
from dango_dagster.lock import DbtLock


def _project(root: Path, source_type: str = "csv", policy: str = "block") -> ProjectConfig:
    (root / ".dango").mkdir(parents=True, exist_ok=True)
    (root / "data" / "uploads" / "orders").mkdir(parents=True, exist_ok=True)
    pattern = "'*.csv'" if source_type == "csv" else "'*'"
    (root / ".dango" / "sources.yml").write_text(
        textwrap.dedent(
            f"""\
            version: '1.0'
            sources:
            - name: orders
              type: {source_type}
              enabled: true
              {source_type}:
                directory: data/uploads/orders
                file_pattern: {pattern}
              empty_sync_policy: {policy}
            """
        ),
        encoding="utf-8",
    )
    return load_config(root)


def _sync(config: ProjectConfig, **kwargs):
    def hold():
        return DbtLock(config.root, source="test", operation="load files")

    return load_files_source(config, config.source("orders"), hold, **kwargs)


def _write(config: ProjectConfig, name: str, text: str) -> Path:
    path = config.root / "data" / "uploads" / "orders" / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _rows(config: ProjectConfig) -> list[tuple]:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        return con.execute(
            "SELECT order_id, amount, _dango_filename FROM raw_orders.orders ORDER BY order_id"
        ).fetchall()


def _meta(config: ProjectConfig) -> dict[str, tuple]:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        rows = con.execute(
            "SELECT file_path, rows_loaded, status, file_mtime, file_size "
            "FROM main._dango_file_metadata WHERE source_name = 'orders'"
        ).fetchall()
    return {os.path.basename(r[0]): r[1:] for r in rows}


def test_layout_and_metadata_are_dangos(tmp_path: Path) -> None:
    config = _project(tmp_path)
    path = _write(config, "jan.csv", "order_id,amount,day\n1,10.5,2025-01-01\n2,20,2025-01-02\n")
    result = _sync(config)
    assert (result.new, result.rows_added, result.total_rows) == (["jan.csv"], 2, 2)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        cols = con.execute("DESCRIBE raw_orders.orders").fetchall()
        assert [(c[0], c[1]) for c in cols] == [
            ("order_id", "BIGINT"),
            ("amount", "DOUBLE"),
            ("day", "DATE"),
            ("_dango_filename", "VARCHAR"),
            ("_dango_file_mtime", "TIMESTAMP"),
            ("_dango_loaded_at", "TIMESTAMP WITH TIME ZONE"),
            ("_dango_deleted", "BOOLEAN"),
        ]
        mtime, deleted = con.execute(
            "SELECT DISTINCT _dango_file_mtime, _dango_deleted FROM raw_orders.orders"
        ).fetchone()
    st = path.stat()
    assert mtime == dt.datetime.fromtimestamp(st.st_mtime).replace(microsecond=0)
    assert deleted is False
    meta = _meta(config)
    assert meta["jan.csv"][:2] == (2, "loaded")
    assert meta["jan.csv"][2] == dt.datetime.fromtimestamp(st.st_mtime)  # Dango's exact value
    assert meta["jan.csv"][3] == st.st_size


def test_incremental_new_changed_deleted(tmp_path: Path) -> None:
    config = _project(tmp_path)
    _write(config, "a.csv", "order_id,amount\n1,1\n2,2\n")
    _sync(config)
    b = _write(config, "b.csv", "order_id,amount\n3,3\n")
    result = _sync(config)
    assert (result.new, result.skipped, result.rows_added) == (["b.csv"], 1, 1)
    assert result.staged_outside_lock == 1 and result.staged_under_lock == 0

    again = _sync(config)  # nothing changed: nothing parsed, nothing written
    assert (again.new, again.updated, again.rows_added, again.staged_outside_lock) == ([], [], 0, 0)

    _write(config, "a.csv", "order_id,amount\n1,100\n")
    os.utime(config.root / "data/uploads/orders/a.csv", (time.time() + 5, time.time() + 5))
    result = _sync(config)
    assert (result.updated, result.rows_added, result.rows_removed) == (["a.csv"], 1, 2)
    b.unlink()
    result = _sync(config)
    assert result.deleted == ["b.csv"]
    assert _rows(config) == [(1, 100.0, "a.csv")]
    meta = _meta(config)
    assert (meta["a.csv"][1], meta["b.csv"][1]) == ("updated", "deleted")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("order_id,amount\n5,5\n6,not-a-number\n", "line 3, column 'amount'"),
        (b"\x00\x01\x02\xff\xfe garbage \x89PNG", "Could not read"),
        ("order_id,colour\n7,red\n", "Schema mismatch"),
    ],
)
def test_bad_file_never_changes_the_live_table(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    config = _project(tmp_path)
    _write(config, "a.csv", "order_id,amount\n1,1.5\n2,2.5\n")
    _sync(config)
    before = (_rows(config), _meta(config))
    _write(config, "good.csv", "order_id,amount\n3,3\n")  # would load, but not beside a bad one
    bad = config.root / "data/uploads/orders/bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FilesLoadError) as exc:
        _sync(config)
    message = str(exc.value)
    assert expected in message and str(bad) in message
    assert message.splitlines()[-1].startswith("Nothing was changed")
    assert (_rows(config), _meta(config)) == before
    bad.unlink()
    assert _sync(config).new == ["good.csv"]  # fixed: the sync goes on where it stopped


def test_empty_replace_protection_follows_the_policy(tmp_path: Path) -> None:
    config = _project(tmp_path)
    path = _write(config, "a.csv", "order_id,amount\n1,1\n")
    _sync(config)
    path.unlink()
    blocked = _sync(config)
    assert blocked.status == "failed" and blocked.error_type == "empty_replace_protection"
    assert "1 rows preserved" in (blocked.error or "")
    assert _rows(config) == [(1, 1.0, "a.csv")] and _meta(config)["a.csv"][1] == "loaded"
    allowed = _sync(config, allow_empty_replace=True)
    assert allowed.status == "success" and allowed.deleted == ["a.csv"] and _rows(config) == []


def test_local_files_reads_json_and_parquet_like_dango(tmp_path: Path) -> None:
    config = _project(tmp_path, "local_files")
    _write(config, "a.jsonl", '{"order_id": 1, "amount": 2.5}\n{"order_id": 2, "amount": 3}\n')
    _write(config, "notes.txt", "ignored: not a format Dango reads")
    assert _sync(config).new == ["a.jsonl"]
    assert [r[:2] for r in _rows(config)] == [(1, 2.5), (2, 3.0)]


def test_duplicate_file_names_are_refused(tmp_path: Path) -> None:
    config = _project(tmp_path, "local_files")
    (config.root / ".dango" / "sources.yml").write_text(
        (config.root / ".dango" / "sources.yml").read_text().replace("'*'", "'*/*.csv'")
    )
    config = load_config(config.root)
    for folder in ("x", "y"):
        (config.root / "data/uploads/orders" / folder).mkdir()
        _write(config, f"{folder}/a.csv", "order_id,amount\n1,1\n")
    with pytest.raises(FilesLoadError, match="share the same file name"):
        _sync(config)


def test_files_are_parsed_before_the_lock_is_taken(tmp_path: Path) -> None:
    """Another process holds the lock; the sync parses the new file, then waits, then swaps."""
    config = _project(tmp_path)
    _write(config, "a.csv", "order_id,amount\n1,1\n")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dango_dagster.lock import DbtLock\n"
            "l = DbtLock(sys.argv[1], source='other', operation='hold'); l.acquire(timeout=5)\n"
            "print('held', flush=True); time.sleep(3)",
            str(config.root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = _sync(config)
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert result.staged_outside_lock == 1 and result.staged_under_lock == 0
    assert waited > 1.0 and _rows(config) == [(1, 1.0, "a.csv")]
