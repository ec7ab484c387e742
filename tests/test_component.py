"""DangoProjectComponent in a user's own ``dg`` project, as a Dagster user would set it up.

A temporary ``dg`` project holds two Dango demo projects, each a ``DangoProjectComponent`` with its
own ``key_prefix``, and an asset of the user's own that writes the first project's warehouse
through ``DangoDuckDBResource``. It loads with ``dg.load_from_defs_folder`` and materializes end to
end (real dlt loads, real dbt builds, real DuckDB files, a real Dagster instance).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dango_dagster.demo import init_demo_project
from dango_dagster.errors import ProjectConfigError

BIN = Path(sys.executable).parent

OWN_ASSET = '''
import dagster as dg
from dagster_duckdb import DuckDBResource

from dango_dagster import DangoDuckDBResource


@dg.asset(deps=[dg.AssetKey(["north", "marts", "fct_orders"])], kinds={"duckdb"})
def order_count(duckdb: DuckDBResource) -> dg.MaterializeResult:
    """The user's own table in the north warehouse, written under the warehouse lock."""
    with duckdb.get_connection() as con:
        con.execute("create schema if not exists own")
        con.execute(
            "create or replace table own.order_count as select count(*) n from marts.fct_orders"
        )
        n = con.execute("select n from own.order_count").fetchone()[0]
    return dg.MaterializeResult(metadata={"orders": n})


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        assets=[order_count],
        resources={"duckdb": DangoDuckDBResource(project_dir={north!r})},
    )
'''


def _dg_project(root: Path, module: str, components: dict[str, dict[str, str]]) -> Path:
    """A minimal ``dg`` project (``[tool.dg]``, ``defs/<name>/defs.yaml``) under ``root``."""
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [project]
        name = "{module}"
        version = "0.1.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "{module}"
        """),
        encoding="utf-8",
    )
    defs = root / "src" / module / "defs"
    defs.mkdir(parents=True)
    (defs.parent / "__init__.py").write_text("", encoding="utf-8")
    (defs / "__init__.py").write_text("", encoding="utf-8")
    for name, attributes in components.items():
        (defs / name).mkdir()
        lines = "\n".join(f"  {k}: {v}" for k, v in attributes.items())
        (defs / name / "defs.yaml").write_text(
            f"type: dango_dagster.DangoProjectComponent\n\nattributes:\n{lines}\n",
            encoding="utf-8",
        )
    return defs


def _load(defs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.syspath_prepend(str(defs_dir.parents[1]))
    return dg.load_from_defs_folder(path_within_project=defs_dir)


@pytest.fixture(scope="module")
def two_projects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dango_projects")
    return (
        init_demo_project(base / "north", rows=60, seed=1),
        init_demo_project(base / "south", rows=40, seed=2),
    )


@pytest.mark.slow
def test_two_projects_and_an_own_asset_materialize_end_to_end(
    two_projects: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    north, south = two_projects
    module = f"userproj_{uuid.uuid4().hex[:8]}"
    defs_dir = _dg_project(
        tmp_path,
        module,
        {
            "north": {"project_dir": str(north), "key_prefix": "north"},
            "south": {"project_dir": str(south), "key_prefix": "south"},
        },
    )
    (defs_dir / "own").mkdir()
    (defs_dir / "own" / "assets.py").write_text(
        OWN_ASSET.replace("{north!r}", repr(str(north))), encoding="utf-8"
    )
    defs = _load(defs_dir, monkeypatch)

    # Per-project names: nothing collides, and each project keeps its whole pipeline.
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"north__dango_pipeline", "south__dango_pipeline"} <= jobs
    sensors = {s.name for s in defs.sensors or []}
    assert {"north__uploads_sensor", "south__uploads_sensor"} <= sensors
    assert {s.name for s in defs.schedules or []} == {
        "north__daily_refresh",
        "south__daily_refresh",
    }
    assert {"north__warehouse_gate", "south__warehouse_gate", "duckdb"} <= set(defs.resources or {})
    graph = defs.resolve_asset_graph()
    order_count = dg.AssetKey("order_count")
    assert order_count in graph.get_all_asset_keys(), sorted(map(str, graph.get_all_asset_keys()))
    assert dg.AssetKey(["north", "marts", "fct_orders"]) in graph.get(order_count).parent_keys
    assert (
        dg.AssetKey(["south", "raw_orders", "orders"])
        in graph.get(dg.AssetKey(["south", "staging", "stg_orders"])).parent_keys
    )  # dbt sources meet the dlt assets under the prefix too

    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        mats = {
            e.asset_key.to_user_string(): e.step_materialization_data.materialization
            for e in result.get_asset_materialization_events()
        }
    assert {"north/snapshots/warehouse", "south/snapshots/warehouse", "order_count"} <= set(mats)
    for project, rows in ((north, 60), (south, 40)):
        with duckdb.connect(str(project / "data" / "warehouse.duckdb"), read_only=True) as con:
            assert con.execute("select count(*) from marts.fct_orders").fetchone()[0] == rows
        assert (project / ".dango" / "published" / "warehouse.duckdb").exists()
    assert mats["order_count"].metadata["orders"].value == 60
    with duckdb.connect(str(north / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select n from own.order_count").fetchone()[0] == 60


def test_same_keys_without_key_prefix_fail_naming_the_attribute(
    two_projects: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    north, south = two_projects
    defs_dir = _dg_project(
        tmp_path,
        f"clash_{uuid.uuid4().hex[:8]}",
        {"a_north": {"project_dir": str(north)}, "b_south": {"project_dir": str(south)}},
    )
    with pytest.raises(Exception) as caught:
        _load(defs_dir, monkeypatch)
    chain = [caught.value, *(getattr(caught.value, "__cause__", None),)]
    message = "\n".join(str(e) for e in chain if e is not None)
    assert "key_prefix" in message, message
    assert any(isinstance(e, ProjectConfigError) for e in _causes(caught.value))


def _causes(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def test_dg_scaffold_defs_writes_a_component_that_names_the_project(
    two_projects: tuple[Path, Path], tmp_path: Path
) -> None:
    """``dg scaffold defs dango_dagster.DangoProjectComponent NAME`` (the CLI a dg user runs)."""
    north, _ = two_projects
    module = f"scaffolded_{uuid.uuid4().hex[:8]}"
    defs_dir = _dg_project(tmp_path, module, {})
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(BIN / "dg"), "scaffold", "defs", "dango_dagster.DangoProjectComponent", "shop"]
        + ["--project-dir", str(north), "--key-prefix", "shop"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    written = (defs_dir / "shop" / "defs.yaml").read_text()
    assert "type: dango_dagster.DangoProjectComponent" in written
    assert f"project_dir: {north}" in written and "key_prefix: shop" in written
