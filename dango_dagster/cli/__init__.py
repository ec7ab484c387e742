"""``dango-dagster``: the command line.

Each concept has its own module with a ``register(subparsers)`` function. Modules import only the
standard library at import time and pull in heavy parts (dagster, dbt, duckdb) inside their
handlers, so ``dango-dagster lock status`` answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules, in the order `--help` lists them.
_COMMAND_MODULES = (
    "lock_cmd",
    "demo_cmd",
    "sync_cmd",
    "snapshot_cmd",
    "api_cmd",
    "query_cmd",
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
