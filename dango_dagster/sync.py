"""Run the pipeline through Dagster from a terminal: ``dango-dagster sync`` and ``demo run``.

The run is recorded in the project's Dagster instance (so ``dagster dev`` shows it) and executes in
this process with the in-process executor: no daemon, no extra process per step.
"""

from __future__ import annotations

import contextlib
import shutil
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
    META_PUBLISHED_PATH,
    META_ROW_COUNT,
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


@dataclass
class PipelineResult:
    run_id: str
    success: bool
    seconds: float
    tables: list[TableResult] = field(default_factory=list)
    snapshot_path: str | None = None
    error: str | None = None
    lock_timeout: bool = False

    @property
    def rows_loaded(self) -> int:
        return sum(t.rows or 0 for t in self.tables if t.key.startswith("raw_"))


def _selection(config: ProjectConfig, sources: Sequence[str] | None) -> Any:
    import dagster as dg

    if not sources:
        return dg.AssetSelection.all()
    for name in sources:
        config.source(name)  # clear error for an unknown source
    return dg.AssetSelection.groups(*(f"raw_{name}" for name in sources)).downstream()


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
) -> PipelineResult:
    """Materialize the selected sources, the dbt models downstream and the snapshot.

    ``wait_seconds=None`` fails at once if another process holds the lock (the CLI's semantics);
    a number lets the run queue that long (the ``dango/lock_timeout`` tag). ``quiet`` keeps the
    terminal for ``progress``: dbt's output goes to ``.dango/logs/sync_<id>.log`` and only
    Dagster's warnings and errors are printed (everything is in the run's event log anyway).
    """
    from dango_dagster.defs.builder import build_definitions

    started = time.monotonic()
    instance = instance or open_instance(config)
    defs = build_definitions(config)
    job = defs.resolve_job_def(PIPELINE_JOB)
    selection = _selection(config, sources).resolve(defs.resolve_asset_graph())
    run_id = str(uuid.uuid4())
    tags = {TAG_LAUNCHED_BY: launched_by}
    if wait_seconds is not None:
        tags[TAG_LOCK_TIMEOUT] = str(wait_seconds)
    cleanup_finished(config.state_dir, config.automation.status_keep_hours * 3600)
    status = SyncStatus(config.state_dir, run_id)
    status.update("queued", f"Sync of {', '.join(sources) if sources else 'all sources'} queued")

    stop = threading.Event()
    watcher = None
    if progress is not None:
        path = status_path(config.state_dir, status.sync_id)
        watcher = threading.Thread(target=_watch_status, args=(path, stop, progress), daemon=True)
        watcher.start()
    run_config: dict[str, Any] = {}
    log_file = config.logs_dir / f"sync_{status.sync_id}.log"
    with contextlib.ExitStack() as stack:
        if quiet:
            run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
            config.logs_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(log_file.open("w"))))
        stack.callback(stop.set)
        result = job.execute_in_process(
            run_config=run_config,
            instance=instance,
            asset_selection=sorted(selection, key=lambda k: k.to_user_string()),
            run_id=run_id,
            tags=tags,
            raise_on_error=False,
        )
    if watcher is not None:
        watcher.join(timeout=1)

    outcome = PipelineResult(run_id=run_id, success=result.success, seconds=0.0)
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            mat = event.step_materialization_data.materialization
            meta = dict(mat.metadata)
            outcome.tables.append(
                TableResult(
                    key=mat.asset_key.to_user_string(),
                    rows=_metadata_value(meta, META_ROW_COUNT),
                    lock_wait_seconds=_metadata_value(meta, META_LOCK_WAIT),
                )
            )
            if META_PUBLISHED_PATH in meta:
                outcome.snapshot_path = str(_metadata_value(meta, META_PUBLISHED_PATH))
        elif event.event_type_value == "STEP_FAILURE" and outcome.error is None:
            err = event.step_failure_data.error
            user = event.step_failure_data.user_failure_data
            outcome.error = (user.description if user and user.description else None) or (
                err.message.strip() if err else "step failed"
            )
            # The gate attaches the holder to the failure it raises when the lock stays taken.
            outcome.lock_timeout = bool(user and META_LOCK_HOLDER in user.metadata)
    outcome.seconds = time.monotonic() - started
    if outcome.success:
        status.update(
            "completed",
            f"Sync finished in {outcome.seconds:.1f} s ({outcome.rows_loaded} rows loaded)",
        )
    elif (read_status(status.path) or {}).get("phase") != "failed":  # the gate may have said why
        status.update("failed", outcome.error or "run failed", error="step_failure")
    if progress is not None:
        progress(read_status(status.path) or {})
    return outcome
