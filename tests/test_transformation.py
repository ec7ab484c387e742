"""Housekeeping of the dbt step: per-invocation target folders do not pile up."""

import os
import time
from pathlib import Path

from dango_dagster.defs.dbt.assets import prune_invocation_targets


def test_only_the_newest_invocation_targets_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "target"
    now = time.time()
    for i in range(8):
        folder = target / f"dbt_models-run{i}-abc{i}"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text("{}")
        os.utime(folder, (now - 100 + i, now - 100 + i))
    (target / "manifest.json").write_text("{}")  # the project's own manifest stays
    (target / "other_op-run1-x").mkdir()  # another op's folders are not ours to prune
    prune_invocation_targets(tmp_path, "dbt_models", keep=5)
    left = sorted(p.name for p in target.glob("dbt_models-*"))
    assert left == [f"dbt_models-run{i}-abc{i}" for i in range(3, 8)]
    assert (target / "manifest.json").exists() and (target / "other_op-run1-x").exists()
