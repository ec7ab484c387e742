"""A built wheel works outside the checkout, installed beside getdango 1.0.13.

``uv build`` makes the sdist and, from it, the wheel; a fresh venv gets it and
``getdango==1.0.13`` (resolved against requirements-dango.lock, the second resolution: duckdb 1.5,
dlt 1.28); then, from a folder far from the repository, the console script creates a demo
project and syncs it through Dagster.
The templates come from the wheel's package data, not from this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parents[1]
UV = [sys.executable, "-m", "uv"]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_beside_getdango_runs_demo_init_and_sync(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DANGO_PROJECT_DIR", "DAGSTER_HOME")}
    dist = tmp_path / "dist"
    _run([*UV, "build", "--out-dir", str(dist), str(REPO)], tmp_path, env)
    wheel = next(dist.glob("dango_dagster-*.whl"))

    venv = tmp_path / "venv"
    _run([*UV, "venv", "--python", sys.executable, str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    _run(
        [*UV, "pip", "install", "--python", str(python), str(wheel), "getdango==1.0.13"]
        + ["-c", str(REPO / "requirements-dango.lock")],
        tmp_path,
        env,
    )
    # The package really comes from the wheel, with its templates as package data.
    where = _run(
        [str(python), "-c", "import dango, dango_dagster; print(dango_dagster.__file__)"],
        tmp_path,
        env,
    )
    assert str(venv) in where and str(REPO) not in where
    assert (Path(where.strip()).parent / "templates" / "demo" / "dbt_project").is_dir()

    away = tmp_path / "elsewhere"
    away.mkdir()
    cli = str(venv / "bin" / "dango-dagster")
    _run([cli, "demo", "init", "shop", "--rows", "30"], away, env)
    out = _run([cli, "sync", "--project", "shop"], away, env, timeout=900)
    assert "succeeded" in out
    with duckdb.connect(str(away / "shop" / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from marts.fct_orders").fetchone()[0] == 30
    assert (away / "shop" / ".dango" / "published" / "warehouse.duckdb").is_file()
