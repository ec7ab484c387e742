"""Dead runs: a run whose process died is marked failed, so it never looks alive or blocks anyone.

A run whose process died (``kill -9``, OOM, a crash on a full disk) cannot write anything. Each
run records its process in run tags (``dango/pid``, ``dango/process_start_time``, ``dango/host``,
see ``runs.identity_tags``), and the next opportunity reconciles it: the next run (CLI or daemon),
the ``dead_runs_sensor`` tick, the run queue (``run_queue.WarehouseRunCoordinator``, for a run
that keeps a queued one waiting) and, for status files only, ``dango-dagster lock status``. Its
Dagster run is marked failed with the reason ("process 1234 gone during dbt build") and its
status file ``interrupted``. The process start time tells a dead run from a live process that
reuses its PID. Nothing else needs cleaning: the warehouse lock is the kernel's and was freed
when the process died.

Kept apart from ``runs`` (the executor's bookkeeping) because the run queue calls it inside the
Dagster daemon and web server: this module imports no dlt, dbt or asset code.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    DEAD_RUNS_SENSOR,
    TAG_HOST,
    TAG_LOCK,
    TAG_LOCK_HOLDER,
    TAG_PID,
    TAG_PROCESS_START,
)
from dango_dagster.lock.info import process_gone_reason
from dango_dagster.sync_status import (
    FINISHED_PHASES,
    PHASE_ACTIVITY,
    cleanup_finished,
    mark_interrupted,
    read_status,
    reconcile_status_files,
    status_path,
    sync_id_for_run,
)

__all__ = [
    "IN_PROGRESS",
    "build_dead_runs_sensor",
    "reconcile_dead_runs",
    "reconcile_run",
    "recorded_process",
    "run_gone_reason",
]

# A run in these has (or is about to have) a process: what a dead process leaves behind.
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def recorded_process(run: dg.DagsterRun) -> tuple[int, str | None, float | None] | None:
    """The process ``run``'s tags name as running it: ``(pid, host, start time)``, or None when
    none is recorded yet (the run has not started executing)."""
    pid_txt = run.tags.get(TAG_PID, "")
    if not pid_txt.isdigit():
        return None
    try:
        start: float | None = float(run.tags.get(TAG_PROCESS_START) or "nan")
    except ValueError:
        start = None
    if start != start:  # NaN: no start time recorded
        start = None
    return int(pid_txt), run.tags.get(TAG_HOST), start


def run_gone_reason(run: dg.DagsterRun, state_dir: Path | None) -> str | None:
    """Why the process recorded in ``run``'s tags no longer runs it ("process 1234 gone during dbt
    build"), or None while it runs, when it is this process, or when no process is recorded yet.
    ``state_dir``: the project's status files, for the phase it died in (None: not named)."""
    recorded = recorded_process(run)
    if recorded is None or recorded[0] == os.getpid():
        return None
    pid, host, start = recorded
    reason = process_gone_reason(pid, host, start)
    if reason is None:
        return None
    status: dict[str, Any] = {}
    if state_dir is not None:
        status = read_status(status_path(state_dir, sync_id_for_run(run.run_id))) or {}
    phase = status.get("interrupted_during") or status.get("phase") or "queued"
    activity = PHASE_ACTIVITY.get(str(phase), "its run")
    if reason.endswith("is gone"):
        return f"process {pid} gone during {activity}"
    return f"{reason}; the run died during {activity}"


def reconcile_run(instance: dg.DagsterInstance, run: dg.DagsterRun, state_dir: Path) -> str | None:
    """Mark ``run`` failed (and its status file ``interrupted``) if the process that ran it is
    gone; returns the line saying so, or None while it lives (or never recorded a process here).

    Idempotent and cheap (a stat of the process), so the run queue may call it every second."""
    reason = run_gone_reason(run, state_dir)
    if reason is None:
        return None
    path = status_path(state_dir, sync_id_for_run(run.run_id))
    status = read_status(path)
    if status is not None and status.get("phase") not in FINISHED_PHASES:
        mark_interrupted(path, status, reason)
    message = (
        f"Run {run.run_id[:8]} died: {reason}. Marked failed by dango-dagster (PID "
        f"{os.getpid()}); the warehouse lock was freed by the kernel when it died."
    )
    with contextlib.suppress(Exception):  # another reconciler got there first
        if TAG_LOCK in run.tags:  # it may have died holding: its tags must not say so for ever
            instance.add_run_tags(run.run_id, {TAG_LOCK: "released", TAG_LOCK_HOLDER: "none"})
        instance.report_run_failed(run, message=message)
    return message


def reconcile_dead_runs(instance: dg.DagsterInstance, config: ProjectConfig) -> list[str]:
    """Mark runs whose process is gone failed in Dagster and ``interrupted`` in their status
    file; returns one line per run fixed. Cheap: one query of unfinished runs, a stat each."""
    fixed: list[str] = []
    for data in reconcile_status_files(config.state_dir):
        fixed.append(f"run {data.get('run_id', '?')[:8]}: {data['message']}")
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS), limit=200):
        message = reconcile_run(instance, run, config.state_dir)
        if message is not None:
            fixed.append(message)
    return fixed


def build_dead_runs_sensor(
    config: ProjectConfig, name: str = DEAD_RUNS_SENSOR
) -> dg.SensorDefinition:
    """Reconciles dead runs every 30 s under ``dagster dev`` (the CLI does it on each sync)."""

    @dg.sensor(
        name=name,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks runs whose process died (kill -9, OOM, a crash) failed, with the reason, and "
            "their status files interrupted, so nothing looks running that is not."
        ),
    )
    def dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        fixed = reconcile_dead_runs(context.instance, config)
        cleanup_finished(config.state_dir, config.automation.status_keep_hours * 3600)
        for line in fixed:
            context.log.warning(line)
        return dg.SkipReason(f"reconciled {len(fixed)} dead run(s)" if fixed else "no dead runs")

    return dead_runs_sensor
