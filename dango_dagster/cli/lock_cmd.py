"""``dango-dagster lock status|wait``: the "database is locked" diagnosis from the command line."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dango_dagster.cli.errors import EXIT_HELD, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    lock = subparsers.add_parser("lock", help="inspect or wait for the warehouse write lock")
    sub = lock.add_subparsers(dest="lock_command", metavar="ACTION", required=True)

    status = sub.add_parser("status", help="who holds the lock (exit 0 free, 1 held)")
    add_project_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    wait = sub.add_parser("wait", help="wait until the lock is free")
    add_project_arg(wait)
    wait.add_argument("--timeout", type=float, default=300.0, metavar="S")
    wait.add_argument("--interval", type=float, default=0.1, metavar="S", help=argparse.SUPPRESS)
    wait.set_defaults(handler=_wait)


def _project(args: argparse.Namespace) -> Path:
    from dango_dagster.config import resolve_project_dir

    return resolve_project_dir(getattr(args, "project", None))


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def lock_report(project_dir: Path) -> dict[str, Any]:
    """Everything `lock status` shows, as data (the CLI prints it; tests and scripts read it)."""
    from dango_dagster.lock import lock_paths, lock_target, read_holder_info, read_lock_holder
    from dango_dagster.lock.holder import read_file_lock_holder
    from dango_dagster.lock.info import stale_reason

    lock_path, info_path = lock_paths(project_dir)
    target = lock_target(project_dir)
    holder = read_lock_holder(project_dir, target)
    # dbt.lock.json describes the local flock only: judge it against that holder.
    local = holder if target.backend == "file" else read_file_lock_holder(project_dir)
    on_disk = read_holder_info(info_path)
    reason = stale_reason(info_path, local)
    server = None
    if target.backend == "postgres":
        from dango_dagster.lock.postgres import redact_dsn

        server = redact_dsn(target.dsn or "")
    return {
        "project": str(project_dir),
        "backend": target.backend,
        "key": target.key,
        "server": server,
        "lock_file": str(lock_path),
        "held": holder is not None,
        "holder": None
        if holder is None
        else holder.as_dict() | {"held_seconds": holder.held_seconds},
        "info_file": str(info_path),
        "info_on_disk": None if on_disk is None else on_disk.to_json(),
        "info_corrupt": info_path.exists() and on_disk is None,
        "info_stale": reason is not None,
        "info_stale_reason": reason,
        **run_report(project_dir),
    }


def run_report(project_dir: Path) -> dict[str, Any]:
    """Runs from the status files: those queued, waiting or writing now, and those found dead.

    A status file in a running phase whose process is gone (kill -9, OOM) is marked
    ``interrupted`` here and listed under ``dead_runs``; its Dagster run is marked failed by the
    next sync or the dead-runs sensor (this command never imports Dagster).
    """
    from dango_dagster.lock import lock_paths
    from dango_dagster.sync_status import FINISHED_PHASES, list_statuses, reconcile_status_files

    state_dir = lock_paths(project_dir)[0].parent  # status files live beside the lock
    dead = reconcile_status_files(state_dir) if state_dir.is_dir() else []
    keys = ("run_id", "phase", "message", "pid", "hostname", "started_at", "updated_at")
    active = [
        {k: s.get(k) for k in (*keys, "holder", "waited_seconds")}
        for s in (list_statuses(state_dir) if state_dir.is_dir() else [])
        if s.get("phase") not in FINISHED_PHASES
    ]
    return {
        "runs": active,
        "dead_runs": [{k: s.get(k) for k in (*keys, "interrupted_during")} for s in dead],
    }


def _status(args: argparse.Namespace) -> int:
    report = lock_report(_project(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_HELD if report["held"] else EXIT_OK
    print(f"project:   {report['project']}")
    if report["backend"] == "postgres":
        print(f"backend:   postgres (warehouse {report['key']!r} on {report['server']})")
    holder = report["holder"]
    if holder is None:
        print("lock:      free")
    elif not holder["known"] and holder.get("backend") == "postgres":
        print(f"lock:      HELD by an unknown holder (Postgres session {holder['backend_pid']},")
        print(f"           application {holder['application_name']!r}, from {holder['hostname']})")
        print("           it holds the advisory lock but wrote no holder info")
    elif not holder["known"]:
        pid = f" (kernel lock table: PID {holder['pid']})" if holder["pid"] else ""
        print(f"lock:      HELD by an unknown holder{pid}")
        print("           it holds dbt.lock but wrote no holder info (a foreign tool, or a")
        print("           Dango process between taking the lock and describing itself)")
    else:
        print("lock:      HELD")
        for key in ("pid", "hostname", "source", "operation", "started_at"):
            print(f"  {key + ':':<12}{holder.get(key)}")
        print(f"  {'held for:':<12}{_fmt_age(holder['held_seconds'])}")
    if report["info_stale"]:
        print(f"note:      {report['info_file']} is stale: {report['info_stale_reason']}.")
        print("           Harmless (the kernel owns the lock); the next acquisition cleans it.")
    _print_runs(report)
    return EXIT_HELD if holder is not None else EXIT_OK


def _print_runs(report: dict[str, Any]) -> None:
    for run in report["runs"]:
        what = run["phase"]
        holder = run.get("holder")
        if run["phase"] == "lock_waiting" and holder:
            what += f" for PID {holder.get('pid')} ({run.get('waited_seconds') or 0:.0f} s)"
        print(f"run:       {str(run['run_id'])[:8]} {what}: {run['message']} (PID {run['pid']})")
    for run in report["dead_runs"]:
        print(f"dead run:  {str(run['run_id'])[:8]} {run['message']}; marked interrupted.")
        print("           Its Dagster run is marked failed by the next sync (or dagster dev).")


def _wait(args: argparse.Namespace) -> int:
    from dango_dagster.lock import lock_target, read_lock_holder

    project = _project(args)
    target = lock_target(project)
    # Postgres: each look is a connection to the lock server; 4 a second is plenty for a human.
    interval = args.interval if target.backend == "file" else max(args.interval, 0.25)
    start = time.monotonic()
    last_key: tuple[int | None] | None = None
    last_print = 0.0
    while True:
        holder = read_lock_holder(project, target)
        waited = time.monotonic() - start
        if holder is None:
            print(f"lock is free (waited {waited:.1f} s)")
            return EXIT_OK
        if waited >= args.timeout:
            from dango_dagster.errors import DbtLockTimeout

            raise DbtLockTimeout(
                project,
                holder,
                waited,
                args.timeout,
                hint="It is still locked: see who holds it with `dango-dagster lock status`.",
            )
        # Polling the kernel's lock table disturbs no one (taking the lock to test it would).
        # Keyed by PID: a holder that is releasing (info removed, flock not yet) is the same one.
        key = (holder.pid,)
        if key != last_key or waited - last_print >= 5:
            print(f"waiting for {holder.describe()} ... {waited:.0f} s", flush=True)
            last_key, last_print = key, waited
        time.sleep(min(interval, max(0.01, args.timeout - waited)))
