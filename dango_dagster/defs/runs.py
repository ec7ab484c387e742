"""A run's own bookkeeping, so a dead run never looks alive and never blocks anyone.

Every run records which process runs it (``dango/pid``, ``dango/process_start_time``,
``dango/host`` run tags, and the same in its status file), and writes its own final state
(``completed``, ``failed`` with the cause, ``interrupted``) into its status file the moment it
ends: no sensor tick later, no daemon PID in the file.

A run whose process died (``kill -9``, OOM, a crash on a full disk) cannot write anything. The
next opportunity reconciles it: the next run (CLI or daemon), the ``dead_runs_sensor`` tick, and,
for status files only, ``dango-dagster lock status``. Its Dagster run is marked failed with the
reason ("process 1234 gone during dbt build") and its status file ``interrupted``. The process
start time tells a dead run from a live process that reuses its PID. Nothing else needs cleaning:
the warehouse lock is the kernel's and was freed when the process died.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import DEAD_RUNS_SENSOR, TAG_HOST, TAG_PID, TAG_PROCESS_START
from dango_dagster.defs.failures import FailureExplanation, explain_step_failure
from dango_dagster.defs.ingestion.sources import pipelines_root
from dango_dagster.disk import prune_load_packages, prune_logs
from dango_dagster.lock.info import process_gone_reason
from dango_dagster.sync_status import (
    FINISHED_PHASES,
    PHASE_ACTIVITY,
    SyncStatus,
    cleanup_finished,
    mark_interrupted,
    read_status,
    reconcile_status_files,
    status_path,
    sync_id_for_run,
    this_process,
)

_UNFINISHED = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def identity_tags() -> dict[str, str]:
    """Run tags naming this process as the run's (set when the run starts executing here)."""
    me = this_process()
    return {
        TAG_PID: str(me["pid"]),
        TAG_PROCESS_START: repr(me["process_start_time"] or ""),
        TAG_HOST: me["hostname"],
    }


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


def reconcile_dead_runs(instance: dg.DagsterInstance, config: ProjectConfig) -> list[str]:
    """Mark runs whose process is gone failed in Dagster and ``interrupted`` in their status
    file; returns one line per run fixed. Cheap: one query of unfinished runs, a stat each."""
    fixed: list[str] = []
    for data in reconcile_status_files(config.state_dir):
        fixed.append(f"run {data.get('run_id', '?')[:8]}: {data['message']}")
    for run in instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED), limit=200):
        reason = run_gone_reason(run, config.state_dir)
        if reason is None:
            continue
        path = status_path(config.state_dir, sync_id_for_run(run.run_id))
        status = read_status(path)
        if status is not None and status.get("phase") not in FINISHED_PHASES:
            mark_interrupted(path, status, reason)
        message = (
            f"Run {run.run_id[:8]} died: {reason}. Marked failed by dango-dagster (PID "
            f"{os.getpid()}); the warehouse lock was freed by the kernel when it died."
        )
        with contextlib.suppress(Exception):  # another reconciler got there first
            instance.report_run_failed(run, message=message)
        fixed.append(message)
    return fixed


