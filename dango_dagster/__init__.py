"""dango-dagster: Dango's local data stack (dlt -> DuckDB -> dbt -> snapshots) under Dagster, with
one warehouse write lock shared by every writer.

The public API, imported lazily (module ``__getattr__``): ``import dango_dagster.lock`` and
``dango-dagster lock status`` never import Dagster, and a name is imported only when used.

- ``DangoProjectComponent``: a Dango project as a Component of a ``dg`` project
- ``build_dango_defs(project_dir, *, key_prefix=None)``: the same as ``dg.Definitions``
- ``DangoDuckDBResource``: a ``DuckDBResource`` whose connections hold the warehouse lock
  (``get_snapshot_connection()`` reads the published snapshot without it)
- ``DangoDuckDBPandasIOManager``: pandas DataFrames in and out of the warehouse, under the lock
- ``WarehouseLockGate``: the gate resource; ``DbtLock``: the lock itself
- ``DangoError`` and every error class (``dango_dagster.errors``)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dango_dagster.errors import (
    ApiError,
    DangoError,
    DbtLockError,
    DbtLockTimeout,
    DemoProjectError,
    InvalidUsernameError,
    KeyStoreError,
    ProjectConfigError,
    QueryError,
    RunFailedError,
    RunLockTimeoutError,
    ShortCopyError,
    SnapshotError,
    SourceError,
    SqlRejected,
    WarehouseMissingError,
)

if TYPE_CHECKING:
    from dango_dagster.defs.builder import build_dango_defs
    from dango_dagster.defs.component import DangoProjectComponent
    from dango_dagster.defs.gate import WarehouseLockGate
    from dango_dagster.defs.io_manager import DangoDuckDBPandasIOManager
    from dango_dagster.defs.resource import DangoDuckDBResource
    from dango_dagster.lock import DbtLock, read_lock_holder

# name -> module that defines it (imported on first use)
_LAZY = {
    "DangoProjectComponent": "dango_dagster.defs.component",
    "build_dango_defs": "dango_dagster.defs.builder",
    "DangoDuckDBResource": "dango_dagster.defs.resource",
    "DangoDuckDBPandasIOManager": "dango_dagster.defs.io_manager",
    "WarehouseLockGate": "dango_dagster.defs.gate",
    "DbtLock": "dango_dagster.lock",
    "read_lock_holder": "dango_dagster.lock",
}

__all__ = [
    "ApiError",
    "DangoDuckDBPandasIOManager",
    "DangoDuckDBResource",
    "DangoError",
    "DangoProjectComponent",
    "DbtLock",
    "DbtLockError",
    "DbtLockTimeout",
    "DemoProjectError",
    "InvalidUsernameError",
    "KeyStoreError",
    "ProjectConfigError",
    "QueryError",
    "RunFailedError",
    "RunLockTimeoutError",
    "ShortCopyError",
    "SnapshotError",
    "SourceError",
    "SqlRejected",
    "WarehouseLockGate",
    "WarehouseMissingError",
    "build_dango_defs",
    "read_lock_holder",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dango_dagster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    # `dg` finds components with dir(module): the lazy names must be listed.
    return sorted({*globals(), *__all__})
