"""Shared fixtures. Anything about locking uses real OS processes, never threads."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PgServer, find_pg_bindir

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """An empty Dango project folder (``.dango/state`` and ``data/``) in a temporary folder."""
    root = tmp_path / "project"
    (root / ".dango" / "state").mkdir(parents=True)
    (root / "data").mkdir()
    return root


@pytest.fixture
def python_exe() -> str:
    """The interpreter of this venv, for child processes."""
    return sys.executable


@pytest.fixture(autouse=True)
def _no_project_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's own DANGO_PROJECT_DIR or DAGSTER_HOME by accident."""
    monkeypatch.delenv("DANGO_PROJECT_DIR", raising=False)
    for name in ("DANGO_LOCK_BACKEND", "DANGO_LOCK_DSN", "DANGO_LOCK_KEY", "DANGO_LAKE_CATALOG"):
        monkeypatch.delenv(name, raising=False)
    if "DAGSTER_HOME" in os.environ:
        monkeypatch.delenv("DAGSTER_HOME")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL for the whole session (initdb costs seconds), with databases
    ``dagster``, ``lock`` and ``lake``; skipped, with the reason, where PostgreSQL is missing."""
    if find_pg_bindir() is None:
        pytest.skip("no PostgreSQL binaries (initdb) on this machine: apt-get install postgresql")
    with PgServer(databases=("dagster", "lock", "lake")) as server:
        yield server
