"""Shared fixtures. Anything about locking uses real OS processes, never threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
    if "DAGSTER_HOME" in os.environ:
        monkeypatch.delenv("DAGSTER_HOME")
