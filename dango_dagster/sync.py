"""Run the pipeline through Dagster from a terminal: ``dango-dagster sync`` and ``demo run``.

The run is recorded in the project's Dagster instance (so ``dagster dev`` shows it) and executes in
this process with the in-process executor: no daemon, no extra process per step.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dango_dagster.config import ProjectConfig, shipped_file
from dango_dagster.constants import (
    META_LOCK_HOLDER,
    META_LOCK_WAIT,
    META_MATERIALIZED_AS,
    META_PUBLISHED_PATH,
    META_ROW_COUNT,
    META_ROWS_LOADED,
    META_SNAPSHOT_BYTES,
    PIPELINE_JOB,
    TAG_LAUNCHED_BY,
    TAG_LOCK_TIMEOUT,
)
from dango_dagster.lock.primitives import file_mutex
from dango_dagster.sync_status import SyncStatus, cleanup_finished, read_status, status_path

if TYPE_CHECKING:
    import dagster as dg


def ensure_dagster_home(config: ProjectConfig) -> Path:
    """The project's DAGSTER_HOME, created with the shipped instance settings if missing."""
    home = config.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        shutil.copyfile(shipped_file("dagster_home", "dagster.yaml"), settings)
    return home


def open_instance(config: ProjectConfig) -> dg.DagsterInstance:
    """A persistent instance (so `dagster dev` shows the run), pointed at the project's home.

    Opening a new home creates its SQLite storage and runs its migrations; two syncs started at
    once on a fresh project would both do it and one fails on a duplicate alembic version, so
    opening is serialised per home. The home is passed explicitly rather than through
    ``DAGSTER_HOME``, so this process's environment (which ``config.dagster_home`` reads) stays
    as the user set it.
    """
    import dagster as dg

    home = ensure_dagster_home(config)
    with file_mutex(home / ".open.lock"):
        return dg.DagsterInstance.from_config(str(home))


@dataclass
class TableResult:
    key: str
    rows: int | None
    lock_wait_seconds: float | None
    kind: str | None = None  # dbt models: "table" or "view"


@dataclass
class PipelineResult:
    run_id: str
    success: bool
    seconds: float
    tables: list[TableResult] = field(default_factory=list)
    snapshot_path: str | None = None
    snapshot_bytes: int | None = None
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    error: str | None = None
    fix: str | None = None
    log_path: str | None = None
    lock_timeout: bool = False
    interrupted: int | None = None  # the signal that ended the run (SIGINT, SIGTERM)

    @property
    def snapshot_key(self) -> str:
        return "snapshots/warehouse"

    @property
    def rows_loaded(self) -> int:
        return sum(t.rows or 0 for t in self.tables if t.key.startswith("raw_"))


def _selection(
    config: ProjectConfig, sources: Sequence[str] | None, sync_only: bool = False
) -> Any:
    import dagster as dg

    if not sources and not sync_only:
        return dg.AssetSelection.all()
    for name in sources or ():
        config.source(name)  # clear error for an unknown source
    names = list(sources or (s.name for s in config.sources))
    raw = dg.AssetSelection.groups(*(f"raw_{name}" for name in names))
    # sync_only: Dango's schedule type of that name, the sources without dbt and the snapshot.
    return raw if sync_only else raw.downstream()


def _metadata_value(meta: dict[str, Any], key: str) -> Any:
    value = meta.get(key)
    return getattr(value, "value", value)


def _watch_status(path: Path, stop: threading.Event, report: Callable[[dict[str, Any]], None]):
    """Report each change of the run's status file (phase, message) while the run goes on."""
    last: tuple[Any, ...] | None = None
    while not stop.wait(0.2):
        data = read_status(path)
        if not data:
            continue
        key = (data.get("phase"), data.get("message"))
        if key != last:
            last = key
            report(data)


