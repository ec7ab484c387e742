"""dbt run inside the Dagster process (``dbt.in_process``): same events, nothing left open.

Real demo projects, real dlt loads, real dbt builds; the warehouse file is probed from another OS
process, as the next writer would open it once the lock is released.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.builder import build_definitions
from dango_dagster.defs.dbt.assets import (
    DangoDbtCliResource,
    build_dbt_assets,
    dbt_executable,
)
from dango_dagster.defs.gate import WarehouseLockGate
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import DbtLock
from dango_dagster.sync import open_instance

pytestmark = pytest.mark.slow

ORDERS = dg.AssetKey(["marts", "fct_orders"])


def _load_everything(root: Path) -> ProjectConfig:
    config = load_config(root)
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(config)
            .resolve_job_def("dango_pipeline")
            .execute_in_process(instance=instance)
        )
    assert result.success
    return config


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    """A demo project with its raw data loaded and built once (dbt in process, the default)."""
    return _load_everything(init_demo_project(tmp_path_factory.mktemp("inproc") / "shop", rows=300))


def _build_dbt(
    config: ProjectConfig,
    *,
    in_process: bool = True,
    selection: Any = None,
    assets: dg.AssetsDefinition | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the dbt assets alone (raw data already loaded), as a run would."""
    dbt = DangoDbtCliResource(
        project_dir=str(config.dbt_project_dir),
        profiles_dir=str(config.dbt_project_dir),
        target=config.dbt_target,
        dbt_executable=dbt_executable(),
        in_process=in_process,
    )
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [assets or build_dbt_assets(config)],
            resources={
                "dbt": dbt,
                "warehouse_gate": WarehouseLockGate(project_dir=str(config.root)),
            },
            instance=instance,
            selection=selection,
            raise_on_error=False,
        )


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        mat.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        for event in result.get_asset_materialization_events()
        for mat in [event.step_materialization_data.materialization]
    }


def _checks(result: dg.ExecuteInProcessResult) -> set[tuple[str, str, bool]]:
    return {
        (c.asset_key.to_user_string(), c.check_name, c.passed)
        for c in result.get_asset_check_evaluations()
    }


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            texts.append(data.error.to_string() if data.error else "")
            if data.user_failure_data and data.user_failure_data.description:
                texts.append(data.user_failure_data.description)
    return "\n".join(texts)


def _open_handles(path: Path) -> list[str]:
    """Descriptors of this process on the warehouse file or its WAL."""
    names = {str(path), f"{path}.wal"}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in names:
            found.append(target)
    return found


