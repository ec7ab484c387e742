"""Dango's files as Dango writes them, and ours beside them (no getdango needed: the files are
copied from what getdango 1.0.13 wrote; tests/test_getdango.py does the same with real Dango)."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from dango_dagster.config import ProjectConfigError, load_config
from dango_dagster.sync_status import SyncStatus, cleanup_finished, reconcile_status_files

# .dango/project.yml exactly as `dango init` wrote it, plus the api section Dango writes once a
# key differs from its default (the one that used to break every command).
DANGO_PROJECT_YML = """\
project:
  name: Shop
  id: a138b1a1a6ea4a6ebb95df848118bb2e
  dango_version: 1.0.13
  created: '2026-12-01T00:12:24.575505'
  created_by: Unknown
  purpose: Data analytics project
  stakeholders: []
platform:
  duckdb_path: ./data/warehouse.duckdb
  dbt_project_dir: ./dbt
  data_dir: ./data
  port: 8800
  metabase_port: 3000
  dbt_docs_port: 8081
  marimo_port: 7805
  auto_sync: true
  auto_dbt: true
  debounce_seconds: 600
  watch_patterns: ['*.csv', '*.json', '*.jsonl', '*.ndjson', '*.parquet']
  watch_directories: [data/uploads]
  dbt_coalesce_seconds: 10
  workers: null
auth:
  enabled: true
  rate_limit: {enabled: true, login: {requests: 10, window_seconds: 60}}
api:
  query_max_rows: 500
  query_timeout_seconds: 30
  mcp_mask_pii: false
"""


def _project(root: Path, project_yml: str = DANGO_PROJECT_YML, ours: str | None = None) -> Path:
    (root / ".dango").mkdir(parents=True)
    (root / ".dango" / "project.yml").write_text(project_yml)
    if ours is not None:
        (root / ".dango" / "dango_dagster.yml").write_text(textwrap.dedent(ours))
    return root


def test_every_dango_key_is_accepted_and_platform_decides_the_paths(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path / "p"))
    root = config.root
    assert config.warehouse_path == root / "data" / "warehouse.duckdb"
    assert config.dbt_project_dir == root / "dbt"
    assert config.upload_settle_seconds == 600  # Dango's debounce when ours says nothing
    assert config.api.query_max_rows == 500  # the seed's key, in Dango's api section
    assert config.sources == [] and config.schedules == []


def test_our_file_is_strict_and_wins(tmp_path: Path) -> None:
    root = _project(
        tmp_path / "p",
        ours="""\
        lock: {queue_timeout_seconds: 12}
        api: {query_max_rows: 7, rate_limit: 5/second}
        automation: {upload_settle_seconds: 3}
        """,
    )
    config = load_config(root)
    assert config.lock.queue_timeout_seconds == 12
    assert (config.api.query_max_rows, config.api.rate_limit) == (7, "5/second")
    assert config.upload_settle_seconds == 3
    (root / ".dango" / "dango_dagster.yml").write_text("lock: {queue_timout_seconds: 12}\n")
    with pytest.raises(ProjectConfigError) as exc:
        load_config(root)
    assert "dango_dagster.yml" in str(exc.value) and "queue_timout_seconds" in str(exc.value)


def test_old_sources_list_in_project_yml_says_where_sources_live_now(tmp_path: Path) -> None:
    old = "sources:\n  - {name: shop, type: files}\n"
    with pytest.raises(ProjectConfigError, match=r"sources\.yml"):
        load_config(_project(tmp_path / "p", project_yml=old))


def test_bad_sources_yml_names_the_file_and_key(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    (root / ".dango" / "sources.yml").write_text("sources:\n- name: bad-name\n  type: csv\n")
    with pytest.raises(ProjectConfigError) as exc:
        load_config(root)
    assert "sources.yml" in str(exc.value) and "sources.0.name" in str(exc.value)


def test_status_files_of_dango_are_never_touched(tmp_path: Path) -> None:
    """Dango writes sync_status_<id>.json in the same folder: we read them, never rewrite or
    delete them (finished, dead PID, old: all of that is Dango's own cleanup to decide)."""
    state = tmp_path / "state"
    state.mkdir()
    dango = state / "sync_status_0123456789ab.json"
    body = {"pid": 999_999_999, "phase": "data_load", "message": "Syncing", "sources": ["orders"]}
    dango.write_text(json.dumps(body))
    done = state / "sync_status_ba9876543210.json"
    done.write_text(json.dumps({**body, "phase": "completed"}))
    old = time.time() - 10 * 86400
    for path in (dango, done):
        os.utime(path, (old, old))
    ours = SyncStatus(state, "run-" + "1" * 32)
    ours.update("completed", "done")
    os.utime(ours.path, (old, old))

    assert reconcile_status_files(state) == []
    assert cleanup_finished(state, keep_seconds=60) == [ours.path]
    assert json.loads(dango.read_text()) == body and done.exists()
