"""The run queue: a run that would wait for the warehouse stays Queued in Dagster, with no process.

Without it, a run launched while another process writes the warehouse starts a worker process and
waits inside its first writing step: the web UI draws it as "Started / In progress", the wait as
that step running. ``WarehouseRunCoordinator`` is Dagster's own ``QueuedRunCoordinator`` with two
additions, set in the instance's ``dagster.yaml`` (``run_coordinator:``):

- **Which warehouse a run writes.** Every asset that writes through the gate carries the op tag
  ``dango/warehouse`` (its project folder, ``gate.warehouse_op_tags``). ``submit_run`` reads the
  run's ops from its job snapshot and copies that tag onto the run before it is queued, so runs
  of our jobs, schedules, sensors, automation, backfills and the UI's Materialize button all
  carry it. A run that writes no warehouse of ours, or several, stays untagged (and a run whose
  launcher set the tag keeps it).
- **Per-warehouse limits, computed on every dequeue pass.** The queue daemon asks for the queue
  config every iteration (``get_run_queue_config``). Beside the user's own limits it gets: one run
  in progress per warehouse, and none at all while the warehouse lock is held by anyone (a CLI
  sync, real Dango, a notebook writer, another host). Blocked queued runs are tagged
  ``dango/lock: queued`` and ``dango/lock_holder`` (``gate.holder_tag``: PID, host, source,
  operation, since when), written only when the value changes, so the run's page names whom it
  waits for. The gate's waiting rules hold in the queue too: a run held back longer than
  ``lock_timeout_for_run`` allows fails there naming the holder, and a fail-fast run (timeout 0)
  is never held back. The probe never takes the lock: ``read_lock_holder`` (``/proc/locks`` and
  the holder file; ``pg_locks`` for the Postgres backend), only for warehouses with queued runs.

The lock stays the only truth of who writes: the queue only keeps runs from starting while the
lock is visibly busy. Whoever grabs the lock between the probe and a run's first write is waited
for in the step, as before. A run in progress whose process is gone (``kill -9``) is failed on
the spot (``dead_runs.reconcile_run``), so it never keeps the next run queued. Nothing here
holds a slot: a limit is recomputed from live facts every second, so nothing can leak.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from dango_dagster.constants import (
    TAG_LOCK,
    TAG_LOCK_HOLDER,
    TAG_LOCK_TIMEOUT,
    TAG_PID,
    TAG_WAREHOUSE,
)
from dango_dagster.defs._compat import op_tags_of_run
from dango_dagster.defs.dead_runs import IN_PROGRESS, reconcile_run
from dango_dagster.defs.gate import holder_tag, lock_timeout_for_run
from dango_dagster.defs.settings import config_for
from dango_dagster.lock import LockHolder, LockTarget, lock_target, read_lock_holder

if TYPE_CHECKING:
    from dango_dagster.defs._compat import RunQueueConfig

__all__ = ["QUEUED", "READY", "WarehouseRunCoordinator", "warehouse_of_run"]

QUEUED = "queued"  # dango/lock while the run queue holds a run back
READY = "free"  # dango/lock once the queue lets it go (its steps then say waiting/held/...)
# One run in progress per warehouse: two runs of one project would only queue on the lock.
PER_WAREHOUSE_LIMIT: dict[str, Any] = {
    "key": TAG_WAREHOUSE,
    "value": {"applyLimitPerUniqueValue": True},
    "limit": 1,
}
_QUEUE_PAGE = 500
# A project folder that could not be read (another host's path, a bad setting) is retried after.
_RETRY_UNREADABLE_S = 60.0
# Passes further apart than this do not show a wait as continuous (the daemon's come every second).
_CONTINUOUS_S = 10.0


def warehouse_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The warehouse a run writes through our assets (from its ops' tags), or None: none, or
    several (such a run is left to wait for each lock in its steps)."""
    found = {tags[TAG_WAREHOUSE] for tags in op_tags_of_run(instance, run) if TAG_WAREHOUSE in tags}
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class _Warehouse:
    """What the queue needs of a project, read once: where its lock is and its status files."""

    root: Path
    target: LockTarget
    state_dir: Path
    queue_timeout: float


def _priority(run: dg.DagsterRun) -> int:
    try:
        return int(run.tags.get("dagster/priority", "0"))
    except ValueError:
        return 0


def _run_ahead(run: dg.DagsterRun, in_progress: bool) -> str:
    """The ``dango/lock_holder`` text for a run queued behind another run of the same project."""
    pid = run.tags.get(TAG_PID)
    where = f", PID {pid}" if pid else ""
    state = "in progress" if in_progress else "next in the queue"
    return f"run {run.run_id[:8]} of this project ({state}{where})"


class WarehouseRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's run queue, plus: a run waiting for the warehouse lock stays queued, no process.

    Set in ``dagster.yaml``::

        run_coordinator:
          module: dango_dagster.defs.run_queue
          class: WarehouseRunCoordinator
          config:
            dequeue_interval_seconds: 1

    It takes every ``QueuedRunCoordinator`` setting. Static ``tag_concurrency_limits`` belong in
    its ``config``: Dagster lets ``concurrency.runs.tag_concurrency_limits`` replace a
    coordinator's list outright, which would drop the per-warehouse limits.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._warehouses: dict[str, tuple[_Warehouse | None, float]] = {}
        self._guard = threading.Lock()
        self._said: set[str] = set()
        # When each queued run was first seen held back by a holder from outside (monotonic),
        # over passes no further apart than _CONTINUOUS_S (the daemon's; the web server's few
        # calls never add up to a timeout).
        self._outside_since: dict[str, float] = {}
        self._last_pass = 0.0

    # -- submitting: name the warehouse ---------------------------------------------------------

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if TAG_WAREHOUSE not in run.tags and run.status == dg.DagsterRunStatus.NOT_STARTED:
            value = warehouse_of_run(self._instance, run)
            if value is not None and self._may_queue(run, value):
                self._instance.add_run_tags(run.run_id, {TAG_WAREHOUSE: value})
        return super().submit_run(context)

    def _may_queue(self, run: dg.DagsterRun, value: str) -> bool:
        """Whether a run may wait at all: a fail-fast run (``lock_timeout_for_run`` 0, e.g.
        ``dagster job launch``) starts at once and fails in its step naming the holder, as it
        would without the queue; a bad ``dango/lock_timeout`` tag fails there with its fix."""
        warehouse = self._warehouse(value)
        try:
            return warehouse is None or self._timeout(run, warehouse) > 0
        except dg.Failure:
            return False

    @staticmethod
    def _timeout(run: dg.DagsterRun, warehouse: _Warehouse) -> float:
        return lock_timeout_for_run(run.tags, warehouse.queue_timeout)

    # -- dequeuing: the limits of this pass -----------------------------------------------------

    def get_run_queue_config(self) -> RunQueueConfig:
        config = super().get_run_queue_config()
        limits: list[dict[str, Any]] = [PER_WAREHOUSE_LIMIT]
        try:
            if self._limits_apply():
                limits += self._lock_limits()
        except Exception:  # the queue must go on: runs then wait for the lock in their steps
            self._say_once("limits", "Run queue: could not check the warehouse locks", exc=True)
        return config._replace(tag_concurrency_limits=[*config.tag_concurrency_limits, *limits])

    def _lock_limits(self) -> list[dict[str, Any]]:
        """``limit 0`` for each warehouse whose lock is held and that has runs queued; tags the
        runs held back with whom they wait for (and the ones let go as free)."""
        instance = self._instance
        queued: dict[str, list[dg.DagsterRun]] = {}
        for run in instance.get_runs(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=_QUEUE_PAGE, ascending=True
        ):
            if TAG_WAREHOUSE in run.tags:
                queued.setdefault(run.tags[TAG_WAREHOUSE], []).append(run)
        outside_since, self._outside_since = self._outside_since, {}
        now = time.monotonic()
        if now - self._last_pass > _CONTINUOUS_S:
            outside_since = {}
        self._last_pass = now
        if not queued:
            return []  # nothing waits: no probe, no further query
        active: dict[str, list[dg.DagsterRun]] = {}
        for run in instance.get_runs(
            dg.RunsFilter(statuses=IN_PROGRESS, tags={TAG_WAREHOUSE: list(queued)})
        ):
            active.setdefault(run.tags[TAG_WAREHOUSE], []).append(run)
        limits: list[dict[str, Any]] = []
        for value, runs in queued.items():
            warehouse = self._warehouse(value)
            if warehouse is None:
                continue
            ahead = [r for r in active.get(value, []) if not self._died(r, warehouse)]
            holder = self._holder(value, warehouse)
            if holder is not None:
                limits.append({"key": TAG_WAREHOUSE, "value": value, "limit": 0})
            # Held back by a writer from outside (no run of this project in progress): the wait
            # a step would have had, so the same limit applies to it.
            outside = holder is not None and not ahead
            runs.sort(key=_priority, reverse=True)  # the daemon's order (stable: oldest first)
            for index, run in enumerate(runs):
                if holder is not None:
                    blocker: str | None = holder_tag(holder)
                elif ahead:
                    blocker = _run_ahead(ahead[0], in_progress=True)
                elif index > 0:
                    blocker = _run_ahead(runs[0], in_progress=False)
                else:
                    blocker = None
                if outside and blocker is not None:
                    since = outside_since.get(run.run_id, now)
                    self._outside_since[run.run_id] = since
                    if self._gave_up(run, warehouse, blocker, now - since):
                        continue
                self._show(run, blocker)
        return limits

    def _gave_up(
        self, run: dg.DagsterRun, warehouse: _Warehouse, blocker: str, waited: float
    ) -> bool:
        """Fail a run held back by an outside writer longer than it may wait for the lock
        (``lock_timeout_for_run``: 300 s for sensor, schedule, UI runs), naming the holder, as a
        step would. Waiting behind runs of its own project has no limit, as in Dagster's queue
        (a backfill's runs take turns), and the clock restarts with the daemon."""
        try:
            timeout = self._timeout(run, warehouse)
        except dg.Failure:
            return False
        if waited < timeout:
            return False
        self._instance.add_run_tags(run.run_id, {TAG_LOCK: "timeout", TAG_LOCK_HOLDER: blocker})
        self._instance.report_run_failed(
            run,
            message=(
                f"Gave up after {waited:.0f} s in the run queue (no process was started): the "
                f"warehouse of {warehouse.root} is busy, held by {blocker}. Its limit is "
                f"{timeout:.0f} s (lock.queue_timeout_seconds, or the run tag "
                f"{TAG_LOCK_TIMEOUT}). See who holds it with `dango-dagster lock status`, and "
                "launch the run again once it is free."
            ),
        )
        return True

    def _holder(self, value: str, warehouse: _Warehouse) -> LockHolder | None:
        try:
            return read_lock_holder(warehouse.root, warehouse.target)
        except Exception as exc:  # e.g. the Postgres lock server is down
            self._say_once(
                f"probe:{value}",
                f"Run queue: cannot see who holds the warehouse lock of {value} ({exc}); its "
                "runs start without waiting in the queue and wait for the lock in their steps.",
            )
            return None

    def _died(self, run: dg.DagsterRun, warehouse: _Warehouse) -> bool:
        """Fail a run in progress whose process is gone, so it does not keep the queue waiting."""
        if TAG_PID not in run.tags:
            return False  # no process recorded yet (still starting): nothing to judge
        message = reconcile_run(self._instance, run, warehouse.state_dir)
        if message is not None:
            self._logger.warning(message)
        return message is not None

    def _show(self, run: dg.DagsterRun, blocker: str | None) -> None:
        """Tag a queued run with whom it waits for, only when that changes."""
        if blocker is None:
            if run.tags.get(TAG_LOCK) != QUEUED:
                return
            wanted = {TAG_LOCK: READY, TAG_LOCK_HOLDER: "none"}
        else:
            wanted = {TAG_LOCK: QUEUED, TAG_LOCK_HOLDER: blocker}
        if any(run.tags.get(key) != value for key, value in wanted.items()):
            self._instance.add_run_tags(run.run_id, wanted)

    # -- settings, read once per project ----------------------------------------------------------

    def _warehouse(self, value: str) -> _Warehouse | None:
        now = time.monotonic()
        with self._guard:
            cached = self._warehouses.get(value)
        if cached is not None and (cached[0] is not None or now < cached[1]):
            return cached[0]
        found: _Warehouse | None
        try:
            config = config_for(value)
            found = _Warehouse(
                config.root,
                lock_target(config.root),
                config.state_dir,
                config.lock.queue_timeout_seconds,
            )
        except Exception as exc:
            self._say_once(
                f"project:{value}",
                f"Run queue: cannot read the Dango project {value} ({exc}); its runs queue one at "
                "a time and wait for the lock in their steps. Fix the project settings, or make "
                "the folder readable where the Dagster daemon runs.",
            )
            found = None
        with self._guard:
            self._warehouses[value] = (found, now + _RETRY_UNREADABLE_S)
        return found

    def _limits_apply(self) -> bool:
        """False when the instance settings replace our limits (then tagging runs as queued
        would be a lie: they start and wait in their steps), after saying how to fix it."""
        runs = (self._instance.get_settings("concurrency") or {}).get("runs") or {}
        if runs.get("tag_concurrency_limits") is None:
            return True
        self._say_once(
            "settings",
            "dagster.yaml sets concurrency.runs.tag_concurrency_limits, which Dagster puts in "
            "place of the run coordinator's limits: runs waiting for the warehouse start a "
            "process and wait in their steps. Move those limits under run_coordinator: "
            "config: tag_concurrency_limits.",
        )
        return False

    def _say_once(self, key: str, message: str, exc: bool = False) -> None:
        if key not in self._said:
            self._said.add(key)
            self._logger.warning(message, exc_info=exc)
