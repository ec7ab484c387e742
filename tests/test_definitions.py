"""The code location as Dagster loads it: ``dango_dagster.definitions`` for a demo project.

Imported in a fresh interpreter with ``DANGO_PROJECT_DIR`` set, as ``dagster dev`` / ``dg dev`` /
``workspace.yaml`` do. What it defines (asset keys, groups, kinds, jobs, schedules, sensors,
resources) is compared with a syrupy snapshot: a change to the graph shows up as a reviewed diff
(`pytest --snapshot-update` after reading it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from dango_dagster.demo import init_demo_project

SUMMARY = """
import json
import dagster as dg
from dango_dagster.definitions import defs

graph = defs.resolve_asset_graph()
assets = {}
for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
    node = graph.get(key)
    assets[key.to_user_string()] = {
        "group": node.group_name,
        "kinds": sorted(node.kinds),
        "materializable": node.is_materializable,
        "checks": sorted(c.name for c in node.check_keys),
    }
summary = {
    "assets": assets,
    "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
    "schedules": {s.name: s.cron_schedule for s in defs.schedules or []},
    "sensors": sorted(s.name for s in defs.sensors or []),
    "resources": sorted(defs.resources or {}),
}
print(json.dumps(summary))
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_demo_project(tmp_path_factory.mktemp("defs") / "shop", rows=20)


def _json_of(cmd: list[str], cwd: Path, **env: str) -> Any:
    """Run ``cmd`` in a fresh process (no DAGSTER_HOME / DANGO_PROJECT_DIR but ``env``); the JSON
    it prints last."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DANGO_PROJECT_DIR", "DAGSTER_HOME")}
    done = subprocess.run(
        cmd, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout.strip()
    return json.loads(out if out.startswith("{\n") else out.splitlines()[-1])


def test_code_location_loads_for_a_demo_project(demo: Path, snapshot: SnapshotAssertion) -> None:
    summary = _json_of([sys.executable, "-c", SUMMARY], demo, DANGO_PROJECT_DIR=str(demo))
    # What a user checks first: the pipeline job and the lineage from source to snapshot.
    assert "dango_pipeline" in summary["jobs"]
    assert {
        "source/orders/orders",
        "raw_orders/orders",
        "marts/fct_orders",
        "snapshots/warehouse",
    } <= set(summary["assets"])
    assert summary == snapshot


def test_repository_root_is_a_dg_project() -> None:
    """``[tool.dg]`` in pyproject.toml: ``dg list defs`` (and so ``dg dev``) loads the demo."""
    root = Path(__file__).resolve().parents[1]
    listed = _json_of([str(Path(sys.executable).parent / "dg"), "list", "defs", "--json"], root)
    assert "dango_pipeline" in {job["name"] for job in listed["jobs"]}
    assert "snapshots/warehouse" in {asset["asset_key"] for asset in listed["assets"]}
