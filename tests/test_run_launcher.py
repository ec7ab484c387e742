"""WarmRunLauncher without ``dagster dev``: its version fence, its health check, and a
pre-started worker's life as a real process (tests/test_web_ui.py launches runs through it).

The worker here loads a tiny code location of its own (``tiny_location.py`` written per test), so
each test costs a Dagster import, not the demo's definitions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest

from dango_dagster.constants import TAG_HOST, TAG_PID, TAG_PROCESS_START
from dango_dagster.defs import _compat
from dango_dagster.defs.run_launcher import WarmRunLauncher
from dango_dagster.defs.runs import identity_tags

TINY = """\
import dagster as dg


@dg.op
def hello() -> int:
    return 1


@dg.job
def tiny_job() -> None:
    hello()


defs = dg.Definitions(jobs=[tiny_job])
"""

# Runs in a child process: starts a worker for the tiny location, says READY once the worker has
# loaded it, then waits to be killed (the test SIGKILLs it, as the OOM killer would a daemon).
STARTER = """\
import sys, time
import dagster as dg
sys.path.insert(0, sys.argv[1])
import tiny_location
from dango_dagster.defs.run_launcher import WarmWorker, WorkerTarget

instance = dg.DagsterInstance.from_config(sys.argv[2])
origin = dg.reconstructable(tiny_location.tiny_job).get_python_origin().repository_origin
target = WorkerTarget("tiny", "server-1", origin, sys.executable)
after = int(sys.argv[3]) if len(sys.argv) > 3 else None
worker = WarmWorker.start(target, dg.serialize_value(instance.get_ref()), after)
print("WORKER", worker.proc.pid, flush=True)
print("READY" if worker.wait_ready(120) else "NOT-READY", flush=True)
time.sleep(600)
"""


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_launcher:\n  module: dango_dagster.defs.run_launcher\n  class: WarmRunLauncher\n"
        "telemetry:\n  enabled: false\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _run_with_tags(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    @dg.op
    def noop() -> None:
        return None

    @dg.job
    def recorded() -> None:
        noop()

    result = recorded.execute_in_process(instance=instance)
    instance.add_run_tags(result.run_id, tags)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return run


def test_outside_the_known_dagster_series_the_launcher_is_the_stock_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert _compat.warm_launch_unsupported() is None  # the installed Dagster is the known one
    for version in ("1.14.0", "1.12.9", "2.0.0"):
        reason = _compat.warm_launch_unsupported(version)
        assert reason is not None and version in reason and "stock" in reason

    monkeypatch.setattr(dg, "__version__", "1.14.0")
    with caplog.at_level(logging.WARNING):
        launcher = WarmRunLauncher()
    assert not launcher.supports_check_run_worker_health  # exactly DefaultRunLauncher's answer
    assert any("1.14.0" in r.getMessage() and "stock" in r.getMessage() for r in caplog.records)


def test_shipped_settings_configure_the_warm_launcher(instance: dg.DagsterInstance) -> None:
    from dango_dagster.config import shipped_file

    assert "class: WarmRunLauncher" in shipped_file("dagster_home", "dagster.yaml").read_text()
    assert isinstance(instance.run_launcher, WarmRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health


def test_health_check_fails_a_run_whose_recorded_process_is_gone(
    instance: dg.DagsterInstance,
) -> None:
    launcher = instance.run_launcher
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        me = identity_tags()
        alive_run = _run_with_tags(
            instance, {TAG_PID: str(live.pid), TAG_PROCESS_START: "", TAG_HOST: me[TAG_HOST]}
        )
        gone_run = _run_with_tags(instance, {**me, TAG_PID: str(dead.pid)})
        unrecorded = _run_with_tags(instance, {})

        assert launcher.check_run_worker_health(alive_run).status.value == "RUNNING"
        assert launcher.check_run_worker_health(unrecorded).status.value == "RUNNING"
        gone = launcher.check_run_worker_health(gone_run)
        assert gone.status.value == "FAILED"
        assert str(dead.pid) in (gone.msg or "")
    finally:
        live.kill()
        live.wait()


def test_an_idle_worker_waits_at_no_cpu_and_exits_when_its_starter_is_killed(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    (tmp_path / "tiny_location.py").write_text(TINY)
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path), str(Path(instance.root_directory))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert starter.stdout is not None
    try:
        worker_pid = int(starter.stdout.readline().split()[1])
        assert starter.stdout.readline().strip() == "READY"
        worker = psutil.Process(worker_pid)
        before = sum(worker.cpu_times()[:2])
        time.sleep(2)
        assert sum(worker.cpu_times()[:2]) - before < 0.02  # blocked on its pipe

        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(10)
        deadline = time.monotonic() + 20
        while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the worker outlived the process that started it"
            time.sleep(0.1)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)


def test_the_next_worker_imports_only_once_the_previous_run_has_ended(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Started beside a run, a worker waits at no CPU until that run's process exits."""
    (tmp_path / "tiny_location.py").write_text(TINY)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path), instance.root_directory, str(running.pid)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert starter.stdout is not None
    try:
        worker = psutil.Process(int(starter.stdout.readline().split()[1]))
        time.sleep(1)  # the interpreter's own start
        before = sum(worker.cpu_times()[:2])
        time.sleep(2)
        assert sum(worker.cpu_times()[:2]) - before < 0.02  # not importing yet
        assert worker.memory_info().rss < 80 * 2**20  # the standard library only, no Dagster
        running.kill()
        running.wait()
        assert starter.stdout.readline().strip() == "READY"
    finally:
        for proc in (running, starter):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
