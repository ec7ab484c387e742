"""A run launcher that hands each run to a pre-started worker process, imports already done.

Why: under ``dagster dev`` every run starts in a new process that Dagster's code server
``spawn``s, and that process imports dagster, dagster-dbt/dbt-core and the definitions again
before the first step: 3.5 s on an idle 2-core machine, 8 s under load, the largest fixed part of
"a file dropped into the uploads folder, to its rows in the published snapshot".
``WarmRunLauncher`` (configured in the instance's ``dagster.yaml``) keeps one worker per code
location started ahead of time (``defs/warm_worker.py``: imports done, definitions built, blocked
on a pipe at no CPU). When the daemon launches a run it sends that worker the run id, and starts
the next worker in the background. One run per process, as with the stock launcher.

The stock launch (``DefaultRunLauncher``: the code server starts a new process) is taken, with the
reason in the run's event log and ``dango/launch=stock``, whenever there is any doubt:

- no worker ready yet (the first run of a code location since the daemon started), or it died;
- the code location was reloaded since the worker started (the code server's id changed), or the
  worker finds the run's job snapshot differs from its definitions, or a file the definitions were
  built from changed since it loaded them: a run never executes with old definitions;
- the code server runs on another host, or its Python is not on this one;
- a Dagster outside the release series ``_compat`` was written for (logged once).

A warm-launched run carries ``dango/launch=warm`` and the worker's ``dango/pid``,
``dango/process_start_time`` and ``dango/host`` from the moment it is handed over, so Terminate
(SIGINT to that process, as Dagster's own run worker is cancelled), run monitoring
(``check_run_worker_health``) and the dead-run reconciliation of ``defs/runs.py`` all find it.
Idle workers exit when the process that started them does (end of file on their pipe, whatever
killed it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dango_dagster.constants import TAG_LAUNCH
from dango_dagster.defs import _compat
from dango_dagster.defs.dead_runs import recorded_process, run_gone_reason
from dango_dagster.lock.info import process_gone_reason

_log = logging.getLogger(__name__)

# How long a launch waits for a worker that is still importing (it is ahead of a new process, or
# level with one when it waited for the previous run to end).
READY_WAIT_SECONDS = 30.0
# How long the worker may take to check a run and take it over (a job snapshot: ~20 ms idle).
REPLY_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerTarget:
    """Where a run's pre-started worker comes from: its code location, as loaded now."""

    location: str
    server_id: str
    origin: Any  # RepositoryPythonOrigin
    executable: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.location, self.server_id, dg.serialize_value(self.origin)


