"""Make a real sync pause inside its dbt build, for tests that kill or interrupt it there.

A dbt Python model (dbt-duckdb runs it in the dbt process) that sleeps while the environment
variable ``DANGO_TEST_DBT_SLEEP`` names a number of seconds, after touching the file named by
``DANGO_TEST_DBT_MARK``: the test waits for that file, so it knows the sync is mid-build (the
staging models are already rebuilt, the lock is held) without any mock or product hook.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

CLI = str(Path(sys.executable).with_name("dango-dagster"))
SLEEP_ENV = "DANGO_TEST_DBT_SLEEP"
MARK_ENV = "DANGO_TEST_DBT_MARK"

SLEEPING_MODEL = """\
import contextlib
import os
import pathlib
import time


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("fct_orders")  # runs after the marts it depends on: the build is well under way
    seconds = float(os.environ.get("DANGO_TEST_DBT_SLEEP") or 0)
    mark = os.environ.get("DANGO_TEST_DBT_MARK")
    if mark:
        pathlib.Path(mark).touch()
    time.sleep(seconds)
    return session.sql("select 1 as paused")
"""


def add_sleeping_model(project: Path) -> Path:
    """Add ``marts.zz_pause`` to the project's dbt project; returns the model file."""
    from dango_dagster.config import load_config

    path = load_config(project).dbt_project_dir / "models" / "marts" / "zz_pause.py"
    path.write_text(SLEEPING_MODEL)
    return path


def sync_env(sleep: float | None = None, mark: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (SLEEP_ENV, MARK_ENV)}
    env.pop("DAGSTER_HOME", None)
    env.pop("DANGO_PROJECT_DIR", None)
    if sleep is not None:
        env[SLEEP_ENV] = str(sleep)
    if mark is not None:
        env[MARK_ENV] = str(mark)
    return env


def start_sync(
    project: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """``dango-dagster sync`` as a user starts it, in its own process group."""
    return subprocess.Popen(
        [CLI, "sync", "--project", str(project), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else sync_env(),
        start_new_session=True,
    )


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class SlowMotion:
    """Runs process ``pid`` in slow motion (SIGSTOP / SIGCONT, ~5 % of the time running), so a
    test can act inside a window of a few milliseconds (the snapshot copy under the lock)."""

    def __init__(self, pid: int, run_s: float = 0.001, stop_s: float = 0.02) -> None:
        import threading

        self.pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._cycle, args=(run_s, stop_s), daemon=True)
        self._thread.start()

    def _cycle(self, run_s: float, stop_s: float) -> None:
        import signal

        try:
            while not self._stop.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                time.sleep(stop_s)
                os.kill(self.pid, signal.SIGCONT)
                time.sleep(run_s)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        import signal

        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
