"""The sensor path of the pipeline benchmark: ``dagster dev`` in the background, a CSV dropped
into ``data/uploads/``, and the run the ``uploads_sensor`` launches, timed from the instance.

The run's duration is what the web UI shows for it: ``end_time - create_timestamp`` (the sensor
creates the run; the daemon then launches a fresh worker process that loads the code location and
executes). ``start_time - create_timestamp`` is that launch overhead. ``dagster dev`` is started in
its own process group and the whole group is killed on the way out, errors included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.dagster_run import RunRecord

from dango_dagster.config import REPO_ROOT, ProjectConfig, shipped_file

SENSOR_TAG = "dagster/sensor_name"
UPLOADS_SENSOR = "uploads_sensor"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
_DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says what was seen (and where the logs are)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_figures(instance: dg.DagsterInstance, record: RunRecord) -> dict[str, Any]:
    """Seconds from a run record: created -> started (launch) -> ended (execution), plus the
    run's own timeline from its event log (queue, worker start, each step)."""
    created = record.create_timestamp.timestamp()
    start, end = record.start_time, record.end_time
    return {
        "run_id": record.dagster_run.run_id,
        "status": record.dagster_run.status.value,
        "created": created,
        "run_seconds": (end - created) if end else None,
        "launch_seconds": (start - created) if start else None,
        "execution_seconds": (end - start) if start and end else None,
        "phases": run_phases(instance, record.dagster_run.run_id, created),
    }


def run_phases(instance: dg.DagsterInstance, run_id: str, created: float) -> dict[str, float]:
    """Where a run's time went, from its events: queue, worker process, steps, the rest."""
    marks: dict[str, float] = {}
    steps: dict[str, float] = {}
    opened: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        kind = entry.dagster_event_type.name if entry.dagster_event_type else ""
        if kind in ("RUN_ENQUEUED", "RUN_STARTING", "RUN_START", "RUN_SUCCESS"):
            marks.setdefault(kind, entry.timestamp)
        elif kind == "ENGINE_EVENT" and (entry.message or "").startswith("Started process"):
            marks.setdefault("PROCESS", entry.timestamp)
        elif kind == "STEP_START" and entry.step_key:
            opened[entry.step_key] = entry.timestamp
        elif kind == "STEP_SUCCESS" and entry.step_key in opened:
            steps[f"step {entry.step_key}"] = entry.timestamp - opened[entry.step_key]
    phases: dict[str, float] = {}
    if "RUN_ENQUEUED" in marks:
        phases["created->enqueued"] = marks["RUN_ENQUEUED"] - created
        phases["enqueued->dequeued"] = marks.get("RUN_STARTING", created) - marks["RUN_ENQUEUED"]
    if "PROCESS" in marks and "RUN_STARTING" in marks:
        phases["worker spawned"] = marks["PROCESS"] - marks["RUN_STARTING"]
        phases["worker imports+definitions"] = marks.get("RUN_START", created) - marks["PROCESS"]
    elif "RUN_START" in marks:
        phases["created->run start"] = marks["RUN_START"] - created
    phases.update(steps)
    if "RUN_START" in marks and "RUN_SUCCESS" in marks:
        in_run = marks["RUN_SUCCESS"] - marks["RUN_START"]
        phases["run start->end outside steps"] = in_run - sum(steps.values())
    return phases


def _sensor_runs(instance: dg.DagsterInstance) -> list[RunRecord]:
    return list(
        instance.get_run_records(dg.RunsFilter(tags={SENSOR_TAG: UPLOADS_SENSOR}), limit=20)
    )


