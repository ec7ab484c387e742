"""``dango-dagster sync``: Dango's CLI sync, run through Dagster and recorded in its instance.

Fails at once (exit 2, naming the holder) when another process holds the warehouse lock, as
Dango's own ``dango sync`` does; ``--wait S`` opts into queueing for up to S seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from dango_dagster.cli.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    sync = subparsers.add_parser(
        "sync", help="load sources, build dbt models and publish a snapshot (through Dagster)"
    )
    add_project_arg(sync)
    sync.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="NAME",
        help="only this source (repeatable; default: all) plus the dbt models downstream of it",
    )
    sync.add_argument(
        "--sync-only",
        action="store_true",
        help="load the sources only: no dbt models, no snapshot (Dango's `sync_only`)",
    )
    sync.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="S",
        help="queue up to S seconds for the warehouse lock (default: fail at once if it is held)",
    )
    sync.set_defaults(handler=handle_sync)


def progress_printer(started: float) -> Callable[[dict[str, Any]], None]:
    """One terminal line per change of the run's status file (phase, message, lock holder).

    Bound to the terminal as it is now: while the run executes, stdout carries dbt's output
    into the run's log file instead.
    """
    out = sys.stdout

    def report(data: dict[str, Any]) -> None:
        line = f"[{time.monotonic() - started:6.1f}s] {data.get('phase', '?'):<12} "
        line += str(data.get("message", ""))
        holder = data.get("holder")
        if holder:
            line += f" - held by PID {holder.get('pid')} ({holder.get('source')}: "
            line += f"{holder.get('operation')}) since {holder.get('started_at')}"
        print(line, file=out, flush=True)

    return report


def print_summary(outcome: Any) -> None:
    """What a user wants after a sync: tables and rows, views, checks, the snapshot, the time."""
    if outcome.tables:
        width = max(len(t.key) for t in outcome.tables)
        print("\nmaterialized:")
        for table in outcome.tables:
            if table.rows is not None:
                what = f"{table.rows:>10,} rows"
            elif table.kind == "view":
                what = f"{'view':>15}"
            elif table.key == outcome.snapshot_key and outcome.snapshot_bytes is not None:
                what = f"{outcome.snapshot_bytes / 1e6:>12.1f} MB"
            else:
                what = ""
            print(f"  {table.key:<{width}}  {what}")
    checks = outcome.checks_passed + len(outcome.checks_failed)
    if checks:
        line = f"\nchecks:    {outcome.checks_passed} of {checks} passed"
        if outcome.checks_failed:
            line += f"; FAILED: {', '.join(outcome.checks_failed)}"
        print(line)
    if outcome.snapshot_path:
        print(f"snapshot:  {outcome.snapshot_path}")
    print(f"run id:    {outcome.run_id}")
    state = "succeeded" if outcome.success else "FAILED"
    print(f"{state} in {outcome.seconds:.1f} s ({outcome.rows_loaded:,} rows loaded)")


def raise_if_failed(outcome: Any) -> None:
    """A failed run becomes the error the CLI maps to its exit code (lock timeouts: 2, Ctrl-C:
    130, SIGTERM: 143): its cause and fix are the command's last lines, after the log's path."""
    import signal

    from dango_dagster.errors import (
        RunFailedError,
        RunInterruptedError,
        RunLockTimeoutError,
        RunTerminatedError,
    )

    if outcome.success:
        return
    if outcome.interrupted is not None:
        error = RunTerminatedError if outcome.interrupted == signal.SIGTERM else RunInterruptedError
        raise error(outcome.error or "interrupted", hint="")
    if outcome.log_path:
        print(f"log:       {outcome.log_path} (full traceback, dbt output)")
    failed: type[RunFailedError] = RunLockTimeoutError if outcome.lock_timeout else RunFailedError
    raise failed(outcome.error or "the run failed", hint=outcome.fix or "")


def handle_sync(args: argparse.Namespace) -> int:
    from dango_dagster.config import load_config
    from dango_dagster.errors import DbtLockTimeout
    from dango_dagster.lock import read_lock_holder

    config = load_config(args.project)
    if args.wait is None:
        # Answer in well under a second, before importing dagster and dbt.
        holder = read_lock_holder(config.root)
        if holder is not None:
            raise DbtLockTimeout(
                config.root,
                holder,
                0.0,
                0.0,
                hint="`dango-dagster sync` does not queue: run it again when that finishes, "
                "or pass --wait SECONDS.",
            )
    from dango_dagster.sync import run_pipeline

    started = time.monotonic()
    outcome = run_pipeline(
        config,
        sources=args.sources,
        sync_only=args.sync_only,
        wait_seconds=args.wait,
        progress=progress_printer(started),
        quiet=True,
        handle_signals=True,
    )
    if outcome.interrupted is None:  # an interrupted sync says one line, and nothing else
        print_summary(outcome)
    raise_if_failed(outcome)
    return EXIT_OK
