"""The package layout's promise: the lock, the snapshots and the query API never import Dagster.

They run in processes that must start fast and stay small (``lock status``, notebooks, the API
server), and a Dango user without Dagster's runtime in the loop relies on them. Each import runs
in a fresh interpreter, because this test process may already have Dagster loaded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

DAGSTER_FREE = [
    "dango_dagster",  # the public API is lazy: importing the package imports no Dagster
    "dango_dagster.lock",
    "dango_dagster.lake",
    "dango_dagster.snapshots",
    "dango_dagster.notebook",
    "dango_dagster.api.app",
    "dango_dagster.api.client",
    "dango_dagster.sync_status",
    "dango_dagster.config",
    "dango_dagster.errors",
    "dango_dagster.constants",
    "dango_dagster.cli",
]


@pytest.mark.parametrize("module", DAGSTER_FREE)
def test_module_imports_no_dagster(module: str) -> None:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'dagster', 'dagster_dbt', 'dagster_dlt', 'dagster_duckdb'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", f"{module} pulled in {out.stdout.strip()}"


def test_public_lock_api_keeps_its_old_import_path() -> None:
    """``from dango_dagster.lock import DbtLock, DbtLockTimeout, read_lock_holder`` (the seed's)."""
    from dango_dagster.lock import DbtLock, DbtLockTimeout, read_lock_holder
    from dango_dagster.notebook import connect

    assert callable(read_lock_holder) and callable(connect)
    assert issubclass(DbtLockTimeout, Exception) and DbtLock.__module__ == "dango_dagster.lock.core"


def test_every_error_is_one_dango_error_with_its_old_import_path_and_base() -> None:
    """One hierarchy the CLI maps in one place, without breaking code that caught the old bases."""
    from dango_dagster.api.client import QueryError
    from dango_dagster.api.errors import ApiError, SqlRejected
    from dango_dagster.api.keys import KeyStoreError
    from dango_dagster.config import ProjectConfigError
    from dango_dagster.defs.ingestion.sources import SourceError
    from dango_dagster.demo import DemoProjectError
    from dango_dagster.errors import DangoError
    from dango_dagster.lock import DbtLockError, DbtLockTimeout
    from dango_dagster.snapshots import InvalidUsernameError, SnapshotError, WarehouseMissingError
    from dango_dagster.snapshots.copy import ShortCopyError

    old_bases = {
        QueryError: RuntimeError,
        ApiError: Exception,
        SqlRejected: ApiError,
        KeyStoreError: ValueError,
        ProjectConfigError: ValueError,
        SourceError: ProjectConfigError,
        DemoProjectError: RuntimeError,
        DbtLockError: RuntimeError,
        DbtLockTimeout: DbtLockError,
        SnapshotError: RuntimeError,
        WarehouseMissingError: SnapshotError,
        InvalidUsernameError: ValueError,
        ShortCopyError: OSError,
    }
    for cls, base in old_bases.items():
        assert issubclass(cls, DangoError) and issubclass(cls, base), cls
        assert cls.__module__ == "dango_dagster.errors", cls
        assert isinstance(cls.exit_code, int) and cls.exit_code > 0
