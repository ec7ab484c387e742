"""dango-dagster's own settings: the sections of ``.dango/dango_dagster.yml``.

Checked strictly (an unknown key is an error that names it) and all defaulted, so a Dango project
needs none of them. :mod:`dango_dagster.config` reads the file and re-exports these models.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*(B|[KMGT]i?B)$", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(_Section):
    # "file": one DuckDB file (one host). "ducklake": a DuckLake catalog (Postgres, shared by every
    # host) with Parquet data under ``data_path``; readers pin a snapshot (docs/SCALING.md).
    kind: Literal["file", "ducklake"] = "file"
    # The file itself is Dango's platform.duckdb_path (project.yml).
    # ducklake only: the catalog database, a postgresql:// URL (for example
    # ``postgresql://dango@db:5432/lake``); unset means env DANGO_LAKE_CATALOG.
    catalog: str | None = None
    # ducklake only: where the Parquet files go (a folder every host sees at the same path).
    data_path: str = "data/lake"


class DbtSettings(_Section):
    # The profile target; None: "dev", or "ducklake" when warehouse.kind is ducklake.
    target: str | None = None
    # Run dbt inside the Dagster run's process (no second Python re-importing dbt, ~2-3 s less per
    # build; docs/BENCHMARKS.md) instead of as a `dbt` subprocess. Same events either way.
    in_process: bool = True


class NotebookSettings(_Section):
    users: list[str] = Field(default_factory=list)


class LockSettings(_Section):
    queue_timeout_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # "file": flock on .dango/state/dbt.lock (one host, shared with Dango). "postgres": an advisory
    # lock on ``dsn`` (several hosts). Env DANGO_LOCK_BACKEND / DANGO_LOCK_DSN / DANGO_LOCK_KEY
    # override these three (docs/SCALING.md).
    backend: Literal["file", "postgres"] = "file"
    dsn: str | None = None
    # The warehouse's name, the same on every host; unset: the project folder's name.
    key: str | None = None

    @field_validator("dsn")
    @classmethod
    def _valid_dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "dsn must be a postgresql:// URL, e.g. postgresql://dango@db:5432/lock"
            )
        return value


class SnapshotSettings(_Section):
    retention: Annotated[int, Field(ge=1, le=1000)] = 3


class ApiSettings(_Section):
    query_max_rows: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    query_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_sql_bytes: Annotated[int, Field(gt=0, le=10_000_000)] = 100_000
    rate_limit: str = "120/minute"
    anonymous_rate_limit: str = "20/minute"
    memory_limit: str = "1GB"
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    # Answers of deterministic queries, per published snapshot (it never changes, so they stay
    # right until it is replaced); 0 turns the cache off.
    result_cache_mb: Annotated[float, Field(ge=0, le=100_000)] = 64.0

    @field_validator("rate_limit", "anonymous_rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        # Parsed here so a typo fails at startup with the key's name, not on the first request.
        from limits import parse_many

        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(
                f"rate limit {value!r} must look like '120/minute' or '10/second;1000/hour' "
                "(amounts of at least 1)"
            )
        return value

    @field_validator("memory_limit")
    @classmethod
    def _valid_memory_limit(cls, value: str) -> str:
        if not _MEMORY_RE.match(value.strip()):
            raise ValueError(
                f"memory_limit {value!r} must be a size such as '512MB', '1GB' or '2GiB'"
            )
        return value.strip()


class AutomationSettings(_Section):
    # An extra full refresh (sources -> dbt -> snapshot) beside schedules.yml's; cron, in
    # `timezone`. None: only Dango's schedules (the demo's daily_refresh is one of them).
    refresh_cron: str | None = None
    # Also the timezone of a schedules.yml entry without one.
    timezone: str = "UTC"
    # The uploads sensor: how often it looks (a stat of the watched files, no read; Dagster's
    # sensor daemon wakes every 5 s, so anything up to 5 means "every wake-up"), and how long the
    # newest file must be quiet before a run starts (a burst of files gives one run, not fifty).
    upload_sensor_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 1
    # Within one evaluation the sensor keeps looking (a stat every 0.1 s) for this long when
    # nothing changed, so a file dropped between two of the daemon's wake-ups (5 s apart) is seen
    # at once instead of at the next one. 0: one look per evaluation.
    upload_watch_seconds: Annotated[float, Field(ge=0, le=30)] = 4.0
    # None: platform.debounce_seconds (Dango's watcher setting).
    upload_settle_seconds: Annotated[float, Field(ge=0, le=3600)] | None = None
    # Finished status files are deleted after this long.
    status_keep_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24.0
    # Finished Dagster runs kept in the instance (event log, compute logs); older ones are
    # deleted after each run, so a sensor-driven project's disk stays bounded (~0.5 MB a run).
    keep_runs: Annotated[int, Field(ge=1, le=1_000_000)] = 500


class _ConfigFile(BaseModel):
    """``.dango/dango_dagster.yml``: dango-dagster's own settings (a file Dango never rewrites)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warehouse: WarehouseSettings = WarehouseSettings()
    dbt: DbtSettings = DbtSettings()
    notebooks: NotebookSettings = NotebookSettings()
    lock: LockSettings = LockSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    api: ApiSettings = ApiSettings()
    automation: AutomationSettings = AutomationSettings()