def run_pipeline(
    config: ProjectConfig,
    *,
    sources: Sequence[str] | None = None,
    wait_seconds: float | None = None,
    instance: dg.DagsterInstance | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    launched_by: str = "cli",
    quiet: bool = False,
    handle_signals: bool = False,
    sync_only: bool = False,
) -> PipelineResult:
    """Materialize the selected sources, the dbt models downstream and the snapshot.

    ``wait_seconds=None`` fails at once if another process holds the lock (the CLI's semantics);
    a number lets the run queue that long (the ``dango/lock_timeout`` tag). ``quiet`` keeps the
    terminal for ``progress``: dbt's output and each failed step's traceback go to
    ``.dango/logs/sync_<id>.log``, Dagster prints nothing (everything is in the run's event log).
    ``handle_signals`` (the CLI, on the main thread): SIGINT and SIGTERM end the run at once as
    ``interrupted``, the Dagster run canceled; see :func:`_execute_interruptibly`.
    """
    from dango_dagster.defs.builder import build_definitions
    from dango_dagster.defs.dead_runs import reconcile_dead_runs
    from dango_dagster.defs.runs import RunRecorder, identity_tags

    started = time.monotonic()
    instance = instance or open_instance(config)
    # A sync killed earlier (kill -9, OOM) left its run STARTED and its status file running.
    reconcile_dead_runs(instance, config)
    defs = build_definitions(config)
    job = defs.resolve_job_def(PIPELINE_JOB)
    selection = _selection(config, sources, sync_only).resolve(defs.resolve_asset_graph())
    run_id = str(uuid.uuid4())
    tags = {TAG_LAUNCHED_BY: launched_by, **identity_tags()}
    if wait_seconds is not None:
        tags[TAG_LOCK_TIMEOUT] = str(wait_seconds)
    cleanup_finished(config.state_dir, config.automation.status_keep_hours * 3600)
    status = SyncStatus(config.state_dir, run_id)
    status.update(
        "queued",
        f"Sync of {', '.join(sources) if sources else 'all sources'} queued",
        # Dango's web UI labels a status file by these (it shows ours beside its own).
        sources=list(sources or (s.name for s in config.sources)),
        source_label="dagster",
    )
    recorder = RunRecorder(instance, config, run_id)

    stop = threading.Event()
    watcher = None
    if progress is not None:
        path = status_path(config.state_dir, status.sync_id)
        watcher = threading.Thread(target=_watch_status, args=(path, stop, progress), daemon=True)
        watcher.start()
    run_config: dict[str, Any] = {}
    log_file = recorder.log_path

    def execute() -> dg.ExecuteInProcessResult:
        with contextlib.ExitStack() as stack:
            if quiet:
                config.logs_dir.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(log_file.open("w"))
                stack.enter_context(contextlib.redirect_stdout(out))
            return job.execute_in_process(
                run_config=run_config,
                instance=instance,
                asset_selection=sorted(selection, key=lambda k: k.to_user_string()),
                run_id=run_id,
                tags=tags,
                raise_on_error=False,
            )

    if quiet:
        # Only progress lines and the closing summary reach the terminal: Dagster's console
        # logger would print each failure's traceback, which belongs in the run's log file.
        run_config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    try:
        result = _execute_interruptibly(execute) if handle_signals else execute()
    except _Interrupted as interrupt:
        stop.set()
        if watcher is not None:
            watcher.join(timeout=1)
        return _interrupted_outcome(instance, recorder, interrupt.signum, started)
    finally:
        stop.set()
    if watcher is not None:
        watcher.join(timeout=1)

    outcome = PipelineResult(run_id=run_id, success=result.success, seconds=0.0)
    for event in result.all_events:
        recorder.observe(event)
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            meta = dict(mat.metadata)
            outcome.tables.append(
                TableResult(
                    key=mat.asset_key.to_user_string(),
                    # Rows this sync loaded (file sources: the new and changed files' rows).
                    rows=_metadata_value(meta, META_ROWS_LOADED)
                    if META_ROWS_LOADED in meta
                    else _metadata_value(meta, META_ROW_COUNT),
                    lock_wait_seconds=_metadata_value(meta, META_LOCK_WAIT),
                    kind=_metadata_value(meta, META_MATERIALIZED_AS),
                )
            )
            if META_PUBLISHED_PATH in meta:
                outcome.snapshot_path = str(_metadata_value(meta, META_PUBLISHED_PATH))
                outcome.snapshot_bytes = _metadata_value(meta, META_SNAPSHOT_BYTES)
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            check: Any = event.event_specific_data  # AssetCheckEvaluation for this event type
            if check.passed:
                outcome.checks_passed += 1
            else:
                name = f"{check.asset_key.to_user_string()}:{check.check_name}"
                outcome.checks_failed.append(name)
        elif event.event_type_value == "STEP_FAILURE" and outcome.lock_timeout is False:
            user = event.step_failure_data.user_failure_data
            # The gate attaches the holder to the failure it raises when the lock stays taken.
            outcome.lock_timeout = bool(user and META_LOCK_HOLDER in user.metadata)
    recorder.record_traceback()
    final = recorder.finish()
    recorder.prune()
    if recorder.failures:
        first = recorder.failures[0]
        outcome.error, outcome.fix = first.cause, first.fix
    elif not result.success:
        outcome.error = final.get("message") or "the run failed"
        outcome.fix = f"See the run's log: {log_file}."
    outcome.log_path = str(log_file)
    outcome.seconds = time.monotonic() - started
    if progress is not None:
        progress(final)
    return outcome


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived while a CLI run executed (a BaseException, like Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _execute_interruptibly(execute: Callable[[], Any]) -> Any:
    """Run ``execute`` on a worker thread; a SIGINT/SIGTERM ends the wait at once.

    On the main thread, Dagster would turn a signal into an exception inside the step and then
    wait for it to unwind (dagster-dbt gives dbt 25 s to stop). A user pressing Ctrl-C wants the
    terminal back now, so the main thread only waits, and on a signal raises ``_Interrupted``;
    the caller records the run as interrupted and canceled and the process exits, which frees
    the warehouse lock in the kernel. That is as safe as ``kill -9``, which the warehouse
    survives by design: DuckDB drops an uncommitted transaction, dbt models are replaced
    atomically one by one, and a snapshot is only published after it was verified.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = execute()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            box["error"] = exc
        finally:
            done.set()

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = threading.Thread(target=target, name="dango-run", daemon=True)
        worker.start()
        while not done.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in box:
        raise box["error"]
    return box["result"]


# What each phase's interruption leaves behind, in one clause for the user.
_STATE_AFTER = {
    "queued": "nothing was written; the warehouse is unchanged",
    "lock_waiting": "nothing was written; the warehouse is unchanged",
    "data_load": (
        "raw tables whose load had committed hold the new rows, the others their previous rows;"
        " the dbt models and the published snapshot are unchanged"
    ),
    "dbt": (
        "models dbt had finished are rebuilt, the others keep their previous data; the published"
        " snapshot is unchanged"
    ),
    "snapshot": (
        "the warehouse holds the new data; the published snapshot is still the previous one"
    ),
}


def _interrupted_outcome(
    instance: dg.DagsterInstance, recorder: Any, signum: int, started: float
) -> PipelineResult:
    """Record an interrupted CLI run: status file ``interrupted``, Dagster run canceled."""
    name = signal.Signals(signum).name
    before = read_status(status_path(recorder.config.state_dir, recorder.run_id[:12])) or {}
    phase = str(before.get("phase", "queued"))
    final = recorder.finish(interrupted_by=name)
    with contextlib.suppress(Exception):
        run = instance.get_run_by_id(recorder.run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, message=f"Canceled: {final.get('message')}")
    state = _STATE_AFTER.get(phase, "the warehouse keeps its last committed data")
    activity = final.get("message", "").split(" during ", 1)[-1]
    return PipelineResult(
        run_id=recorder.run_id,
        success=False,
        seconds=time.monotonic() - started,
        error=(
            f"interrupted by {name} during {activity} (run {recorder.run_id[:8]} canceled, "
            f"lock released): {state}. Run the sync again to finish."
        ),
        interrupted=signum,
    )
