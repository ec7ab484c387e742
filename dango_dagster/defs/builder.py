"""Builds the Dagster definitions of one Dango project folder.

``dango_dagster.definitions`` calls this for the project in ``DANGO_PROJECT_DIR``; the CLI, tests
and benchmarks call it for a project they name, without touching the process environment;
``build_dango_defs`` and ``DangoProjectComponent`` for a project inside a user's own code location,
where every name is per project so several projects live side by side.
"""

from __future__ import annotations

import os

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import DEAD_RUNS_SENSOR, ProjectNames
from dango_dagster.defs.automation import (
    build_automation_sensor,
    build_refresh_schedule,
    build_uploads_sensor,
)
from dango_dagster.defs.dbt.assets import build_dbt_assets, build_dbt_resource
from dango_dagster.defs.dead_runs import build_dead_runs_sensor
from dango_dagster.defs.gate import WarehouseLockGate
from dango_dagster.defs.ingestion.assets import build_ingestion_assets, source_specs
from dango_dagster.defs.runs import recording_executor
from dango_dagster.defs.schedules import build_dango_schedules
from dango_dagster.defs.settings import config_for, remember
from dango_dagster.defs.snapshot_asset import build_snapshot_asset

__all__ = ["build_dango_defs", "build_definitions"]


def build_definitions(
    config: ProjectConfig, *, names: ProjectNames | None = None, executor: bool = True
) -> dg.Definitions:
    """Assets, checks, resources and automation for one project folder.

    ``executor``: make the in-process executor the code location's default (right for a code
    location of its own; a user's code location keeps its own choice, the pipeline job runs in
    process either way).
    """
    names = names or ProjectNames()
    remember(config)  # the gate and the assets use exactly these settings
    ingestion = [build_ingestion_assets(config, source, names) for source in config.sources]
    sources = [spec for src in config.sources for spec in source_specs(config, src, names)]
    dbt_models = build_dbt_assets(config, names)
    snapshot = build_snapshot_asset(
        config, sorted(dbt_models.keys, key=lambda k: k.to_user_string()), names
    )
    materializable = [*ingestion, dbt_models, snapshot]
    selection = dg.AssetSelection.assets(*materializable)
    # The main job: every source, every dbt model, then the snapshot, in one process (below).
    job = dg.define_asset_job(
        names.job,
        selection=selection,
        description="Load every source, build the dbt project, publish a fresh snapshot.",
        executor_def=recording_executor(config),
    )
    schedules = build_dango_schedules(config, dbt_models, names)
    if config.automation.refresh_cron:
        schedules.append(build_refresh_schedule(config, job, names))
    return dg.Definitions(
        assets=[*sources, *materializable],
        jobs=[job],
        schedules=schedules,
        sensors=[
            build_uploads_sensor(config, job, names),
            build_automation_sensor(selection, names),
            build_dead_runs_sensor(config, names.name(DEAD_RUNS_SENSOR)),
        ],
        resources={
            names.gate_resource: WarehouseLockGate(project_dir=str(config.root)),
            names.dbt_resource: build_dbt_resource(config),
        },
        # Every step in one process: the writes are serialised by the lock anyway, and a fresh
        # process per step re-imports dagster, dlt and dbt (~5 s a step on 2 cores). It also
        # records the run's process and writes the run's final state into its status file.
        executor=recording_executor(config) if executor else None,
    )


def build_dango_defs(
    project_dir: str | os.PathLike[str],
    *,
    key_prefix: str | None = None,
    name: str | None = None,
) -> dg.Definitions:
    """The Definitions of the Dango project in ``project_dir``, for a code location of your own.

    ``key_prefix`` prefixes every asset key and group (``shop`` -> ``shop/raw_shop/orders``);
    it is what keeps two projects' assets apart. ``name`` (default: ``key_prefix``) prefixes the
    job, schedule, sensors and resource keys (``shop__dango_pipeline``, ``shop__warehouse_gate``).
    Merge several with ``dg.Definitions.merge``.
    """
    try:
        names = ProjectNames(scope=name or key_prefix, key_prefix=key_prefix)
    except ValueError as exc:
        from dango_dagster.errors import ProjectConfigError

        raise ProjectConfigError(
            f"key_prefix/name {exc}", hint="Use a name such as 'shop' or 'finance_2'."
        ) from exc
    return build_definitions(config_for(project_dir), names=names, executor=False)
