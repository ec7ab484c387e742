"""Automation on a real instance: uploads sensor, declarative automation, daemon-free path."""

import os
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from lockprocs.harness import LockProc

from dango_dagster.config import load_config
from dango_dagster.constants import REFRESH_SCHEDULE, UPLOADS_SENSOR
from dango_dagster.defs.builder import build_definitions
from dango_dagster.defs.snapshot_asset import SNAPSHOT_KEY
from dango_dagster.demo import init_demo_project

NEW_ORDERS = "order_id,customer_id,order_date,status\n900001,1,2031-01-01,completed\n"


def _age(folder: Path, seconds: float = 60) -> None:
    """Make every upload look settled (written a minute ago)."""
    past = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = init_demo_project(tmp_path_factory.mktemp("auto") / "shop", rows=200)
    _age(root / "data" / "uploads")
    return root


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    sensor = defs.resolve_sensor_def(UPLOADS_SENSOR)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, repository_def=defs.get_repository_def()
    )
    return sensor(context)


def test_uploads_sensor_requests_one_run_per_change(demo: Path) -> None:
    defs = build_definitions(load_config(demo))
    with dg.instance_for_test() as instance:
        first = _tick(defs, instance, None)
        # One run per csv source of sources.yml (each its own folder).
        by_source = {r.tags["dango/source"]: r for r in first.run_requests}
        assert sorted(by_source) == ["customers", "orders", "payments"]
        request = by_source["orders"]
        selected = {k.to_user_string() for k in request.asset_selection}
        assert {"raw_orders/orders", "marts/fct_daily_sales", "snapshots/warehouse"} <= selected
        assert not any(k.startswith("source/") for k in selected)

        unchanged = _tick(defs, instance, first.cursor)
        assert unchanged.run_requests == []

        # A burst of files still being written while the sensor looks (one every 0.3 s, for
        # longer than the settle time it waits out within a tick): nothing yet, then exactly
        # one run once quiet.
        orders = demo / "data" / "uploads" / "orders"

        def write_burst() -> None:
            for i in range(20):
                (orders / f"burst_{i:02d}.csv").write_text(
                    f"order_id,customer_id,order_date,status\n{800000 + i},1,2031-02-01,placed\n"
                )
                time.sleep(0.3)

        writer = threading.Thread(target=write_burst)
        writer.start()
        try:
            time.sleep(0.1)
            settling = _tick(defs, instance, first.cursor)
        finally:
            writer.join()
        assert settling.run_requests == []
        assert "settling" in settling.skip_reason.skip_message
        _age(orders)
        burst = _tick(defs, instance, settling.cursor)
        assert len(burst.run_requests) == 1
        assert burst.run_requests[0].run_key != request.run_key
        for i in range(20):
            (orders / f"burst_{i:02d}.csv").unlink()

        # A file renamed into place just now: the sensor waits out the rest of the settle time
        # (1 s) within this evaluation instead of the daemon's next one, 5 s later.
        (orders / ".fresh.tmp").write_text(NEW_ORDERS.replace("900001", "900002"))
        os.replace(orders / ".fresh.tmp", orders / "fresh.csv")
        started = time.monotonic()
        fresh = _tick(defs, instance, burst.cursor)
        assert len(fresh.run_requests) == 1
        assert 0.5 < time.monotonic() - started < 5
        (orders / "fresh.csv").unlink()

        # A file dropped while an evaluation with nothing new is still looking (it watches for
        # automation.upload_watch_seconds, 4 s): that same evaluation requests its run.
        gone = _tick(defs, instance, fresh.cursor)  # fresh.csv removed: a change, one run
        assert len(gone.run_requests) == 1

        def drop_later() -> None:
            time.sleep(1.5)
            (orders / ".watched.tmp").write_text(NEW_ORDERS.replace("900001", "900003"))
            os.replace(orders / ".watched.tmp", orders / "watched.csv")

        dropper = threading.Thread(target=drop_later)
        dropper.start()
        try:
            watched = _tick(defs, instance, gone.cursor)
        finally:
            dropper.join()
        assert len(watched.run_requests) == 1, watched.skip_reason
        assert watched.run_requests[0].tags["dango/source"] == "orders"
        (orders / "watched.csv").unlink()