class RunRecorder:
    """The bookkeeping of one run in this process: identity at the start, final state at the end.

    Used by the executor for runs launched by the daemon (``dagster dev``) and by
    ``dango-dagster sync`` for its in-process runs, so both record the same.
    """

    def __init__(self, instance: dg.DagsterInstance, config: ProjectConfig, run_id: str) -> None:
        self.instance = instance
        self.config = config
        self.run_id = run_id
        self.started = time.monotonic()
        self.failures: list[FailureExplanation] = []
        self.rows_loaded = 0
        self.log_path = config.logs_dir / f"sync_{sync_id_for_run(run_id)}.log"

    def start(self) -> None:
        with contextlib.suppress(Exception):
            reconcile_dead_runs(self.instance, self.config)
        with contextlib.suppress(Exception):
            self.instance.add_run_tags(self.run_id, identity_tags())
        status = SyncStatus.open(self.config.state_dir, self.run_id)
        current = read_status(status.path)
        phase = (current or {}).get("phase", "queued")
        status.update(phase if phase not in FINISHED_PHASES else "queued", "Run started")

    def observe(self, event: dg.DagsterEvent) -> None:
        if event.is_step_failure:
            self.failures.append(explain_step_failure(event, self.config))
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            if mat.asset_key.path[0].startswith("raw_"):
                rows = mat.metadata.get("dagster/row_count")
                self.rows_loaded += int(getattr(rows, "value", 0) or 0)

    def finish(self, interrupted_by: str | None = None) -> dict[str, Any]:
        """Write the run's final state into its status file; returns it."""
        status = SyncStatus.open(self.config.state_dir, self.run_id)
        before = read_status(status.path) or {}
        seconds = round(time.monotonic() - self.started, 3)
        if before.get("phase") in FINISHED_PHASES and before.get("pid") == os.getpid():
            return before  # already final (the gate's lock timeout says more than we could)
        interrupted = interrupted_by or next(
            ("an interrupt" for f in self.failures if f.interrupted), None
        )
        if interrupted:
            during = before.get("phase", "queued")
            status.update(
                "interrupted",
                f"Interrupted by {interrupted} during {PHASE_ACTIVITY.get(during, during)}",
                interrupted_during=during,
                error="interrupted",
                seconds=seconds,
            )
        elif self.failures:
            first = self.failures[0]
            status.update(
                "failed",
                first.cause,
                fix=first.fix,
                error="disk_full" if first.disk_full else "step_failure",
                step=first.step,
                seconds=seconds,
                log_file=str(self.log_path),
            )
        else:
            status.update(
                "completed",
                f"Sync finished in {seconds:.1f} s ({self.rows_loaded} rows loaded)",
                rows_loaded=self.rows_loaded,
                seconds=seconds,
            )
        return read_status(status.path) or {}

    def prune(self) -> None:
        """Delete what older runs left behind (best effort: pruning never fails a run)."""
        with contextlib.suppress(Exception):
            prune_load_packages(pipelines_root(self.config))
        with contextlib.suppress(Exception):
            prune_logs(self.config.logs_dir)
        with contextlib.suppress(Exception):
            prune_run_history(self.instance, self.config.automation.keep_runs, self.run_id)

    def record_traceback(self) -> None:
        """Append each failed step's full traceback to the run's log file."""
        if not self.failures:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            for failure in self.failures:
                log.write(f"\n==== step {failure.step} failed ====\n{failure.traceback}\n")


_FINISHED_RUNS = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]
# Deletions per run: enough to catch up quickly, bounded so a run never ends slowly.
_MAX_DELETIONS = 50


def prune_run_history(instance: dg.DagsterInstance, keep: int, current_run_id: str) -> int:
    """Delete the oldest finished runs beyond the newest ``keep`` (event log and compute logs)."""
    ids = instance.get_run_ids(dg.RunsFilter(statuses=_FINISHED_RUNS), limit=keep + _MAX_DELETIONS)
    removed = 0
    for run_id in ids[keep:]:
        if run_id == current_run_id:
            continue
        instance.delete_run(run_id)
        # On SQLite storage, deleting a run empties its event-log file but leaves the file (and
        # its compute logs); remove both, or the disk still grows by ~0.4 MB a run.
        with contextlib.suppress(Exception):
            root = Path(instance.root_directory)
            (root / "history" / "runs" / f"{run_id}.db").unlink(missing_ok=True)
            shutil.rmtree(root / "storage" / run_id, ignore_errors=True)
        removed += 1
    return removed


class _RecordingExecutor(dg.Executor):
    """Dagster's in-process executor, plus the run's bookkeeping around its steps."""

    def __init__(self, inner: dg.Executor, config: ProjectConfig) -> None:
        self._inner = inner
        self._config = config

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        recorder = RunRecorder(plan_context.instance, self._config, plan_context.run_id)
        recorder.start()
        interrupted: str | None = "an interrupt"
        try:
            for event in self._inner.execute(plan_context, execution_plan):
                recorder.observe(event)
                yield event
            interrupted = None
        finally:
            recorder.record_traceback()
            recorder.finish(interrupted_by=interrupted)
            recorder.prune()


def recording_executor(config: ProjectConfig) -> dg.ExecutorDefinition:
    """The in-process executor of this project's runs, recording each run's process and end."""
    base = dg.in_process_executor
    creation_fn = base.executor_creation_fn
    assert creation_fn is not None

    def create(init_context: dg.InitExecutorContext) -> dg.Executor:
        return _RecordingExecutor(creation_fn(init_context), config)

    return dg.ExecutorDefinition(
        name=base.name,
        config_schema=cast(Any, base.config_schema),
        requirements=base.get_requirements,
        executor_creation_fn=create,
        description="In-process executor that records the run's process and its final state.",
    )


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
