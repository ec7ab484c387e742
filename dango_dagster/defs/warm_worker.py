"""A pre-started run worker: Dagster and a code location's definitions imported before any run
exists, then exactly one run executed on request, as ``dagster api execute_run`` executes it.

Why: Dagster's code server starts every run in a new ``spawn``ed process that imports dagster,
dagster-dbt/dbt-core and the definitions again (3.5 s on an idle 2-core machine, 8 s under load),
the largest fixed part of "a dropped file to the snapshot". ``WarmRunLauncher``
(``defs/run_launcher.py``) starts this process ahead of time and hands it the next run's id.
One run per process, as before: the run's isolation does not change.

Started by the launcher only: ``python -m dango_dagster.defs.warm_worker STATUS_FD``. One JSON
object per line:

- stdin, line 1: ``{"instance_ref", "origin", "after_pid"}`` (Dagster-serialized values). With
  ``after_pid`` (the worker that just took a run) the imports wait, at no CPU, until that
  process has exited or a run arrives: importing beside a running run took CPU from it on two
  cores (its dbt step ran at half speed, docs/BENCHMARKS.md);
- status fd: ``{"ready": true, "pid", "seconds"}`` once the definitions are built;
- stdin, line 2: ``{"run_id"}``, or end of file: the launcher's process is gone (however it died,
  SIGKILL included), so exit. Blocked in ``read()`` an idle worker uses no CPU;
- status fd: ``{"accepted": true}`` (the run executes here, then the process exits) or
  ``{"accepted": false, "reason"}`` (nothing was done; the launcher starts the run the stock way).

A run is refused, never executed with old definitions, when its job snapshot differs from the one
these definitions give for the run's selection, or when a file the definitions were built from
(a Python module of the project, the project's settings, the dbt project) changed since they were
loaded: a stock worker would have loaded the new ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import sys
import sysconfig
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

# Nothing heavy at module level: a worker that waits for the previous run's process to end has
# imported only the standard library. Dagster and the definitions are imported in ``serve``.
if TYPE_CHECKING:
    import dagster as dg

_INSTALLED = tuple(
    str(Path(p).resolve())
    for p in {sys.prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    if p
)


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def definition_inputs() -> dict[str, float]:
    """mtime of every file the loaded definitions were built from, by path.

    The project's own Python modules (not the installed libraries: those change only with an
    install, which needs a restart anyway), and for each Dango project the definitions were built
    for: its settings files and its dbt project (what ``ensure_manifest`` re-parses on).
    """
    stamps: dict[str, float] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py") or path.startswith(_INSTALLED):
            continue
        try:
            stamps[path] = os.stat(path).st_mtime
        except OSError:
            stamps[path] = -1.0
    if "dango_dagster.defs.dbt.assets" in sys.modules:
        from dango_dagster.defs.dbt.assets import newest_dbt_source_mtime
        from dango_dagster.defs.settings import remembered

        for config in remembered():
            for path in (config.config_path, config.settings_path, config.sources_path):
                stamps[str(path)] = path.stat().st_mtime if path.exists() else -1.0
            stamps[f"{config.dbt_project_dir} (dbt)"] = newest_dbt_source_mtime(
                config.dbt_project_dir
            )
    return stamps


class WarmDefinitions:
    """One code origin's definitions, loaded once, and the check a run must pass to use them."""

    def __init__(self, origin: Any) -> None:
        from dango_dagster.defs._compat import launcher_internals

        self.origin = origin
        self.repository = launcher_internals().recon_repository_from_origin(origin).get_definition()
        self.repository.get_all_jobs()  # builds every job (asset jobs resolve lazily)
        self.inputs = definition_inputs()
        self.loaded_at = time.time()

    def _snapshot_ids(self, run: dg.DagsterRun) -> list[str]:
        """The job snapshot ids these definitions give for the run's selection.

        The code server built the run's snapshot from its gRPC request, where a selection may
        arrive as a ``set`` or a ``frozenset``; the two serialize differently, so both count
        (the job itself is the same).
        """
        ids = []
        for kind in (set, frozenset):
            job = self.repository.get_maybe_subset_job_def(
                run.job_name,
                op_selection=run.op_selection,
                asset_selection=None if run.asset_selection is None else kind(run.asset_selection),
                asset_check_selection=(
                    None if run.asset_check_selection is None else kind(run.asset_check_selection)
                ),
            )
            ids.append(job.get_job_snapshot_id())
            if ids[-1] == run.job_snapshot_id:
                break
        return ids

    def refusal(self, run: dg.DagsterRun | None) -> str | None:
        """Why ``run`` must not execute with these definitions, or None when it may."""
        if run is None:
            return "the run is not in the instance"
        if run.job_code_origin is None or run.job_code_origin.repository_origin != self.origin:
            return "the run comes from another code origin than the worker loaded"
        try:
            snapshot_ids = self._snapshot_ids(run)
        except Exception as exc:  # noqa: BLE001 - any failure means "not these definitions"
            return f"the worker's definitions cannot build the run's job ({exc})"
        if run.job_snapshot_id not in snapshot_ids:
            return (
                f"the run's job differs from the worker's definitions (job snapshot "
                f"{(run.job_snapshot_id or '?')[:12]} vs {snapshot_ids[0][:12]}): the code "
                "location changed since the worker loaded it"
            )
        # Only what the definitions were built from: a module imported since (lazily, by the
        # subset above) is no sign of a change.
        now = definition_inputs()
        changed = sorted(p for p, stamp in self.inputs.items() if now.get(p) != stamp)
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            return f"{changed[0]}{more} changed since the worker loaded the definitions"
        return None


