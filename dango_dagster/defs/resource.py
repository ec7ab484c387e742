"""``DangoDuckDBResource``: a ``DuckDBResource`` whose connections hold the warehouse lock.

For a Dagster user's own assets that write the project's warehouse. Stock ``DuckDBResource``
retries a locked file ten times with backoff (about 100 s) and then fails the step, so a backfill
behind a long dbt build loses partitions; this one queues for ``DbtLock`` instead, exactly as the
gate does for the run's launch kind (backfills, sensors, schedules, automation and the web UI
wait up to ``lock.queue_timeout_seconds``; other runs fail at once unless the run tag
``dango/lock_timeout`` says otherwise), and shows the wait in the run log, the ``dango/lock`` tag
and the status file. It is a subclass, so code annotated with ``DuckDBResource`` takes it as is.

``get_snapshot_connection()`` reads the published snapshot read-only without the lock: readers
never touch the live file, so they never block a writer (brief, rule 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from dango_dagster.config import ProjectConfig
from dango_dagster.defs.gate import RunHandle, hold_warehouse_lock
from dango_dagster.defs.settings import config_for
from dango_dagster.errors import SnapshotError
from dango_dagster.lake import lake_for, open_published

__all__ = ["DangoDuckDBResource", "current_run"]


def current_run(fallback: dg.InitResourceContext | None = None) -> tuple[RunHandle, str]:
    """The run (and a label for the lock's holder info) of the step executing right now.

    A resource's ``get_connection()`` has no context argument; Dagster knows the running step.
    Outside a step (a resource used in a sensor, say), the run the resource was set up for.
    """
    try:
        step = dg.OpExecutionContext.get()
    except Exception:  # noqa: BLE001 - no step running in this thread
        step = None
    if step is not None:
        keys = sorted(key.to_user_string() for key in step.selected_asset_keys)
        what = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "") if keys else step.op.name
        return RunHandle.of(step), f"duckdb write: {what}"
    if fallback is None:
        raise dg.DagsterInvariantViolationError(
            "DangoDuckDBResource.get_connection() takes the warehouse lock for a run: call it "
            "inside an asset or op."
        )
    return RunHandle.of(fallback), "duckdb write"


class DangoDuckDBResource(DuckDBResource):
    """Read-write connections to a Dango project's warehouse, each holding the warehouse lock.

    .. code-block:: python

        @dg.asset(partitions_def=daily)
        def events(context, duckdb: DuckDBResource):  # a DangoDuckDBResource at run time
            with duckdb.get_connection() as con:  # queues for the lock, then writes
                con.execute("insert into raw_app.events ...")

        resources={"duckdb": DangoDuckDBResource(project_dir="/path/to/project")}

    Hold the connection only as long as you write: the lock is released when the ``with`` block
    ends, and every other writer (dlt, dbt, Dango's own CLI) waits meanwhile.
    """

    project_dir: str = Field(description="The Dango project folder whose warehouse this writes.")
    database: str = Field(
        default="",
        description=(
            "Leave empty: the project's warehouse (its DuckDB file, or its DuckLake attached as "
            "`lake` when warehouse.kind is ducklake)."
        ),
    )
    queue_timeout_seconds: float | None = Field(
        default=None, description="Override of the project's lock.queue_timeout_seconds."
    )
    report_interval_seconds: float = Field(
        default=5.0, description="How often a waiting step logs who it is waiting for."
    )
    _init_context: dg.InitResourceContext | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._init_context = context

    def project_config(self) -> ProjectConfig:
        return config_for(self.project_dir)

    def _database(self, config: ProjectConfig) -> str:
        return self.database or str(config.warehouse_path)

    def _duckdb_config(self) -> dict[str, Any]:
        return {"custom_user_agent": "dagster", **self.connection_config}

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection, opened after taking the warehouse lock and closed before
        releasing it."""
        config = self.project_config()
        run, operation = current_run(self._init_context)
        with hold_warehouse_lock(
            config,
            run,
            operation,
            "data_load",
            queue_timeout=self.queue_timeout_seconds,
            report_interval=self.report_interval_seconds,
        ):
            if config.settings.warehouse.kind == "ducklake" and not self.database:
                conn = lake_for(config).connect()  # the lake attached and in use, as `lake`
            else:
                config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
                conn = duckdb.connect(self._database(config), config=self._duckdb_config())
            try:
                yield conn
            finally:
                conn.close()

    @contextlib.contextmanager
    def get_snapshot_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the published snapshot; takes no lock and blocks no one."""
        config = self.project_config()
        if config.settings.warehouse.kind == "ducklake":  # the pinned DuckLake snapshot
            with open_published(config) as pinned:
                yield pinned
            return
        path = config.published_snapshot_path
        if not path.exists():
            raise SnapshotError(
                f"No published snapshot at {path} yet.",
                hint="Materialize the project's snapshot asset (or run `dango-dagster sync`).",
            )
        conn = duckdb.connect(str(path), read_only=True, config=self._duckdb_config())
        try:
            yield conn
        finally:
            conn.close()
