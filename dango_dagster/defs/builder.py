"""Builds the Dagster definitions of one Dango project folder.

``dango_dagster.definitions`` calls this for the project in ``DANGO_PROJECT_DIR``; the CLI, tests
and benchmarks call it for a project they name, without touching the process environment.
"""

from __future__ import annotations

import dagster as dg

from dango_dagster import constants
from dango_dagster.config import ProjectConfig
from dango_dagster.defs.automation import (
    build_automation_sensor,
    build_refresh_schedule,
    build_uploads_sensor,
)
from dango_dagster.defs.dbt.assets import build_dbt_assets, build_dbt_resource
from dango_dagster.defs.gate import WarehouseLockGate
from dango_dagster.defs.ingestion.assets import build_ingestion_assets, source_specs
from dango_dagster.defs.runs import build_dead_runs_sensor, recording_executor
from dango_dagster.defs.schedules import build_dango_schedules
from dango_dagster.defs.snapshot_asset import build_snapshot_asset

# The main job: every source, every dbt model, then the snapshot.
PIPELINE_JOB = dg.define_asset_job(
    constants.PIPELINE_JOB,
    selection=dg.AssetSelection.all(),
    description="Load every source, build the dbt project, publish a fresh snapshot.",
)


def build_definitions(config: ProjectConfig) -> dg.Definitions:
    """Assets, checks, resources and automation for one project folder."""
    ingestion = [build_ingestion_assets(config, source) for source in config.sources]
    sources = [spec for source in config.sources for spec in source_specs(config, source)]
    dbt_models = build_dbt_assets(config)
    snapshot = build_snapshot_asset(sorted(dbt_models.keys, key=lambda k: k.to_user_string()))
    schedules = build_dango_schedules(config, dbt_models)
    if config.automation.refresh_cron:
        schedules.append(build_refresh_schedule(config, PIPELINE_JOB))
    return dg.Definitions(
        assets=[*sources, *ingestion, dbt_models, snapshot],
        jobs=[PIPELINE_JOB],
        schedules=schedules,
        sensors=[
            build_uploads_sensor(config, PIPELINE_JOB),
            build_automation_sensor(),
            build_dead_runs_sensor(config),
        ],
        resources={
            constants.GATE_RESOURCE: WarehouseLockGate(project_dir=str(config.root)),
            constants.DBT_RESOURCE: build_dbt_resource(config),
        },
        # Every step in one process: the writes are serialised by the lock anyway, and a fresh
        # process per step re-imports dagster, dlt and dbt (~5 s a step on 2 cores). It also
        # records the run's process and writes the run's final state into its status file.
        executor=recording_executor(config),
    )