def test_schedule_refreshes_everything(demo: Path) -> None:
    """The demo's schedules.yml entry daily_refresh (type sync, every source) is a Dagster one."""
    defs = build_definitions(load_config(demo))
    schedule = defs.resolve_schedule_def(REFRESH_SCHEDULE)
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"
    job = defs.resolve_job_def(schedule.job_name)
    keys = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"raw_orders/orders", "raw_payments/payments", "marts/fct_daily_sales"} <= keys
    assert "snapshots/warehouse" in keys


def test_automation_follows_raw_then_dbt(demo: Path) -> None:
    defs = build_definitions(load_config(demo))
    graph = defs.resolve_asset_graph()
    raw = [k for k in graph.get_all_asset_keys() if k.path[0].startswith("raw_")]
    dbt_keys = [k for k in graph.get_all_asset_keys() if k.path[0] in ("staging", "marts")]
    with dg.instance_for_test() as instance:
        baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert baseline.total_requested == 0  # nothing loaded yet: nothing to build
        for key in raw:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=baseline.cursor
        )
        requested = {r.key for r in result.results if r.true_subset.size > 0}
        assert set(dbt_keys) <= requested
        assert SNAPSHOT_KEY in requested  # in the same run, after dbt
        assert not set(raw) & requested  # raw data comes from the sensor, not from automation

        for key in [*dbt_keys, SNAPSHOT_KEY]:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        settled = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=result.cursor
        )
        assert settled.total_requested == 0  # everything is fresh: nothing to do

        # A dbt model rebuilt on its own (say from the UI): the snapshot follows it.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(dg.AssetKey(["marts", "fct_daily_sales"]))
        )
        after_dbt = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=settled.cursor
        )
        requested = {r.key for r in after_dbt.results if r.true_subset.size > 0}
        assert requested == {SNAPSHOT_KEY}


@pytest.mark.slow
def test_dropped_csv_reaches_the_snapshot_through_the_sensor(tmp_path: Path) -> None:
    """Daemon-free path: drop a file, evaluate the sensor, execute its run, read the snapshot."""
    root = init_demo_project(tmp_path / "shop", rows=200)
    _age(root / "data" / "uploads")
    config = load_config(root)
    defs = build_definitions(config)
    job = defs.resolve_job_def("dango_pipeline")
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance).success  # a sync loads everything
        # A fresh sensor (no cursor: the first `dagster dev`) starts from what the sync loaded,
        # read under the lock; while another process writes, it waits for a later tick.
        holder = LockProc("hold", root, "dango", "sync orders")
        try:
            holder.expect("HELD")
            busy = _tick(defs, instance, None)
        finally:
            holder.let_go()
        assert busy.run_requests == []
        assert "busy" in busy.skip_reason.skip_message
        first = _tick(defs, instance, None)
        assert first.run_requests == []
        cursor = first.cursor
        assert cursor and "orders" in cursor
        (config.uploads_dir / "orders" / "late_orders.csv").write_text(NEW_ORDERS)
        _age(config.uploads_dir / "orders")
        tick = _tick(defs, instance, cursor)
        assert len(tick.run_requests) == 1
        request = tick.run_requests[0]
        result = job.execute_in_process(
            instance=instance,
            asset_selection=request.asset_selection,
            tags={**request.tags, "dagster/sensor_name": UPLOADS_SENSOR},
        )
        assert result.success
    with duckdb.connect(str(config.published_snapshot_path), read_only=True) as snap:
        assert (
            snap.execute(
                "select count(*) from raw_orders.orders where order_id = 900001"
            ).fetchone()[0]
            == 1
        )
        day = snap.execute(
            "select * from marts.fct_daily_sales where sales_date = date '2031-01-01'"
        ).fetchall()
    assert len(day) == 1
