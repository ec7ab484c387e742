"""The one place the command line turns errors into a message and an exit code.

Every deliberate failure is a ``DangoError`` (``dango_dagster.errors``): the handler's exception
becomes ``error: <what happened> <what to do>`` on stderr and the error's ``exit_code``. Command
modules raise; they never print errors or pick exit codes of their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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
