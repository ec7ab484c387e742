"""``DangoDuckDBPandasIOManager``: dagster-duckdb-pandas' IO manager, through the warehouse lock.

Stores an asset's pandas DataFrame as a table of the project's warehouse (schema from the asset key
prefix or ``schema``, as the stock IO manager does) and loads it back for downstream assets. Every
connection it opens, for writing and for reading alike, is taken under ``DbtLock`` by the gate's
own code: in DuckDB even a read-only connection from another process blocks writers, so reading the
live file is a write-lock matter too. Downstream readers outside Dagster use the published snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager
from pydantic import Field

from dango_dagster.config import ProjectConfig
from dango_dagster.defs._compat import DbIOManager, TableSlice
from dango_dagster.defs.gate import RunHandle, hold_warehouse_lock
from dango_dagster.defs.settings import config_for

__all__ = ["DangoDuckDBPandasIOManager"]


def _run_of(context: dg.InputContext | dg.OutputContext) -> RunHandle:
    step = context.step_context
    run = step.dagster_run
    return RunHandle(run.run_id, run.tags, context.log, step.instance)


class _LockedDuckDbClient(DuckDbClient):
    """dagster-duckdb's client with ``connect`` holding the warehouse lock around the connection."""

    def __init__(self, config: ProjectConfig, owner: DangoDuckDBPandasIOManager) -> None:
        self._config = config
        self._owner = owner

    @contextlib.contextmanager
    def connect(  # type: ignore[override]  # an instance method where dagster-duckdb has a static one
        self, context: dg.InputContext | dg.OutputContext, table_slice: TableSlice
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        verb = "store" if isinstance(context, dg.OutputContext) else "load"
        table = f"{table_slice.schema}.{table_slice.table}"
        with hold_warehouse_lock(
            self._config,
            _run_of(context),
            f"pandas IO manager: {verb} {table}",
            "data_load",
            queue_timeout=self._owner.queue_timeout_seconds,
        ):
            if not self._owner.database and self._config.settings.warehouse.kind == "ducklake":
                from dango_dagster.lake import connect_warehouse  # the lake attached and in use

                conn = connect_warehouse(self._config, read_only=False)
            else:
                conn = duckdb.connect(
                    self._owner.database or str(self._config.warehouse_path),
                    config={"custom_user_agent": "dagster", **self._owner.connection_config},
                )
            try:
                yield conn
            finally:
                conn.close()


class DangoDuckDBPandasIOManager(DuckDBPandasIOManager):
    """pandas DataFrames in and out of a Dango project's warehouse, under the warehouse lock.

    ``resources={"io_manager": DangoDuckDBPandasIOManager(project_dir="/path/to/project")}``
    """

    project_dir: str = Field(description="The Dango project folder whose warehouse this uses.")
    database: str = Field(
        default="",
        description="Leave empty: the project's warehouse (warehouse.path of its settings).",
    )
    queue_timeout_seconds: float | None = Field(
        default=None, description="Override of the project's lock.queue_timeout_seconds."
    )

    def create_io_manager(self, context: Any) -> DbIOManager:
        config = config_for(self.project_dir)
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        return DbIOManager(
            db_client=_LockedDuckDbClient(config, self),
            database=self.database or str(config.warehouse_path),
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DangoDuckDBPandasIOManager",
        )
