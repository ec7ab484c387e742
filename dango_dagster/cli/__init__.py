"""``dango-dagster``: the command line.

Each concept has its own module with a ``register(subparsers)`` function. Modules import only the
standard library at import time and pull in heavy parts (dagster, dbt, duckdb) inside their
handlers, so ``dango-dagster lock status`` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
from collections.abc import Sequence

# Subcommand modules, in the order `--help` lists them.
_COMMAND_MODULES = (
    "lock_cmd",
    "demo_cmd",
    "sync_cmd",
    "dev_cmd",
    "snapshot_cmd",
    "api_cmd",
    "query_cmd",
    "lake_cmd",
)


def add_project_arg(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``--project DIR``: default ``DANGO_PROJECT_DIR``, then the current folder.

    Accepted before or after the subcommand; a subcommand's copy defaults to SUPPRESS so it never
    overwrites a ``--project`` given before the subcommand.
    """
    parser.add_argument(
        "--project",
        metavar="DIR",
        default=None if top_level else argparse.SUPPRESS,
        help="Dango project folder (default: $DANGO_PROJECT_DIR, then the current folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dango-dagster",
        description="Dango's local data stack under Dagster: one warehouse write lock for all.",
    )
    add_project_arg(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from dango_dagster.cli.errors import run_handler

    return run_handler(handler, args)


def console_main() -> None:
    """The ``dango-dagster`` executable: :func:`main`, then a quick exit after heavy commands.

    After a run through Dagster the heap holds millions of objects (dagster, dbt, dlt) and the
    interpreter's shutdown walks and finalises them all: about 1.3 s on 2 cores, after the user
    already has the summary. So run the exit handlers (logging, multiprocessing, dagster's own),
    flush the standard streams, and leave without that walk.
    """
    code = main()
    if "dagster" in sys.modules:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
