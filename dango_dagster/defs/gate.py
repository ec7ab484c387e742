"""The lock gate: the one door every Dagster write to the warehouse goes through.

A ``ConfigurableResource`` around ``DbtLock``. It decides how long a run may queue for the lock
from who launched it (sensor, schedule, automation, backfill and web UI runs wait; CLI and script
runs fail at once, as Dango's CLI sync does), and makes the wait visible where a Dagster user
looks: the run log, the run's ``dango/lock`` tag, and Dango's status file.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    DAGSTER_FROM_UI_TAG,
    META_LOCK_HELD,
    META_LOCK_HOLDER,
    META_LOCK_WAIT,
    META_LOCK_WAITED_ON,
    QUEUEING_TAGS,
    TAG_LOCK,
    TAG_LOCK_HOLDER,
    TAG_LOCK_TIMEOUT,
    TAG_WAREHOUSE,
)
from dango_dagster.defs.settings import config_for
from dango_dagster.lock import DbtLock, DbtLockTimeout, LockHolder, LockWait
from dango_dagster.sync_status import Phase, SyncStatus

__all__ = [
    "LockSession",
    "RunHandle",
    "WarehouseLockGate",
    "hold_warehouse_lock",
    "holder_tag",
    "launch_kind",
    "lock_timeout_for_run",
    "warehouse_op_tags",
]


def warehouse_op_tags(config: ProjectConfig) -> dict[str, str]:
    """The op tags of an asset that writes ``config``'s warehouse through the gate.

    They name the warehouse (its project folder), so the run queue (``run_queue``) can tell from a
    run's ops, before the run has a process, which warehouse it will wait for, whatever launched
    it (a job, a schedule, a sensor, automation, a backfill, the UI's Materialize button).
    """
    return {TAG_WAREHOUSE: str(config.root)}


def launch_kind(tags: Mapping[str, str]) -> str:
    """Who launched a run, in the words a user would use: sensor, schedule, ... or cli."""
    for tag in QUEUEING_TAGS:
        if tag in tags:
            return tag.split("/", 1)[1].removesuffix("_name").removeprefix("from_")
    if tags.get(DAGSTER_FROM_UI_TAG) == "true":
        return "ui"
    return "cli"


def lock_timeout_for_run(tags: Mapping[str, str], queue_timeout: float) -> float:
    """How long a run may wait for the lock: the queue timeout for unattended runs, else 0.

    The ``dango/lock_timeout`` tag overrides it per run (``dango-dagster sync --wait S`` sets it).
    """
    override = tags.get(TAG_LOCK_TIMEOUT)
    if override is not None:
        try:
            value = float(override)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 86400:
            raise dg.Failure(
                description=(
                    f"Run tag {TAG_LOCK_TIMEOUT}={override!r} is not a number of seconds between "
                    "0 and 86400. Fix the tag (e.g. 300) and launch the run again."
                )
            )
        return value
    return queue_timeout if launch_kind(tags) != "cli" else 0.0


@dataclass
class LockSession:
    """One hold of the lock by a step: how long it waited and how long it held."""

    operation: str
    wait_seconds: float
    acquired_at: float
    released_at: float | None = None
    waited_on: LockHolder | None = None

    @property
    def held_seconds(self) -> float:
        end = self.released_at if self.released_at is not None else time.monotonic()
        return end - self.acquired_at

    def metadata(self) -> dict[str, Any]:
        """The materialization metadata the Dagster UI plots over time."""
        meta: dict[str, Any] = {
            META_LOCK_WAIT: dg.MetadataValue.float(round(self.wait_seconds, 4)),
            META_LOCK_HELD: dg.MetadataValue.float(round(self.held_seconds, 4)),
        }
        if self.waited_on is not None:
            meta[META_LOCK_WAITED_ON] = dg.MetadataValue.text(self.waited_on.describe())
        return meta


@dataclass(frozen=True)
class RunHandle:
    """What the gate needs of the run it holds the lock for: its id and tags, its log, and the
    instance (to tag it). Built from a step's context, or from a resource's init context."""

    run_id: str
    tags: Mapping[str, str]
    log: Any
    instance: dg.DagsterInstance | None

    @classmethod
    def of(
        cls, context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.InitResourceContext
    ) -> RunHandle:
        if isinstance(context, dg.InitResourceContext):
            run = context.dagster_run
            if run is None:
                raise dg.DagsterInvariantViolationError(
                    "The warehouse lock is taken for a run: use this resource inside an asset or "
                    "op, not on its own."
                )
            return cls(run.run_id, run.tags, context.log, context.instance)
        return cls(context.run.run_id, context.run.tags, context.log, context.instance)

    def set_tags(self, value: str, holder: str) -> None:
        """Make the lock state and its holder visible as run tags in the Dagster UI (best
        effort)."""
        if self.instance is not None:
            with contextlib.suppress(Exception):
                self.instance.add_run_tags(self.run_id, {TAG_LOCK: value, TAG_LOCK_HOLDER: holder})


@contextlib.contextmanager
def hold_warehouse_lock(
    config: ProjectConfig,
    run: RunHandle,
    operation: str,
    phase: Phase,
    *,
    queue_timeout: float | None = None,
    report_interval: float = 5.0,
) -> Iterator[LockSession]:
    """Hold the warehouse lock for exactly the write inside the ``with`` block, for ``run``.

    The one implementation of "queue as the launch kind says, and show the wait" that the gate,
    ``DangoDuckDBResource`` and the pandas IO manager all go through.
    """
    tags = run.tags
    if queue_timeout is None:
        queue_timeout = config.lock.queue_timeout_seconds
    timeout = lock_timeout_for_run(tags, queue_timeout)
    status = SyncStatus.open(config.state_dir, run.run_id)
    # The status file's waited_seconds is the run's total: earlier steps' waits plus this one.
    waited_before = float(status.data.get("waited_seconds") or 0.0)
    label = f"{operation} (run {run.run_id[:8]})"
    seen: dict[str, LockHolder | None] = {}

    def on_wait(step: LockWait) -> None:
        holder_txt = step.holder.describe() if step.holder else "a process that just released"
        if "first" not in seen:
            seen["first"] = step.holder
            run.log.warning(
                f"Warehouse is locked by {holder_txt}. {operation} waits up to {timeout:.0f} s "
                f"(run launched by {launch_kind(tags)})."
            )
        else:
            run.log.info(
                f"Still waiting for the warehouse lock after {step.waited_seconds:.0f} s "
                f"of {timeout:.0f} s; held by {holder_txt}."
            )
        if seen.get("tagged") != step.holder:
            seen["tagged"] = step.holder
            run.set_tags("waiting", holder_tag(step.holder))
        status.update(
            "lock_waiting",
            f"{operation} waits for the warehouse lock ({step.waited_seconds:.0f}/{timeout:.0f} s)",
            holder=step.holder.as_dict() if step.holder else None,
            waited_seconds=round(waited_before + step.waited_seconds, 3),
        )

    lock = DbtLock(
        config.root,
        source="dagster",
        operation=label,
        on_wait=on_wait,
        report_interval=report_interval,
    )
    try:
        lock.acquire(timeout=timeout)
    except DbtLockTimeout as exc:
        run.set_tags("timeout", holder_tag(exc.raw_holder))
        holder = exc.raw_holder
        status.update(
            "failed",
            str(exc),
            holder=holder.as_dict() if holder else None,
            error="lock_timeout",
        )
        hint = (
            " This run was not launched by a sensor, schedule or the UI, so it does not queue;"
            f" set the run tag {TAG_LOCK_TIMEOUT}=SECONDS (or `dango-dagster sync --wait S`)"
            " to let it wait."
            if timeout == 0
            else ""
        )
        raise dg.Failure(
            description=f"{exc}{hint}",
            metadata={
                META_LOCK_HOLDER: dg.MetadataValue.json(holder.as_dict() if holder else {}),
                META_LOCK_WAIT: dg.MetadataValue.float(round(exc.waited_seconds, 3)),
            },
        ) from exc
    session = LockSession(
        operation=operation,
        wait_seconds=lock.wait_seconds,
        acquired_at=time.monotonic(),
        waited_on=seen.get("first"),
    )
    run.set_tags("held", f"this run (PID {os.getpid()})")
    if "first" in seen:
        run.log.info(f"Took the warehouse lock after waiting {lock.wait_seconds:.2f} s.")
    status.update(
        phase,
        f"{operation}: writing the warehouse",
        waited_seconds=round(waited_before + lock.wait_seconds, 3),
    )
    try:
        yield session
    finally:
        lock.release()
        session.released_at = time.monotonic()
        run.set_tags("released", "none")


class WarehouseLockGate(dg.ConfigurableResource):
    """Every write to the warehouse in a Dagster run holds ``DbtLock`` through this resource.

    Runs launched by a sensor, a schedule, declarative automation, a backfill or the web UI wait up
    to the queue timeout (``lock.queue_timeout_seconds`` in ``.dango/project.yml``, 300 s); runs
    launched any other way fail at once while another process writes, naming it.
    """

    project_dir: str | None = Field(
        default=None,
        description="Dango project folder; default DANGO_PROJECT_DIR, then the current folder.",
    )
    queue_timeout_seconds: float | None = Field(
        default=None, description="Override of lock.queue_timeout_seconds from project.yml."
    )
    report_interval_seconds: float = Field(
        default=5.0, description="How often a waiting step logs who it is waiting for."
    )

    def project_config(self) -> ProjectConfig:
        """The settings the definitions were built from (read once, not on every write)."""
        return config_for(self.project_dir)

    def queue_reporter(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        operation: str,
        what: str,
    ) -> Callable[[float], None]:
        """A callback for a wait before the lock (``file_mutex``'s ``on_wait``): another run of
        the same source is loading, say. The run shows it as waiting, like a wait for the lock."""
        status = SyncStatus.open(self.project_config().state_dir, context.run.run_id)
        run = RunHandle.of(context)

        def report(waited: float) -> None:
            if waited == 0:  # the first report of this wait
                context.log.warning(f"{operation} waits for {what}.")
                run.set_tags("waiting", what)
            status.update(
                "lock_waiting", f"{operation} waits for {what} ({waited:.0f} s)", holder=None
            )

        return report

    @contextlib.contextmanager
    def hold(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.InitResourceContext,
        operation: str,
        phase: Phase,
    ) -> Iterator[LockSession]:
        """Hold the warehouse lock for exactly the write inside the ``with`` block."""
        with hold_warehouse_lock(
            self.project_config(),
            RunHandle.of(context),
            operation,
            phase,
            queue_timeout=self.queue_timeout_seconds,
            report_interval=self.report_interval_seconds,
        ) as session:
            yield session


def holder_tag(holder: LockHolder | None) -> str:
    """The ``dango/lock_holder`` tag's value while a run waits: who holds the lock, since when."""
    if holder is None:
        return "a process that just released the lock"
    if not holder.known:
        return f"unknown holder (PID {holder.pid})" if holder.pid else "unknown holder"
    return (
        f"PID {holder.pid} on {holder.hostname or '?'}: {holder.source} / {holder.operation}, "
        f"since {holder.started_at or '?'}"
    )