@dataclass
class DagsterDev:
    """``dagster dev`` for one project, in the background, with its own process group."""

    config: ProjectConfig
    dagster_home: Path
    log_path: Path
    startup_timeout: float = 240.0
    run_timeout: float = 900.0

    def __post_init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0  # the web server's, once started
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        self.drops = 0

    def __enter__(self) -> DagsterDev:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "DANGO_PROJECT_DIR": str(self.config.root),
        }
        cmd = [str(Path(sys.executable).parent / "dagster"), "dev"]
        self.port = free_port()
        cmd += ["-w", str(shipped_file("workspace.yaml")), "-p", str(self.port)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: one killpg ends all of it
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        time.sleep(1)  # let the webserver, daemon and code server exit after their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"dagster dev exited ({self.proc.returncode}); see {self.log_path}")

    def _wait(self, what: str, timeout: float, probe: Any) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            found = probe()
            if found:
                return found
            time.sleep(0.25)
        raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.log_path}")

    def _finished(self, run_id: str) -> RunRecord:
        def probe() -> RunRecord | None:
            records = self.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
            if records and records[0].dagster_run.status in _DONE:
                return records[0]
            return None

        record = self._wait(f"run {run_id} to finish", self.run_timeout, probe)
        if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            raise BenchError(f"sensor run {run_id} ended {record.dagster_run.status.value}")
        return record

    def wait_idle(self, timeout: float = 900.0) -> None:
        """No run queued or running (e.g. one launched by automation after ours)."""
        self._wait(
            "the instance to be idle",
            timeout,
            lambda: not self.instance.get_run_records(dg.RunsFilter(statuses=_ACTIVE), limit=1),
        )

    def wait_sensor_ticked(self, name: str = UPLOADS_SENSOR, after: float = 0.0) -> None:
        """Until the daemon has evaluated sensor ``name`` (after ``after``, a Unix time)."""

        def ticked() -> bool:
            for state in self.instance.all_instigator_state():
                if state.instigator_name == name:
                    origin, selector = state.instigator_origin_id, state.selector_id
                    ticks = self.instance.get_ticks(origin, selector, limit=1)
                    return bool(ticks) and ticks[0].timestamp > after
            return False

        self._wait(f"a tick of {name}", self.startup_timeout, ticked)

    def startup_run(self) -> dict[str, Any]:
        """On a project never loaded, the sensor's first tick loads it: that run is the warm-up.

        (On a synced project the sensor starts from the loaded files and launches nothing.)
        """
        before = {r.dagster_run.run_id for r in _sensor_runs(self.instance)}

        def new_run() -> RunRecord | None:
            fresh = [r for r in _sensor_runs(self.instance) if r.dagster_run.run_id not in before]
            return fresh[0] if fresh else None

        started = time.monotonic()
        record = self._wait("the first uploads_sensor run", self.startup_timeout, new_run)
        figures = run_figures(self.instance, self._finished(record.dagster_run.run_id))
        figures["dev_start_to_end_seconds"] = time.monotonic() - started
        self.wait_idle()
        return figures

    def sensor_run(self) -> dict[str, Any]:
        """Drop a small orders file, time the run the sensor launches for it."""
        self.wait_idle()
        before = {r.dagster_run.run_id for r in _sensor_runs(self.instance)}
        self.drops += 1
        dropped = _drop_orders_csv(self.config, self.drops)
        runs_before = {r.dagster_run.run_id for r in self.instance.get_run_records(limit=50)}

        def new_run() -> RunRecord | None:
            fresh = [r for r in _sensor_runs(self.instance) if r.dagster_run.run_id not in before]
            return fresh[0] if fresh else None

        record = self._wait("a run for the dropped file", 120.0, new_run)
        figures = run_figures(self.instance, self._finished(record.dagster_run.run_id))
        figures["drop_to_end_seconds"] = figures["created"] + figures["run_seconds"] - dropped
        figures["tick_seconds"] = figures["created"] - dropped
        self.wait_idle()
        others = [
            dict(r.dagster_run.tags)
            for r in self.instance.get_run_records(limit=50)
            if r.dagster_run.run_id not in runs_before and r.dagster_run.run_id != figures["run_id"]
        ]
        figures["other_runs"] = len(others)  # e.g. declarative automation launching a second run
        return figures


def _drop_orders_csv(config: ProjectConfig, number: int) -> float:
    """A new orders file (10 orders with fresh ids), written beside and renamed into place."""
    folder = config.uploads_dir / "orders"
    first = 10_000_000 + number * 10
    lines = ["order_id,customer_id,order_date,status"]
    lines += [f"{first + i},1,2025-06-30,placed" for i in range(10)]
    tmp = folder / f".orders_bench_{number:04d}.csv.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    final = folder / f"orders_bench_{number:04d}.csv"
    os.replace(tmp, final)
    return final.stat().st_mtime