def _assert_released(config: ProjectConfig, python: str) -> None:
    """Nothing here holds the warehouse, and another process can write it at once."""
    assert _open_handles(config.warehouse_path) == []
    writer = (
        "import duckdb, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute('create or replace table main.probe as select 42 as answer')\n"
        "con.close()\n"
    )
    done = subprocess.run(
        [python, "-c", writer, str(config.warehouse_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.execute("select answer from main.probe").fetchone() == (42,)


def _count(config: ProjectConfig, sql: str) -> int:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def _execute(config: ProjectConfig, sql: str) -> None:
    with duckdb.connect(str(config.warehouse_path)) as con:
        con.execute(sql)


@pytest.fixture
def edited_model(shop: ProjectConfig) -> Iterator[Path]:
    """``stg_payments.sql``, restored after the test."""
    path = shop.dbt_project_dir / "models" / "staging" / "stg_payments.sql"
    original = path.read_text()
    yield path
    path.write_text(original)


def test_same_events_as_a_dbt_subprocess(shop: ProjectConfig, python_exe: str) -> None:
    inproc = _build_dbt(shop, in_process=True)
    _assert_released(shop, python_exe)
    sub = _build_dbt(shop, in_process=False)
    assert inproc.success and sub.success

    mats_in, mats_sub = _materialized(inproc), _materialized(sub)
    assert len(mats_in) == 6 and mats_in.keys() == mats_sub.keys()
    for key, meta in mats_in.items():
        assert meta.keys() == mats_sub[key].keys(), key
        assert meta.get("dagster/row_count") == mats_sub[key].get("dagster/row_count"), key
        assert meta["unique_id"] == mats_sub[key]["unique_id"]
    checks = _checks(inproc)
    assert len(checks) == 28 and all(passed for *_, passed in checks)
    assert checks == _checks(sub)


def test_repeated_builds_see_fresh_data(shop: ProjectConfig, python_exe: str) -> None:
    before = _count(shop, "select count(*) from marts.fct_orders")
    _execute(
        shop,
        "insert into raw_orders.orders select * replace (order_id + 1000000 as order_id) "
        "from raw_orders.orders limit 1",
    )
    result = _build_dbt(shop)
    assert result.success
    assert _materialized(result)["marts/fct_orders"]["dagster/row_count"] == before + 1
    _assert_released(shop, python_exe)


def test_two_projects_one_after_the_other_in_one_process(
    shop: ProjectConfig, tmp_path: Path, python_exe: str
) -> None:
    other = _load_everything(init_demo_project(tmp_path / "other", rows=100, seed=7))
    shop_orders = _count(shop, "select count(*) from raw_orders.orders")
    other_orders = _count(other, "select count(*) from raw_orders.orders")
    assert shop_orders != other_orders

    # The other project first, then this one: each build writes its own warehouse only.
    for config, orders in ((other, other_orders), (shop, shop_orders), (other, other_orders)):
        result = _build_dbt(config)
        assert result.success
        assert _materialized(result)["marts/fct_orders"]["dagster/row_count"] == orders
        _assert_released(config, python_exe)
    assert _count(shop, "select count(*) from marts.fct_orders") == shop_orders
    assert _count(other, "select count(*) from marts.fct_orders") == other_orders


def test_subset_runs_only_the_selected_model_and_its_checks(shop: ProjectConfig) -> None:
    result = _build_dbt(shop, selection=[ORDERS])
    assert result.success
    assert set(_materialized(result)) == {"marts/fct_orders"}
    checks = _checks(result)
    assert checks and {key for key, *_ in checks} == {"marts/fct_orders"}


def test_failing_dbt_test_fails_its_check_and_the_step(
    shop: ProjectConfig, python_exe: str
) -> None:
    _execute(shop, "insert into raw_orders.orders select * from raw_orders.orders limit 1")
    try:
        result = _build_dbt(shop)
    finally:
        _execute(
            shop,
            "create or replace table raw_orders.orders as select distinct * from raw_orders.orders",
        )
    assert not result.success
    failed = {(key, name) for key, name, passed in _checks(result) if not passed}
    assert ("staging/stg_orders", "unique_stg_orders_order_id") in failed
    assert "unique_stg_orders_order_id" in _failure_text(result)
    _assert_released(shop, python_exe)


@pytest.mark.parametrize(
    ("broken_sql", "dbt_says"),
    [
        # dbt itself fails while parsing: nothing runs (exit 2).
        ("select * from {{ ref('no_such_model') }}", "no_such_model"),
        # The model fails to compile during the run (parse does not execute it).
        (
            "{% if execute %}{{ exceptions.raise_compiler_error('dango: broken on purpose') }}"
            "{% endif %}select 1 as payment_id",
            "dango: broken on purpose",
        ),
    ],
    ids=["unknown-ref", "compile-error"],
)
def test_dbt_error_fails_the_step_with_dbts_message(
    shop: ProjectConfig, edited_model: Path, python_exe: str, broken_sql: str, dbt_says: str
) -> None:
    assets = build_dbt_assets(shop)  # definitions load with the good project...
    edited_model.write_text(broken_sql)  # ...then the model breaks before the run
    result = _build_dbt(shop, assets=assets)
    assert not result.success
    assert dbt_says in _failure_text(result)
    _assert_released(shop, python_exe)


def test_stop_request_interrupts_dbt_like_ctrl_c(shop: ProjectConfig, python_exe: str) -> None:
    """What dagster-dbt does on run termination (``send_signal``) stops dbt, not just the wait."""
    import signal

    import orjson

    from dango_dagster.defs.dbt.inprocess import InProcessDbt

    project = shop.dbt_project_dir
    args = ["build", "--project-dir", str(project), "--profiles-dir", str(project)]
    args += ["--target-path", str(project / "target" / "stopped"), "--log-format", "json"]
    dbt = InProcessDbt(args, cwd=project, env={"DANGO_WAREHOUSE_PATH": str(shop.warehouse_path)})
    names = []
    for line in dbt.stdout:
        event = orjson.loads(line)
        names.append(event["info"]["name"])
        if names.count("LogStartLine") == 1 and names[-1] == "LogStartLine":
            dbt.send_signal(signal.SIGINT)
    assert dbt.wait(timeout=60) == 2
    assert "EndOfRunSummary" in names and names.count("LogStartLine") < 34
    _assert_released(shop, python_exe)


def test_parse_error_at_load_names_the_problem(tmp_path: Path) -> None:
    from dango_dagster.defs.dbt.assets import ensure_manifest

    config = load_config(init_demo_project(tmp_path / "broken", rows=10))
    model = config.dbt_project_dir / "models" / "staging" / "stg_payments.sql"
    model.write_text("select * from {{ ref('no_such_model') }}")
    with pytest.raises(RuntimeError, match="no_such_model"):
        ensure_manifest(config)


SLOW_MODEL = """-- Takes seconds: a window in which the build is certainly still running.
select (select count(*) from {{ ref('stg_orders') }}) + sum(i) as answer
from range(1500000000) t(i)
"""


def test_models_are_recorded_as_dbt_finishes_them_even_if_the_build_is_killed(
    tmp_path: Path,
) -> None:
    """Live progress: a sync killed (-9) during the build keeps the models dbt had finished."""
    root = init_demo_project(tmp_path / "shop", rows=200)
    config = load_config(root)
    (config.dbt_project_dir / "models" / "marts" / "zz_slow.sql").write_text(SLOW_MODEL)
    cli = str(Path(sys.executable).with_name("dango-dagster"))
    output = tmp_path / "sync.log"
    with open(output, "wb") as out:
        sync = subprocess.Popen(
            [cli, "sync", "--project", str(root)], stdout=out, stderr=subprocess.STDOUT
        )
    stg_orders = dg.AssetKey(["staging", "stg_orders"])
    slow = dg.AssetKey(["marts", "zz_slow"])
    try:
        deadline = time.monotonic() + 240
        instance = None
        record = None
        while time.monotonic() < deadline and sync.poll() is None:
            if instance is None and (config.dagster_home / "history").exists():
                # The sync may still be creating this instance's storage: open it through the
                # same per-home mutex the sync takes, or both run the migrations at once.
                instance = open_instance(config)
            if instance is not None:
                with contextlib.suppress(Exception):
                    record = instance.get_latest_materialization_event(stg_orders)
                if record is not None:
                    break
            time.sleep(0.1)
        assert record is not None, output.read_text()[-3000:]
        assert sync.poll() is None, "the build ended before the slow model could be killed"
    finally:
        sync.kill()
        sync.wait(30)
    assert instance is not None
    assert instance.get_latest_materialization_event(slow) is None  # dbt never finished it
    meta = record.asset_materialization.metadata  # a view: no row count, but its columns
    columns = {c.name: c.type for c in meta["dagster/column_schema"].value.columns}
    assert columns["order_id"] and all(columns.values())  # every column, with its type
    # The kernel freed the lock with the killed process: the next writer gets it at once.
    DbtLock(root, source="test").acquire(timeout=0).release()
