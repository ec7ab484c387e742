"""Dango's schedules (``.dango/schedules.yml``) as Dagster schedules.

Each entry becomes a Dagster schedule of the same name, cron (Dango's presets such as ``daily``
resolved) and timezone, RUNNING when ``enabled`` (STOPPED otherwise, so it still shows in the UI),
over what Dango's scheduler would run:

- ``sync``: its sources, then the dbt models (``dbt_command`` as a dbt ``--select``; all models
  downstream of the sources when unset), then the snapshot;
- ``sync_only``: its sources only (Dango skips dbt);
- ``dbt``: the dbt models ``dbt_command`` selects, then the snapshot.

``script`` schedules run a user's Python script, which is not an asset: they are left to Dango
(a warning at load time says so). A schedule naming an unknown or disabled source is an error
naming the schedule. Runs from a schedule carry ``dagster/schedule_name``, so they queue for the
warehouse lock instead of failing when Dango is writing.
"""

from __future__ import annotations

import warnings

import dagster as dg
from dagster_dbt import build_dbt_asset_selection

from dango_dagster.config import ProjectConfig, ProjectConfigError
from dango_dagster.constants import ProjectNames
from dango_dagster.dango_project import DangoSchedule

CRON_PRESETS = {
    "every_15m": "*/15 * * * *",
    "every_hour": "0 * * * *",
    "every_6h": "0 */6 * * *",
    "daily": "0 6 * * *",
    "weekly": "0 6 * * 1",
}
SNAPSHOT_GROUP = "snapshots"


_NO_NAMES = ProjectNames()


def _sources_selection(
    config: ProjectConfig, sched: DangoSchedule, names: ProjectNames
) -> dg.AssetSelection:
    enabled = {s.name for s in config.sources}
    for name in sched.sources:
        if name not in enabled:
            raise ProjectConfigError(
                f"Schedule {sched.name!r} in {config.schedules_path} names source {name!r}, which "
                f"is not an enabled source of {config.sources_path} "
                f"(enabled: {', '.join(sorted(enabled)) or 'none'}). Fix the schedule or source."
            )
    chosen = sched.sources or sorted(enabled)
    return dg.AssetSelection.groups(*(names.group(f"raw_{n}") for n in chosen))


def schedule_selection(
    config: ProjectConfig,
    sched: DangoSchedule,
    dbt_assets: dg.AssetsDefinition | None,
    names: ProjectNames = _NO_NAMES,
) -> dg.AssetSelection:
    """The assets one Dango schedule materializes (see the module docstring)."""
    snapshot = dg.AssetSelection.groups(names.group(SNAPSHOT_GROUP))
    dbt: dg.AssetSelection | None = None
    if sched.dbt_command and dbt_assets is not None:
        dbt = build_dbt_asset_selection([dbt_assets], dbt_select=sched.dbt_command)
    if sched.type == "dbt":
        if dbt is None:
            dbt = dg.AssetSelection.assets(dbt_assets) if dbt_assets else dg.AssetSelection.all()
        return dbt | snapshot
    sources = _sources_selection(config, sched, names)
    if sched.type == "sync_only":
        return sources
    if dbt is not None:
        return sources | dbt | snapshot
    return sources.downstream()


def build_dango_schedules(
    config: ProjectConfig,
    dbt_assets: dg.AssetsDefinition | None = None,
    names: ProjectNames = _NO_NAMES,
) -> list[dg.ScheduleDefinition]:
    """One Dagster schedule per ``schedules.yml`` entry (``script`` ones excepted)."""
    out: list[dg.ScheduleDefinition] = []
    for sched in config.schedules:
        if sched.type == "script":
            warnings.warn(
                f"Schedule {sched.name!r} runs a script; Dango's scheduler runs it, Dagster does "
                "not (scripts are not assets).",
                stacklevel=2,
            )
            continue
        if sched.type not in ("sync", "sync_only", "dbt"):
            raise ProjectConfigError(
                f"Schedule {sched.name!r} in {config.schedules_path} has unknown type "
                f"{sched.type!r} (sync, sync_only, dbt or script)."
            )
        selection = schedule_selection(config, sched, dbt_assets, names)
        job = dg.define_asset_job(
            names.name(f"schedule_{sched.name}"),
            selection=selection,
            description=f"Dango schedule {sched.name!r} ({sched.type}) from schedules.yml.",
            tags={"dango/schedule": sched.name},
        )
        out.append(
            dg.ScheduleDefinition(
                name=names.name(sched.name),
                job=job,
                cron_schedule=CRON_PRESETS.get(sched.cron, sched.cron),
                execution_timezone=sched.timezone or config.automation.timezone,
                default_status=dg.DefaultScheduleStatus.RUNNING
                if sched.enabled
                else dg.DefaultScheduleStatus.STOPPED,
                description=sched.description
                or f"Dango schedule {sched.name!r}: {sched.type} of "
                f"{', '.join(sched.sources) or 'dbt'} ({sched.cron}).",
            )
        )
    return out
