"""Per-run status files: ``.dango/state/sync_status_{sync_id}.json``.

Dango's web UI and CLI read these files to show what a sync is doing; the Dagster runs of this
product keep them current too, so a user sees "waiting for the lock, held by PID 123" wherever they
look. Each file is replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dango_dagster._fs import atomic_write_json
from dango_dagster.lock.info import now_iso, process_gone_reason, process_start_time

Phase = Literal[
    "queued", "lock_waiting", "data_load", "dbt", "snapshot", "completed", "failed", "interrupted"
]
PHASES: tuple[str, ...] = (
    "queued",
    "lock_waiting",
    "data_load",
    "dbt",
    "snapshot",
    "completed",
    "failed",
    "interrupted",
)
# ``interrupted``: the run's process was stopped (Ctrl-C, SIGTERM, a cancel from the UI) or died
# (kill -9, OOM, a crash); written by the run itself when it can, else by whoever notices first.
FINISHED_PHASES = frozenset({"completed", "failed", "interrupted"})
# What a run was doing in each running phase, in the words of a message to the user.
PHASE_ACTIVITY = {
    "queued": "start-up",
    "lock_waiting": "its wait for the warehouse lock",
    "data_load": "the data load",
    "dbt": "dbt build",
    "snapshot": "the snapshot",
}
# Finished status files are kept this long so a UI polling every few seconds sees the outcome.
DEFAULT_KEEP_FINISHED_SECONDS = 24 * 3600


def sync_id_for_run(run_id: str) -> str:
    """Dango's sync id for a Dagster run: the first 12 characters of the run id."""
    return run_id[:12]


def status_path(state_dir: Path, sync_id: str) -> Path:
    return state_dir / f"sync_status_{sync_id}.json"


@dataclass
class SyncStatus:
    """The status file of one run. ``update`` rewrites the whole file atomically."""

    state_dir: Path
    run_id: str
    started_at: str = field(default_factory=now_iso)
    _data: dict[str, Any] = field(default_factory=dict)

    @property
    def sync_id(self) -> str:
        return sync_id_for_run(self.run_id)

    @property
    def data(self) -> dict[str, Any]:
        """The fields this run wrote beyond the fixed ones (phase, message, waited_seconds...)."""
        return dict(self._data)

    @property
    def path(self) -> Path:
        return status_path(self.state_dir, self.sync_id)

    @classmethod
    def open(cls, state_dir: Path, run_id: str) -> SyncStatus:
        """Resume the status of a run (steps of one run may run in several processes)."""
        existing = read_status(status_path(state_dir, sync_id_for_run(run_id)))
        status = cls(state_dir=state_dir, run_id=run_id)
        if existing and existing.get("run_id") == run_id:
            status.started_at = existing.get("started_at", status.started_at)
            status._data = {k: v for k, v in existing.items() if k not in _FIXED_KEYS}
        return status

    def update(self, phase: Phase, message: str, **extra: Any) -> None:
        """Rewrite the file: this phase and message, ``extra`` fields, and this process as the
        run's (``pid``, ``process_start_time``, ``hostname``), so a dead run is recognisable."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
        # The holder is only meaningful while waiting; clear it on every other phase.
        self._data.pop("holder", None)
        self._data.update(extra)
        self._data.update(phase=phase, message=message)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.path,
            {
                "sync_id": self.sync_id,
                "run_id": self.run_id,
                **this_process(),
                "started_at": self.started_at,
                "updated_at": now_iso(),
                **self._data,
            },
        )


_FIXED_KEYS = frozenset(
    {"sync_id", "run_id", "pid", "process_start_time", "hostname", "started_at", "updated_at"}
)


def this_process() -> dict[str, Any]:
    """The identity of this process as status files and run tags record it: PID, start time
    (so a reused PID is not mistaken for the run) and host."""
    pid = os.getpid()
    return {
        "pid": pid,
        "process_start_time": process_start_time(pid),
        "hostname": socket.gethostname(),
    }


def gone_reason(status: dict[str, Any]) -> str | None:
    """Why the run of a status file in a running phase is dead, e.g. "process 1234 gone during
    dbt build"; None while it runs, once it finished, or when the file names no process."""
    phase = status.get("phase")
    pid = status.get("pid")
    if phase in FINISHED_PHASES or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    start = status.get("process_start_time")
    reason = process_gone_reason(
        pid,
        status.get("hostname") if isinstance(status.get("hostname"), str) else None,
        float(start) if isinstance(start, int | float) else None,
    )
    if reason is None:
        return None
    activity = PHASE_ACTIVITY.get(str(phase), str(phase))
    if reason.endswith("is gone"):
        return f"process {pid} gone during {activity}"
    return f"{reason}; the run died during {activity}"


def mark_interrupted(path: Path, status: dict[str, Any], reason: str) -> dict[str, Any]:
    """Record in a dead run's status file that it was interrupted, keeping the run's own PID
    (whoever notices, a later sync or ``lock status``, is not the run)."""
    data = {k: v for k, v in status.items() if k != "holder"}
    data.update(
        phase="interrupted",
        interrupted_during=status.get("phase"),
        message=f"Interrupted: {reason}",
        error="process_gone",
        updated_at=now_iso(),
    )
    atomic_write_json(path, data)
    return data


def is_ours(data: dict[str, Any]) -> bool:
    """A status file dango-dagster wrote (it names a Dagster run). Dango writes the same file
    names in the same folder (``sync_status_<12 hex>.json``, no ``run_id``): we read those, but
    never rewrite or delete them, as Dango's own cleanup decides about them."""
    return bool(data.get("run_id"))


def reconcile_status_files(state_dir: Path) -> list[dict[str, Any]]:
    """Mark every status file whose run died in a running phase ``interrupted``; returns them.

    Dagster-free and quick (a stat of each run's process), so ``lock status`` can call it.
    """
    fixed: list[dict[str, Any]] = []
    for path in state_dir.glob("sync_status_*.json"):
        data = read_status(path)
        if data is None or not is_ours(data):
            continue
        reason = gone_reason(data)
        if reason is not None:
            fixed.append(mark_interrupted(path, data, reason))
    return fixed


def read_status(path: Path) -> dict[str, Any] | None:
    """A status file's content, or None if missing or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def list_statuses(state_dir: Path) -> list[dict[str, Any]]:
    """Every readable status file of a project, newest first."""
    found = [read_status(p) for p in state_dir.glob("sync_status_*.json")]
    return sorted((s for s in found if s), key=lambda s: str(s.get("updated_at", "")), reverse=True)


def cleanup_finished(
    state_dir: Path, keep_seconds: float = DEFAULT_KEEP_FINISHED_SECONDS
) -> list[Path]:
    """Delete status files of runs that finished more than ``keep_seconds`` ago."""
    removed: list[Path] = []
    cutoff = time.time() - keep_seconds
    for path in state_dir.glob("sync_status_*.json"):
        data = read_status(path)
        if data is None or not is_ours(data) or data.get("phase") not in FINISHED_PHASES:
            continue
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
    return removed
