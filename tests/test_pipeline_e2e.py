"""The whole pipeline through Dagster on a fresh demo project: dlt -> dbt -> snapshot."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dango_dagster.config import load_config
from dango_dagster.defs.builder import build_definitions
from dango_dagster.defs.snapshot_asset import SNAPSHOT_KEY
from dango_dagster.demo import init_demo_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_demo_project(tmp_path_factory.mktemp("e2e") / "shop", rows=300)


def _key(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


def test_graph_reads_source_raw_staging_marts_snapshot(demo: Path) -> None:
    defs = build_definitions(load_config(demo))
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"source/orders/orders", "raw_orders/orders", "staging/stg_orders"} <= keys
    assert {"marts/fct_daily_sales", "snapshots/warehouse"} <= keys
    # Every dependency is a defined node: no dangling placeholders.
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            assert graph.has(parent), f"{key.to_user_string()} depends on undefined {parent}"
    assert _key("source", "orders", "orders") in graph.get(_key("raw_orders", "orders")).parent_keys
    assert _key("raw_orders", "orders") in graph.get(_key("staging", "stg_orders")).parent_keys
    assert _key("marts", "fct_daily_sales") in graph.get(SNAPSHOT_KEY).parent_keys
    assert graph.get(_key("raw_orders", "orders")).group_name == "raw_orders"
    assert graph.get(_key("marts", "fct_daily_sales")).group_name == "marts"
    assert "csv" in graph.get(_key("raw_orders", "orders")).kinds
    assert "dbt" in graph.get(_key("marts", "fct_daily_sales")).kinds
    # dbt tests are asset checks
    assert any(
        check.asset_key == _key("marts", "fct_daily_sales") for check in graph.asset_check_keys
    )


def test_materialize_everything(demo: Path) -> None:
    config = load_config(demo)
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("dango_pipeline").execute_in_process(instance=instance)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
        mats = {
            m.asset_key.to_user_string(): m
            for m in result.get_asset_materialization_events()
            for m in [m.step_materialization_data.materialization]
        }
    orders_csv_rows = sum(
        sum(1 for _ in f.open()) - 1 for f in (config.uploads_dir / "orders").glob("*.csv")
    )
    assert mats["raw_orders/orders"].metadata["dagster/row_count"].value == orders_csv_rows
    assert mats["raw_orders/orders"].metadata["lock_wait_seconds"].value >= 0
    assert mats["marts/fct_daily_sales"].metadata["lock_held_seconds"].value > 0
    assert mats["snapshots/warehouse"].metadata["snapshot_size_bytes"].value > 0

    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert (
            con.execute("select count(*) from raw_orders.orders").fetchone()[0] == orders_csv_rows
        )
        assert con.execute("select count(*) from staging.stg_orders").fetchone()[0] > 0
        live_daily = con.execute("select * from marts.fct_daily_sales order by 1").fetchall()
    assert live_daily
    with duckdb.connect(str(config.published_snapshot_path), read_only=True) as snap:
        assert snap.execute("select * from marts.fct_daily_sales order by 1").fetchall() == (
            live_daily
        )
    user_snaps = list(config.snapshots_dir.glob("warehouse_*_*.duckdb"))
    assert user_snaps, "each notebook user gets a snapshot"
