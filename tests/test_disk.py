"""Disk use stays bounded over many syncs: what each run leaves behind is pruned."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from dango_dagster.config import SETTINGS_RELPATH, load_config
from dango_dagster.defs.ingestion.sources import pipelines_root
from dango_dagster.demo import init_demo_project
from dango_dagster.sync import open_instance, run_pipeline

MB = 1e6


def _du(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


@pytest.mark.slow
def test_ten_syncs_keep_disk_bounded(tmp_path: Path) -> None:
    """Ten real syncs (dlt, dbt, snapshot, a persistent Dagster instance): after the first few
    fill the kept history (2 dbt target folders, 1 dlt package, 3 runs, 3 snapshots a user),
    the project folder stops growing."""
    project = init_demo_project(tmp_path / "shop", rows=300)
    settings = project / SETTINGS_RELPATH
    text = settings.read_text() if settings.exists() else ""
    assert "automation:" not in text
    settings.write_text(text + "\nautomation:\n  keep_runs: 3\n")
    config = load_config(project)
    sizes = []
    with open_instance(config) as instance:
        for _ in range(10):
            outcome = run_pipeline(config, instance=instance, quiet=True)
            assert outcome.success, outcome.error
            sizes.append(_du(project))
        assert len(instance.get_run_ids()) == 3
    # The warehouse swings by ~1.5 MB between syncs (WAL, then CHECKPOINT), so compare peaks:
    # what is left growing is Dagster's index and the status files (~0.1 MB a sync).
    growth = max(sizes[6:]) - max(sizes[2:5])
    assert growth < 1.5 * MB, [f"{s / MB:.1f}" for s in sizes]
    assert len(list(pipelines_root(config).glob("*/load/loaded/*"))) <= 1
    assert len(list((config.dbt_project_dir / "target").glob("dbt_models-*"))) <= 2
