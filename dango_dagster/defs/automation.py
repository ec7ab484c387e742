"""Automation: the daily refresh, the uploads sensor, declarative automation.

Every run launched here carries Dagster's ``dagster/sensor_name`` or ``dagster/schedule_name`` tag,
so the gate lets it queue for the warehouse lock (300 s) instead of failing when Dango's CLI or
another run is writing. Declarative automation (``AutomationCondition.eager()`` on the dbt models
and the snapshot) makes dbt follow fresh raw data and the snapshot follow dbt.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    AUTOMATION_SENSOR,
    REFRESH_SCHEDULE,
    TAG_SOURCE,
    UPLOADS_SENSOR,
    ProjectNames,
)
from dango_dagster.dango_project import DangoSource
from dango_dagster.defs.ingestion.watch import already_loaded, fingerprint, upload_files

if TYPE_CHECKING:
    from dango_dagster.defs._compat import UnresolvedAssetJobDefinition

_NO_NAMES = ProjectNames()
# How often the daemon evaluates the automation conditions (cheap: it reads the event log only).
AUTOMATION_INTERVAL_SECONDS = 10
# A folder that has been quiet for all but this much of its settle time is waited out within the
# sensor's evaluation and looked at again: the daemon's next evaluation is 5 s away, and a file
# renamed into place (or copied in one go) is complete already. Folders still being written stay
# "settling" either way.
SETTLE_WAIT_IN_TICK_SECONDS = 2.0
# How often the uploads sensor looks again within one evaluation (automation.upload_watch_seconds).
UPLOAD_WATCH_POLL_SECONDS = 0.1

__all__ = [
    "build_automation_sensor",
    "build_refresh_schedule",
    "build_uploads_sensor",
]


def build_automation_sensor(
    target: dg.AssetSelection | None = None, names: ProjectNames = _NO_NAMES
) -> dg.AutomationConditionSensorDefinition:
    """Declarative automation, RUNNING from the first ``dagster dev``.

    Dagster's implicit ``default_automation_condition_sensor`` starts STOPPED, so without this
    the ``eager()`` conditions on the dbt models and the snapshot would never be evaluated: a raw
    table materialized from the UI would leave dbt and the snapshot stale until someone switched
    the sensor on.
    """
    return dg.AutomationConditionSensorDefinition(
        name=names.name(AUTOMATION_SENSOR),
        target=target if target is not None else dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
        description=(
            "Declarative automation: the dbt models follow fresh raw data, the snapshot follows "
            "dbt (AutomationCondition.eager())."
        ),
    )


def build_uploads_sensor(
    config: ProjectConfig, job: UnresolvedAssetJobDefinition, names: ProjectNames = _NO_NAMES
) -> dg.SensorDefinition:
    """One run per changed file source, once its folder has been quiet for the settle time.

    Dango's watcher settings decide: the csv/local_files sources whose folder lies under one of
    ``platform.watch_directories`` are watched (files matching ``platform.watch_patterns``), the
    settle time is ``platform.debounce_seconds`` unless ``automation.upload_settle_seconds`` says
    otherwise, ``auto_sync: false`` starts the sensor stopped, and ``auto_dbt: false`` loads the
    source only (no dbt models or snapshot downstream).
    """
    file_sources = [s for s in config.sources if s.is_files and config.watched(s)]

    def look(
        context: dg.SensorEvaluationContext, cursor: dict[str, str], busy: set[str]
    ) -> tuple[list[dg.RunRequest], list[str]]:
        """One look at the watched files: a run request per changed source that has settled
        (``cursor`` is updated for them), and why the others wait."""
        settle = config.upload_settle_seconds
        requests: list[dg.RunRequest] = []
        skipped: list[str] = []
        for source in file_sources:
            files = upload_files(config, source)  # a stat per file: cheap at any interval
            digest, newest = fingerprint(files)
            known = cursor.get(source.name)
            if known == digest:
                continue
            if known is None:
                # No cursor yet (a fresh instance): start from what the warehouse already holds,
                # so the first `dagster dev` after a sync does not load everything again.
                loaded = None if source.name in busy else already_loaded(config, source)
                if loaded is None:
                    busy.add(source.name)
                    skipped.append(f"{source.name} (warehouse busy)")
                    continue
                if loaded:
                    cursor[source.name] = digest
                    continue
            left = settle - (time.time() - newest)
            if 0 < left <= SETTLE_WAIT_IN_TICK_SECONDS:
                time.sleep(left)
                digest, newest = fingerprint(upload_files(config, source))
                if digest == cursor.get(source.name):
                    continue
            if time.time() - newest < settle:
                skipped.append(f"{source.name} (settling)")  # still being written
                continue
            cursor[source.name] = digest
            requests.append(
                dg.RunRequest(
                    run_key=f"{source.name}:{digest}",
                    asset_selection=_source_and_downstream(context, source, config, names),
                    tags={TAG_SOURCE: source.name},
                )
            )
        return requests, skipped

    @dg.sensor(
        name=names.name(UPLOADS_SENSOR),
        job=job,
        minimum_interval_seconds=config.automation.upload_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if config.platform.auto_sync
        else dg.DefaultSensorStatus.STOPPED,
        description=(
            "Starts ingestion of a source (and the dbt models and snapshot downstream of it) when "
            f"files appear or change under {config.uploads_dir}."
        ),
    )
    def uploads_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        busy: set[str] = set()  # warehouse busy at the first look: not asked again this time
        # Nothing changed: look again every 0.1 s until the watch window ends (the daemon's next
        # wake-up is 5 s away), so a dropped file is seen at once.
        deadline = time.monotonic() + config.automation.upload_watch_seconds
        while True:
            requests, skipped = look(context, cursor, busy)
            if requests or time.monotonic() >= deadline:
                break
            time.sleep(UPLOAD_WATCH_POLL_SECONDS)
        return dg.SensorResult(
            run_requests=requests,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None
            if requests
            else (
                f"waiting for uploads: {', '.join(skipped)}"
                if skipped
                else "no new or changed upload files"
            ),
        )

    return uploads_sensor


def _source_and_downstream(
    context: dg.SensorEvaluationContext,
    source: DangoSource,
    config: ProjectConfig,
    names: ProjectNames,
) -> list[dg.AssetKey]:
    selection: dg.AssetSelection = dg.AssetSelection.groups(names.group(source.schema_name))
    if config.platform.auto_dbt:
        selection = selection.downstream()
    graph = context.repository_def.asset_graph if context.repository_def else None
    if graph is None:
        return []
    return sorted(selection.resolve(graph), key=lambda key: key.to_user_string())


def build_refresh_schedule(
    config: ProjectConfig, job: UnresolvedAssetJobDefinition, names: ProjectNames = _NO_NAMES
) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=names.name(REFRESH_SCHEDULE),
        job=job,
        cron_schedule=config.automation.refresh_cron or "0 6 * * *",
        execution_timezone=config.automation.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Refreshes everything daily: every source, the dbt models, the snapshot.",
    )
