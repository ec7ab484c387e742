"""The private dagster-dbt/dbt touchpoints behind ``defs/dbt/_compat.py``: on the tested versions
dbt runs in process; on any other version the same resource falls back to dagster-dbt's public
subprocess path, with one warning, and still works (a real ``dbt parse`` each way)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dango_dagster.config import load_config
from dango_dagster.defs.dbt import _compat
from dango_dagster.defs.dbt.assets import build_dbt_resource
from dango_dagster.defs.dbt.inprocess import InProcessDbt
from dango_dagster.demo import init_demo_project


@pytest.fixture
def fresh_check() -> Iterator[None]:
    _compat.supported.cache_clear()
    yield
    _compat.supported.cache_clear()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_demo_project(tmp_path_factory.mktemp("compat") / "shop", rows=10)


def _parse(demo: Path) -> object:
    resource = build_dbt_resource(load_config(demo))
    assert resource.in_process  # the project asks for dbt in process (the default)
    invocation = resource.cli(["parse"], raise_on_error=True)
    invocation.wait()
    assert (demo / "dbt_project" / "target").is_dir()
    return invocation.process


def test_tested_versions_run_dbt_in_process(demo: Path, fresh_check: None) -> None:
    assert _compat.supported()
    assert isinstance(_parse(demo), InProcessDbt)


def test_other_versions_fall_back_to_the_subprocess_with_a_warning(
    demo: Path, fresh_check: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_compat.TESTED, "dagster-dbt", "0.1")
    with pytest.warns(RuntimeWarning, match=r"dbt runs as a subprocess.*dagster-dbt .*0\.1\.x"):
        assert not _compat.supported()
    assert isinstance(_parse(demo), subprocess.Popen)
