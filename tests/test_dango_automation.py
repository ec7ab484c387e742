"""Dango's automation as Dagster's: schedules.yml entries and platform.* watcher settings."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dango_dagster.config import ProjectConfigError, load_config
from dango_dagster.constants import UPLOADS_SENSOR
from dango_dagster.defs.builder import build_definitions
from dango_dagster.demo import init_demo_project

SCHEDULES = {
    "schedules": [
        {"name": "orders_hourly", "type": "sync_only", "cron": "every_hour",
         "sources": ["orders"], "timezone": "Asia/Singapore", "enabled": True},
        {"name": "nightly_dbt", "type": "dbt", "cron": "0 2 * * *", "sources": [],
         "enabled": False, "dbt_command": "stg_orders+", "timeout_minutes": 30},
        {"name": "payments_then_marts", "type": "sync", "cron": "daily", "sources": ["payments"],
         "dbt_command": "fct_orders"},
        {"name": "cleanup", "type": "script", "cron": "weekly", "script_path": "scripts/x.py"},
    ]
}  # fmt: skip


def _set(root: Path, name: str, **updates: object) -> None:
    path = root / ".dango" / name
    data = yaml.safe_load(path.read_text()) or {}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = init_demo_project(tmp_path_factory.mktemp("dango_auto") / "shop", rows=100)
    _set(root, "schedules.yml", **SCHEDULES)
    return root


def _keys(defs: dg.Definitions, schedule: dg.ScheduleDefinition) -> set[str]:
    job = defs.resolve_job_def(schedule.job_name)
    return {k.to_user_string() for k in job.asset_layer.selected_asset_keys}


def test_each_schedule_is_a_dagster_schedule(demo: Path) -> None:
    with pytest.warns(UserWarning, match="cleanup"):
        defs = build_definitions(load_config(demo))
    hourly = defs.resolve_schedule_def("orders_hourly")
    assert (hourly.cron_schedule, hourly.execution_timezone) == ("0 * * * *", "Asia/Singapore")
    assert hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert _keys(defs, hourly) == {"raw_orders/orders"}  # sync_only: no dbt, no snapshot

    nightly = defs.resolve_schedule_def("nightly_dbt")
    assert nightly.default_status == dg.DefaultScheduleStatus.STOPPED  # enabled: false
    assert _keys(defs, nightly) == {
        "staging/stg_orders", "marts/fct_orders", "marts/fct_daily_sales",
        "marts/dim_customers", "snapshots/warehouse",
    }  # fmt: skip

    both = defs.resolve_schedule_def("payments_then_marts")
    assert both.cron_schedule == "0 6 * * *"
    assert _keys(defs, both) == {"raw_payments/payments", "marts/fct_orders", "snapshots/warehouse"}
    with pytest.raises(Exception, match="cleanup"):
        defs.resolve_schedule_def("cleanup")  # scripts stay with Dango's scheduler


def test_a_schedule_naming_an_unknown_source_names_the_schedule(tmp_path: Path) -> None:
    root = init_demo_project(tmp_path / "shop", rows=50)
    _set(root, "schedules.yml", schedules=[{"name": "x", "cron": "daily", "sources": ["nope"]}])
    with pytest.raises(ProjectConfigError, match=r"Schedule 'x'.*'nope'"):
        build_definitions(load_config(root))


def test_watcher_settings_drive_the_uploads_sensor_and_automation(tmp_path: Path) -> None:
    root = init_demo_project(tmp_path / "shop", rows=50)
    _set(root, "project.yml", platform={"auto_sync": False, "auto_dbt": False})
    past = time.time() - 60
    for path in (root / "data" / "uploads").rglob("*"):
        os.utime(path, (past, past))
    defs = build_definitions(load_config(root))
    sensor = defs.resolve_sensor_def(UPLOADS_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED  # auto_sync: false
    graph = defs.resolve_asset_graph()
    model = graph.get(dg.AssetKey(["marts", "fct_orders"]))
    assert model.automation_condition is None  # auto_dbt: false
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def()
        )
        result = sensor(context)
    selected = {k.to_user_string() for r in result.run_requests for k in r.asset_selection}
    assert selected == {"raw_customers/customers", "raw_orders/orders", "raw_payments/payments"}

    # A source outside platform.watch_directories is not watched.
    _set(root, "project.yml", platform={"watch_directories": ["data/uploads/orders"]})
    defs = build_definitions(load_config(root))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def()
        )
        result = defs.resolve_sensor_def(UPLOADS_SENSOR)(context)
    assert [r.tags["dango/source"] for r in result.run_requests] == ["orders"]