class WarmWorker:
    """One pre-started worker process and the two pipes to it."""

    def __init__(self, target: WorkerTarget, proc: subprocess.Popen[bytes], status_fd: int) -> None:
        self.target = target
        self.proc = proc
        self._status_fd = status_fd
        self._buffer = b""
        self.ready = False
        self.load_failed = False  # exited before its definitions were loaded

    @classmethod
    def start(
        cls, target: WorkerTarget, instance_ref: str, after_pid: int | None = None
    ) -> WarmWorker:
        """Start a worker; with ``after_pid`` its imports wait until that process has exited
        (or a run arrives), so they never take CPU from the run that process executes."""
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        bin_dir = os.path.dirname(target.executable)
        if target.executable != sys.executable:  # as the code server would set it for that venv
            env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH")) if p)
        try:
            proc = subprocess.Popen(
                [target.executable, "-m", "dango_dagster.defs.warm_worker", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=env,
            )
        finally:
            os.close(write_fd)
        spec = {
            "instance_ref": instance_ref,
            "origin": dg.serialize_value(target.origin),
            "after_pid": after_pid,
        }
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.flush()
        # Reap it the moment it exits: a zombie would still look alive to the dead-run checks.
        threading.Thread(target=proc.wait, name=f"warm-worker-{proc.pid}", daemon=True).start()
        return cls(target, proc, read_fd)

    def _message(self, timeout: float) -> dict[str, Any] | None:
        """The worker's next message; None at end of file (it exited) or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._status_fd], [], [], left)[0]:
                return None
            chunk = os.read(self._status_fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _exited(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        return f"its pre-started worker (pid {self.proc.pid}) exited ({self.proc.returncode})"

    def wait_ready(self, timeout: float) -> bool:
        """Until the worker says its definitions are loaded; False if it exited or timed out."""
        if not self.ready:
            message = self._message(timeout)
            self.ready = bool(message and message.get("ready"))
        return self.ready

    def hand_over(self, run_id: str) -> str | None:
        """Give the worker ``run_id``; None once it took the run, else why not (worker stopped).

        The run id goes first: a worker still waiting for the previous run to end starts
        importing at once, and reads it when its definitions are loaded.
        """
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps({"run_id": run_id}) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:
            self.stop()
            return self._exited()
        if not self.wait_ready(READY_WAIT_SECONDS):
            self.load_failed = self.proc.poll() is not None
            reason = (
                self._exited() + " before its definitions were loaded (see the daemon's log)"
                if self.load_failed
                else f"its pre-started worker was not ready within {READY_WAIT_SECONDS:.0f} s"
            )
            self.stop()
            return reason
        reply = self._message(REPLY_WAIT_SECONDS)
        if reply is not None and reply.get("accepted"):
            self._close()
            return None
        # Killed before falling back: it must never run the run beside the stock worker.
        self.stop()
        if reply is None:
            return f"its pre-started worker did not answer within {REPLY_WAIT_SECONDS:.0f} s"
        return str(reply.get("reason") or "its pre-started worker refused the run")

    def _close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._status_fd)
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._close()


class WarmRunLauncher(dg.DefaultRunLauncher):
    """``DefaultRunLauncher`` that hands runs to a pre-started worker process when it safely can.

    Configure it in the instance's ``dagster.yaml``::

        run_launcher:
          module: dango_dagster.defs.run_launcher
          class: WarmRunLauncher
    """

    def __init__(self, inst_data: Any = None) -> None:
        super().__init__(inst_data=inst_data)
        self._guard = threading.Lock()
        self._idle: dict[str, WarmWorker] = {}  # code location name -> its pre-started worker
        self._failed: set[tuple[str, str, str]] = set()  # workers that could not load
        self._unsupported = _compat.warm_launch_unsupported()
        if self._unsupported:
            _log.warning("dango-dagster warm run launcher off: %s.", self._unsupported)

    # -- launching ------------------------------------------------------------------------------
    def launch_run(self, context: Any) -> None:
        run: dg.DagsterRun = context.dagster_run
        if self._unsupported:
            super().launch_run(context)
            return
        target = self._target(context)
        if isinstance(target, str):
            reason: str | None = target
        else:
            with self._guard:
                worker = self._idle.pop(target.location, None)
            reason = self._hand_over(worker, target, run.run_id)
            if reason is None and worker is not None:
                self._run_ids.add(run.run_id)
                # The next worker imports once this run's process has ended (not beside it).
                self._prewarm(target, after_pid=worker.proc.pid)
                return
        self._instance.add_run_tags(run.run_id, {TAG_LAUNCH: "stock"})
        self._instance.report_engine_event(
            f"Starting the run in a new process (Dagster's stock launch): {reason}.",
            run,
            cls=self.__class__,
        )
        super().launch_run(context)
        if not isinstance(target, str):
            self._prewarm(target)

    def _hand_over(
        self, worker: WarmWorker | None, target: WorkerTarget, run_id: str
    ) -> str | None:
        if worker is None:
            if target.key in self._failed:
                return "the pre-started worker for this code location failed to load it"
            return "no pre-started worker yet (the first run of this code location since start)"
        if worker.target.key != target.key:
            worker.stop()
            return "the code location was reloaded since its pre-started worker loaded it"
        reason = worker.hand_over(run_id)
        if worker.load_failed:  # e.g. dango_dagster is not installed in the code location's venv
            self._failed.add(target.key)
        return reason

    def _target(self, context: Any) -> WorkerTarget | str:
        """The run's code location as loaded now, or why its run cannot go to a worker."""
        run: dg.DagsterRun = context.dagster_run
        code_origin = run.job_code_origin
        if code_origin is None or run.remote_job_origin is None or context.workspace is None:
            return "the run has no Python code origin to pre-load"
        location = run.remote_job_origin.location_name
        try:
            code_location = context.workspace.get_code_location(location)
        except Exception as exc:  # noqa: BLE001 - the stock launch reports it properly
            return f"code location {location} is not loaded ({exc})"
        identity = _compat.code_server_identity(code_location)
        if identity is None:
            return f"the code server of {location} is not a gRPC server, or did not answer"
        server_id, local = identity
        if not local:
            return f"the code server of {location} runs on another host"
        executable = code_origin.repository_origin.executable_path
        if not executable or not os.path.exists(executable):
            return f"the code location's Python ({executable}) is not on this host"
        return WorkerTarget(location, server_id, code_origin.repository_origin, executable)

    def _prewarm(self, target: WorkerTarget, after_pid: int | None = None) -> None:
        """Start the next worker for ``target`` in the background (imports run in that process,
        after process ``after_pid`` has exited when given)."""
        if target.key in self._failed:
            return
        with self._guard:
            current = self._idle.get(target.location)
            alive = current is not None and current.proc.poll() is None
            if current is not None and alive and current.target.key == target.key:
                return
            if current is not None:
                current.stop()
            try:
                ref = dg.serialize_value(self._instance.get_ref())
                self._idle[target.location] = WarmWorker.start(target, ref, after_pid)
            except OSError as exc:
                self._idle.pop(target.location, None)
                _log.warning("Could not start a pre-started run worker: %s", exc)

    # -- after the launch -----------------------------------------------------------------------
    def terminate(self, run_id: str) -> bool:
        """Cancel a run: a warm-launched one by SIGINT to its worker, as Dagster's own run worker
        is cancelled (the run ends canceled and its lock is released); others the stock way."""
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or run.tags.get(TAG_LAUNCH) != "warm":
            return bool(super().terminate(run_id))
        recorded = recorded_process(run)
        self._instance.report_run_canceling(run)
        gone = process_gone_reason(*recorded) if recorded else "no process recorded"
        if recorded is None or gone is not None:
            self._instance.report_run_canceled(run, f"Run canceled; its worker is gone ({gone}).")
            return False
        try:
            os.kill(recorded[0], signal.SIGINT)
        except OSError as exc:
            self._instance.report_engine_event(
                f"Could not signal the run's worker (pid {recorded[0]}): {exc}.", run
            )
            return False
        self._instance.report_engine_event(
            f"Sent SIGINT to the run's pre-started worker (pid {recorded[0]}) to cancel it.", run
        )
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return self._unsupported is None

    def check_run_worker_health(self, run: dg.DagsterRun) -> Any:
        """FAILED when the process recorded in the run's tags is gone (either launch), else
        RUNNING: a run whose process is not recorded yet is never failed on a guess."""
        internals = _compat.launcher_internals()
        reason = run_gone_reason(run, _state_dir())
        if reason is not None:
            return internals.CheckRunHealthResult(internals.WorkerStatus.FAILED, reason)
        return internals.CheckRunHealthResult(internals.WorkerStatus.RUNNING, None)

    def dispose(self) -> None:
        with self._guard:
            idle, self._idle = list(self._idle.values()), {}
        for worker in idle:
            worker.stop()
        super().dispose()


def _state_dir() -> Any:
    """The status files of the project this process serves, to name the phase a run died in."""
    from dango_dagster.defs.settings import config_for

    try:
        return config_for(None).state_dir
    except Exception:  # noqa: BLE001 - not a Dango project folder: the reason goes without it
        return None


__all__ = ["WarmRunLauncher"]
