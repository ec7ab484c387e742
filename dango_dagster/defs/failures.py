"""What a failed step means for the user: its cause and what to do, instead of Dagster's wrapper.

Dagster reports an exception raised by an asset as "Error occurred while executing op ...", with
the real error buried in the chained causes. A user needs the reverse: the cause first (the file,
the model, the folder), then the fix, and the traceback in a log file. This module digs the
cause out of a step failure event and pairs it with a fix, for the CLI's last lines and for the
run's status file alike.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg
    from dagster._utils.error import SerializableErrorInfo

    from dango_dagster.config import ProjectConfig

# Dagster's own wrappers around the exception a step really raised.
_WRAPPERS = frozenset(
    {
        "DagsterExecutionStepExecutionError",
        "DagsterUserCodeExecutionError",
        "DagsterExecutionHandleOutputError",
        "DagsterExecutionLoadInputError",
        "DagsterResourceFunctionError",
    }
)
_INTERRUPTS = frozenset({"DagsterExecutionInterruptedError", "KeyboardInterrupt"})
_DISK_FULL = ("no space left on device", "database or disk is full", "disk is full", "enospc")
_MAX_CAUSE_LINES = 6


@dataclass(frozen=True)
class FailureExplanation:
    """One failed step, explained: ``cause`` (what happened) and ``fix`` (what to do)."""

    step: str
    cause: str
    fix: str
    traceback: str
    interrupted: bool = False
    disk_full: bool = False

    def lines(self) -> list[str]:
        return [f"error: {self.cause}", f"fix:   {self.fix}"]


def _chain(error: SerializableErrorInfo | None) -> list[SerializableErrorInfo]:
    chain: list[SerializableErrorInfo] = []
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.cause or error.context
    return chain


def _short(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > _MAX_CAUSE_LINES:
        lines = [*lines[:_MAX_CAUSE_LINES], "..."]
    return "\n       ".join(lines)


def disk_advice(config: ProjectConfig, text: str) -> str:
    """Which folder ran out of space and roughly how much a sync needs there."""
    folders = {
        "warehouse": config.warehouse_path.parent,
        "snapshots": config.published_dir,
        "state": config.state_dir,
        "Dagster storage": config.dagster_home,
    }
    named = next((f for f in folders.values() if str(f) in text), None)
    folder = named or config.warehouse_path.parent
    folder = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    warehouse = config.warehouse_path.stat().st_size if config.warehouse_path.exists() else 0
    # A sync rewrites tables (old and new pages coexist until CHECKPOINT) and copies the
    # warehouse once for the snapshot: about twice its size, plus slack for dlt and dbt files.
    needed = 2 * warehouse + 64 * 2**20
    return (
        f"The disk holding {folder} is full ({free / 2**20:.0f} MB free). Free at least "
        f"{max(0, needed - free) / 2**20:.0f} MB there (a sync needs about {needed / 2**20:.0f} "
        "MB free: twice the warehouse plus 64 MB), then run the sync again. Nothing was lost: the "
        "warehouse keeps its last committed data and the published snapshot is unchanged."
    )


def explain_step_failure(
    event: dg.DagsterEvent, config: ProjectConfig | None = None, log_path: Path | None = None
) -> FailureExplanation:
    """The cause of a STEP_FAILURE event (the user's exception, not Dagster's wrapper) and a fix."""
    data = event.step_failure_data
    step = event.step_key or "?"
    error = data.error if data else None
    chain = _chain(error)
    traceback = error.to_string() if error is not None else ""
    interrupted = any(e.cls_name in _INTERRUPTS for e in chain)
    see_log = f" The full traceback is in {log_path}." if log_path else ""
    user = data.user_failure_data if data else None
    if user is not None and user.description:
        # dg.Failure raised on purpose (lock timeout, missing table): it already says what to do.
        cause = _short(user.description)
        return FailureExplanation(step, cause, "See above." + see_log, traceback)
    real = next((e for e in chain if e.cls_name not in _WRAPPERS), chain[0] if chain else None)
    if real is None:
        return FailureExplanation(step, f"step {step} failed", "See the log." + see_log, traceback)
    cause = _short(real.message)  # "RuntimeError: what happened", as Python prints it
    whole = " ".join(e.message for e in chain).lower()
    if interrupted:
        return FailureExplanation(
            step, f"step {step} was interrupted", "Run the sync again.", traceback, True
        )
    if any(word in whole for word in _DISK_FULL):
        fix = disk_advice(config, whole) if config is not None else "Free disk space."
        return FailureExplanation(step, cause, fix + see_log, traceback, disk_full=True)
    if real.cls_name == "DagsterDbtCliRuntimeError" or step.startswith("dbt"):
        fix = (
            "Fix the dbt model or test named above, then run the sync again; models that failed "
            "keep their previous data."
        )
        return FailureExplanation(step, cause, fix + see_log, traceback)
    hint = getattr(real, "hint", None)
    fix = hint or "Fix the cause above, then run the sync again."
    return FailureExplanation(step, cause, fix + see_log, traceback)
