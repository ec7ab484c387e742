"""DuckLake settings and the pieces that need no DuckLake extension (run in both resolutions).

The end-to-end DuckLake sync is tests/test_ducklake.py (duckdb 1.5.5 only); these check what a
user gets wrong first: a missing or malformed catalog, and what the warehouse kind switches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dango_dagster.config import load_config
from dango_dagster.errors import ProjectConfigError, SnapshotError
from dango_dagster.lake import lake_for, open_published, published_snapshot


def _project(root: Path, settings: str) -> Path:
    (root / ".dango").mkdir(parents=True)
    (root / ".dango" / "dango_dagster.yml").write_text(settings)
    return root


def test_a_lake_without_catalog_says_what_to_set(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path / "p", "warehouse:\n  kind: ducklake\n"))
    with pytest.raises(ProjectConfigError) as info:
        lake_for(config)
    assert "DANGO_LAKE_CATALOG" in str(info.value).splitlines()[-1]
    assert config.dbt_target == "ducklake"  # dbt runs the profile's ducklake target


def test_catalog_must_be_a_postgres_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(
        _project(tmp_path / "p", "warehouse:\n  kind: ducklake\n  catalog: lake.sqlite\n")
    )
    with pytest.raises(ProjectConfigError, match="postgresql://"):
        lake_for(config)
    monkeypatch.setenv("DANGO_LAKE_CATALOG", "postgresql://u@db/lake")  # the environment wins
    lake = lake_for(config)
    assert lake.data_path == config.root / "data" / "lake"
    pinned = lake.attach_sql(read_only=True, snapshot=7, alias="warehouse")
    assert pinned.startswith("ATTACH 'ducklake:postgres:postgresql://u@db/lake' AS warehouse (")
    assert "SNAPSHOT_VERSION 7" in pinned and "READ_ONLY" in pinned
    assert "METADATA_SCHEMA 'lake'" in pinned  # the schema dlt's ducklake destination uses


def test_nothing_published_yet_is_a_clear_error(tmp_path: Path) -> None:
    config = load_config(
        _project(
            tmp_path / "p",
            "warehouse:\n  kind: ducklake\n  catalog: postgresql://u@db/lake\n",
        )
    )
    assert published_snapshot(config) is None
    with pytest.raises(SnapshotError) as info:
        open_published(config)
    assert "dango-dagster sync" in str(info.value).splitlines()[-1]


def test_file_warehouse_keeps_dev_target(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path / "p", "dbt:\n  in_process: true\n"))
    assert config.dbt_target == "dev" and config.settings.warehouse.kind == "file"
