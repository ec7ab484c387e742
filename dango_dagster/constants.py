"""Names shared between modules: run tags, job / schedule / sensor / resource names, metadata keys.

One spelling each, so the gate that writes a tag, the sensor that reads it and the CLI that reports
it cannot drift apart. Standard library only (the CLI and ``lock/`` import it).

Definition names are per project (``scoped``): two Dango projects in one code location each get
their own job, schedule, sensors and resources.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# -- run tags we set ----------------------------------------------------------------------------
# The run's lock state: queued (held back in Dagster's run queue, no process), free (the queue
# let it go), waiting (a step waits in its process), held, released, timeout.
TAG_LOCK = "dango/lock"
TAG_LOCK_HOLDER = "dango/lock_holder"  # who the run waits for (while it waits), "this run", "none"
TAG_LOCK_TIMEOUT = "dango/lock_timeout"  # seconds this run may queue for the lock (overrides)
TAG_LAUNCHED_BY = "dango/launched_by"  # cli, demo, ... for runs our CLI starts
TAG_SOURCE = "dango/source"  # the source an uploads-sensor run loads
TAG_PROJECT = "dango/project"  # the project folder a run belongs to
# The warehouse a run writes (its project folder): an op tag on every asset that writes through
# the gate, copied onto the run by the run queue, which then queues runs per warehouse.
TAG_WAREHOUSE = "dango/warehouse"
# The process that runs a run (set when it starts executing), so a dead run is recognised: the
# PID, its start time (a reused PID is another process) and the host.
TAG_PID = "dango/pid"
TAG_PROCESS_START = "dango/process_start_time"
TAG_HOST = "dango/host"
# How the daemon started the run: "warm" (handed to a pre-started worker process, imports done)
# or "stock" (a new process, Dagster's default); see defs/run_launcher.py.
TAG_LAUNCH = "dango/launch"

# -- run tags Dagster sets (who launched a run) -------------------------------------------------
DAGSTER_SENSOR_TAG = "dagster/sensor_name"
DAGSTER_SCHEDULE_TAG = "dagster/schedule_name"
DAGSTER_BACKFILL_TAG = "dagster/backfill"
DAGSTER_AUTOMATION_TAG = "dagster/from_automation_condition"
DAGSTER_FROM_UI_TAG = "dagster/from_ui"
# Runs nobody watches from a terminal: these queue for the lock instead of failing at once.
QUEUEING_TAGS = (
    DAGSTER_SENSOR_TAG,
    DAGSTER_SCHEDULE_TAG,
    DAGSTER_BACKFILL_TAG,
    DAGSTER_AUTOMATION_TAG,
)

# -- definition names (base names; ``scoped`` makes them per project) ---------------------------
PIPELINE_JOB = "dango_pipeline"
REFRESH_SCHEDULE = "daily_refresh"
UPLOADS_SENSOR = "uploads_sensor"
AUTOMATION_SENSOR = "dango_automation"
DEAD_RUNS_SENSOR = "dead_runs_sensor"
GATE_RESOURCE = "warehouse_gate"
DBT_RESOURCE = "dbt"
SNAPSHOT_ASSET = "warehouse_snapshot"

# -- metadata keys ------------------------------------------------------------------------------
META_LOCK_WAIT = "lock_wait_seconds"
META_LOCK_HELD = "lock_held_seconds"
META_LOCK_WAITED_ON = "lock_waited_on"
META_LOCK_HOLDER = "lock_holder"  # on a lock-timeout failure: the holder, as JSON
META_PUBLISHED_PATH = "published_path"
META_ROW_COUNT = "dagster/row_count"
META_ROWS_LOADED = "rows_loaded"  # rows a sync added (a file source's row_count is the table's)
META_TABLE_NAME = "dagster/table_name"
META_COLUMN_SCHEMA = "dagster/column_schema"
META_MATERIALIZED_AS = "materialized_as"  # dbt models: "table" or "view", from the warehouse
META_SNAPSHOT_BYTES = "snapshot_size_bytes"

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def valid_scope(scope: str) -> str:
    """``scope`` if it can prefix Dagster names and asset keys, else a ``ValueError`` saying why."""
    if not _NAME_RE.match(scope):
        raise ValueError(
            f"{scope!r} must start with a letter and hold only letters, digits and underscores"
        )
    return scope


def scoped(name: str, scope: str | None) -> str:
    """``name`` for the project ``scope`` (``shop`` -> ``shop__dango_pipeline``); unscoped as is."""
    return f"{scope}__{name}" if scope else name


@dataclass(frozen=True)
class ProjectNames:
    """Every name one project's definitions use, so two projects in one code location never clash.

    ``scope`` prefixes job, schedule, sensor and resource names (None: the plain names, for a code
    location with one project); ``key_prefix`` prefixes every asset key and group name.
    """

    scope: str | None = None
    key_prefix: str | None = None

    def __post_init__(self) -> None:
        for value in (self.scope, self.key_prefix):
            if value is not None:
                valid_scope(value)

    def name(self, base: str) -> str:
        return scoped(base, self.scope)

    def group(self, base: str) -> str:
        return scoped(base, self.key_prefix)

    def key_path(self, *path: str) -> list[str]:
        return [self.key_prefix, *path] if self.key_prefix else list(path)

    def unprefixed(self, path: Sequence[str]) -> tuple[str, ...]:
        """An asset key's path without this project's prefix."""
        n = 1 if self.key_prefix and path and path[0] == self.key_prefix else 0
        return tuple(path[n:])

    @property
    def job(self) -> str:
        return self.name(PIPELINE_JOB)

    @property
    def gate_resource(self) -> str:
        return self.name(GATE_RESOURCE)

    @property
    def dbt_resource(self) -> str:
        return self.name(DBT_RESOURCE)
