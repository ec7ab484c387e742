"""What a failed step means for the user: its cause and what to do, instead of Dagster's wrapper.

Dagster reports an exception raised by an asset as "Error occurred while executing op ...", with
the real error buried in the chained causes. A user needs the reverse: the cause first (the file,
the model, the folder), then the fix, and the traceback in a log file. This module digs the
cause out of a step failure event and pairs it with a fix, for the CLI's last lines and for the
run's status file alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dango_dagster.disk import disk_advice, full_folder, is_disk_full

if TYPE_CHECKING:
    import dagster as dg

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


def _chain(error: Any) -> list[Any]:
    """A ``SerializableErrorInfo`` and its causes (``cause``, else ``context``), outermost first."""
    chain: list[Any] = []
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.cause or error.context
    return chain


def _short(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) > _MAX_CAUSE_LINES:
        lines = [*lines[:_MAX_CAUSE_LINES], "..."]
    return "\n       ".join(lines)


def _dbt_errors(text: str) -> str | None:
    """The lines of a dagster-dbt failure that name what failed, without its command line."""
    if "Errors parsed from dbt logs:" not in text:
        return None
    tail = text.split("Errors parsed from dbt logs:", 1)[1]
    keep = [
        line.strip()
        for line in tail.splitlines()
        if line.strip().startswith(("Failure in", "Runtime Error", "Database Error", "Compilation"))
        or "Error:" in line
        or "ERROR" in line
    ]
    return "dbt build failed: " + " / ".join(dict.fromkeys(keep)) if keep else None


def _disk_line(text: str) -> str | None:
    """The line of an error text that says the disk is full (the one naming a file, at best)."""
    lines = [line.strip() for line in text.splitlines() if is_disk_full(line)]
    return next((line for line in lines if "/" in line), lines[0] if lines else None)


def explain_step_failure(
    event: dg.DagsterEvent, config: ProjectConfig | None = None
) -> FailureExplanation:
    """The cause of a STEP_FAILURE event (the user's exception, not Dagster's wrapper) and a fix.

    In order: an interrupt; a full disk (whoever reported it: DuckDB, SQLite, dbt, the snapshot
    pre-check), with the folder and the space needed; a dbt build, reduced to the models that
    failed; a ``dg.Failure`` raised on purpose (it already says what to do); anything else.
    """
    data = event.step_failure_data
    step = event.step_key or "?"
    error = data.error if data else None
    chain = _chain(error)
    traceback = error.to_string() if error is not None else ""
    user = data.user_failure_data if data else None
    description = user.description if user is not None and user.description else ""
    whole = "\n".join([description, *(e.message for e in chain)])
    if any(e.cls_name in _INTERRUPTS for e in chain):
        return FailureExplanation(
            step, f"step {step} was interrupted", "Run the sync again.", traceback, True
        )
    if is_disk_full(whole) or (config is not None and full_folder(config, whole)):
        fix = disk_advice(config, whole) if config is not None else "Free disk space."
        cause = _disk_line(whole) or _short(description or whole)
        return FailureExplanation(step, cause, fix, traceback, disk_full=True)
    dbt = _dbt_errors(whole)
    if dbt is not None:
        fix = (
            "Fix the dbt model or test named above, then run the sync again; models that failed "
            "keep their previous data."
        )
        return FailureExplanation(step, _short(dbt), fix, traceback)
    if description:
        # dg.Failure raised on purpose (lock timeout, bad file): it already says what to do.
        return FailureExplanation(step, _short(description), "", traceback)
    real = next((e for e in chain if e.cls_name not in _WRAPPERS), chain[0] if chain else None)
    if real is None:
        return FailureExplanation(step, f"step {step} failed", "See the log.", traceback)
    cause = _short(real.message)  # "RuntimeError: what happened", as Python prints it
    return FailureExplanation(
        step, cause, "Fix the cause above, then run the sync again.", traceback
    )