class _Lines:
    """Lines from a file descriptor, read unbuffered (``select`` on it stays truthful)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def pending(self) -> bool:
        return b"\n" in self._buffer

    def readline(self) -> str:
        """The next line, or "" at end of file (the launcher's process is gone)."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return ""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def wait_for_exit(pid: int, lines: _Lines) -> None:
    """Until process ``pid`` has exited, or something (a run id, end of file) arrives on stdin.

    Blocks in ``select`` on a pidfd (Linux); elsewhere it looks twice a second.
    """
    pidfd = -1
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or already gone
        pidfd = os.pidfd_open(pid)
    try:
        while not lines.pending() and _alive(pid):
            fds = [lines.fd] + ([pidfd] if pidfd >= 0 else [])
            if select.select(fds, [], [], None if pidfd >= 0 else 0.5)[0]:
                return
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def serve(spec: dict[str, Any], lines: _Lines, status: IO[str], started: float) -> int:
    """Load, say ready, wait for one run id, check it, execute it; returns the exit code."""
    # What the stock run worker imports before it can start (dagster, the definitions'
    # libraries): done here while no run is waiting.
    import dagster as dg

    from dango_dagster.constants import TAG_LAUNCH
    from dango_dagster.defs._compat import launcher_internals
    from dango_dagster.defs.runs import identity_tags

    ref: Any = dg.deserialize_value(spec["instance_ref"])  # an InstanceRef
    instance = dg.DagsterInstance.from_ref(ref)
    warm = WarmDefinitions(dg.deserialize_value(spec["origin"]))
    _send(status, {"ready": True, "pid": os.getpid(), "seconds": time.monotonic() - started})
    line = lines.readline()
    if not line:  # the launcher's process is gone: nothing to do
        return 0
    run_id = str(json.loads(line)["run_id"])
    internals = launcher_internals()
    # From here on an interrupt (Terminate in the UI sends SIGINT) cancels the run the way
    # Dagster's own run worker is cancelled, instead of killing the process mid-write.
    with internals.capture_interrupts():
        handed = time.monotonic()
        run = instance.get_run_by_id(run_id)
        reason = warm.refusal(run)
        if reason is not None or run is None:
            _send(status, {"accepted": False, "reason": reason})
            return 0
        instance.add_run_tags(run_id, {**identity_tags(), TAG_LAUNCH: "warm"})
        _send(status, {"accepted": True})
        status.close()
        instance.report_engine_event(
            f"Run handed to a pre-started worker (pid {os.getpid()}): no new process, dagster and "
            f"the definitions imported beforehand; checked and taken over in "
            f"{time.monotonic() - handed:.2f} s.",
            run,
        )
        internals.execute_run_body(run_id, instance, lambda _event: None, False)
    instance.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = os.fdopen(int(args[0]), "w", encoding="utf-8")
    lines = _Lines(sys.stdin.fileno())
    try:
        first = lines.readline()
        if not first:
            return 0
        spec = json.loads(first)
        if spec.get("after_pid"):
            wait_for_exit(int(spec["after_pid"]), lines)
        return serve(spec, lines, status, time.monotonic())
    except KeyboardInterrupt:  # Ctrl-C of `dagster dev` reaches its whole process group
        return 0


def _exit(code: int) -> None:
    """Exit at once once the run is recorded: a thread a cancelled step left behind (dbt still in
    a model) must not keep the process, and its memory, alive, nor print teardown noise."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
