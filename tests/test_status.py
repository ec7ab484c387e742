"""Status files: atomic, resumable across the processes of one run, cleaned after a while."""

import json
import os
import time
from pathlib import Path

import pytest

from dango_dagster.sync_status import SyncStatus, cleanup_finished, list_statuses, read_status


def test_status_file_fields_and_resume(tmp_path: Path) -> None:
    run_id = "0123456789abcdef-rest-of-run-id"
    first = SyncStatus.open(tmp_path, run_id)
    first.update("lock_waiting", "waiting", holder={"pid": 42})
    data = read_status(first.path)
    assert first.path.name == "sync_status_0123456789ab.json"
    assert data["phase"] == "lock_waiting" and data["holder"] == {"pid": 42}
    assert data["run_id"] == run_id and data["pid"] == os.getpid()
    # Another step (maybe another process) of the same run picks it up; the holder is dropped.
    again = SyncStatus.open(tmp_path, run_id)
    again.update("dbt", "building")
    data = read_status(again.path)
    assert data["started_at"] == first.started_at and "holder" not in data
    with pytest.raises(ValueError, match="unknown phase"):
        again.update("exploded", "no")  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == [again.path.name]  # no temp files left


def test_cleanup_removes_only_old_finished_runs(tmp_path: Path) -> None:
    old_done = SyncStatus(tmp_path, "a" * 36)
    old_done.update("completed", "ok")
    old_running = SyncStatus(tmp_path, "b" * 36)
    old_running.update("dbt", "still going")
    fresh_failed = SyncStatus(tmp_path, "c" * 36)
    fresh_failed.update("failed", "boom")
    past = time.time() - 3 * 86400
    for status in (old_done, old_running):
        os.utime(status.path, (past, past))
    (tmp_path / "sync_status_corrupt.json").write_text("{not json")
    removed = cleanup_finished(tmp_path, keep_seconds=86400)
    assert removed == [old_done.path]
    assert old_running.path.exists() and fresh_failed.path.exists()
    phases = {s["phase"] for s in list_statuses(tmp_path)}
    assert phases == {"dbt", "failed"}
    assert json.loads(fresh_failed.path.read_text())["message"] == "boom"
