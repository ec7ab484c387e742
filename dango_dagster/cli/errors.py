"""Turn the product's own errors into a clear message and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_HELD = 1  # `lock status`: the lock is held
EXIT_LOCKED = 2  # a write could not take the lock (fail-fast), or bad usage
EXIT_ERROR = 3


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from dango_dagster.config import ProjectConfigError
    from dango_dagster.lock import DbtLockError, DbtLockTimeout

    try:
        return handler(args)
    except DbtLockTimeout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (DbtLockError, ProjectConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
