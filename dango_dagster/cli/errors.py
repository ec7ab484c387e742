"""The one place the command line turns errors into a message and an exit code.

Every deliberate failure is a ``DangoError`` (``dango_dagster.errors``): the handler's exception
becomes ``error: <what happened> <what to do>`` on stderr and the error's ``exit_code``. Command
modules raise; they never print errors or pick exit codes of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from dango_dagster.errors import (
    EXIT_ERROR,
    EXIT_HELD,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    DangoError,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_HELD",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "report",
    "report_unexpected",
    "run_handler",
]


def report(exc: DangoError) -> int:
    """Print ``exc`` as the command's last lines; return the exit code it maps to."""
    print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except DangoError as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug or the environment (full disk): explain it
        return report_unexpected(exc, getattr(args, "project", None))


def report_unexpected(exc: Exception, project: str | None) -> int:
    """An error nobody raised on purpose: the traceback into a log file, whose path is printed,
    then the cause and what to do as the last lines (a full disk names the folder and space)."""
    import datetime as dt
    import tempfile
    import traceback

    from dango_dagster.disk import disk_advice, full_folder, is_disk_full

    config = None
    with contextlib.suppress(Exception):
        from dango_dagster.config import load_config

        config = load_config(project)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d_%H%M%S")
    folder = config.logs_dir if config is not None else Path(tempfile.gettempdir())
    log = folder / f"error_{stamp}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        print(f"log:       {log} (full traceback)", file=sys.stderr)
    except OSError as write_error:
        print(f"log:       none (could not write {log}: {write_error})", file=sys.stderr)
    cause = " ".join(f"{type(exc).__name__}: {exc}".split())
    if config is not None and (is_disk_full(exc) or full_folder(config, str(exc))):
        fix = disk_advice(config, str(exc))
    elif is_disk_full(exc):
        fix = "Free disk space where the project lives, then run the command again."
    else:
        fix = "This is unexpected: the log above has the details; fix the cause or report it."
    print(f"error: {cause}", file=sys.stderr)
    print(f"fix:   {fix}", file=sys.stderr)
    return EXIT_ERROR
