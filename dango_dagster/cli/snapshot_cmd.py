"""``dango-dagster snapshot create|list``: consistent warehouse copies for readers.

``create`` takes the warehouse lock like every CLI write: it fails at once (exit 2, naming the
holder) when a sync holds it, unless ``--wait S`` gives it patience.
"""

from __future__ import annotations

import argparse
import json
import sys

from dango_dagster.cli.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    snap = subparsers.add_parser("snapshot", help="create or list warehouse snapshots")
    sub = snap.add_subparsers(dest="snapshot_command", metavar="ACTION", required=True)

    create = sub.add_parser(
        "create",
        help="take a snapshot: publish it and give each notebook user a copy",
        description="Take a consistent snapshot under the warehouse lock, publish it for the "
        "query API and Metabase, and link it for each notebook user (default: notebooks.users "
        "of .dango/project.yml). Fails at once if the lock is held, unless --wait.",
    )
    add_project_arg(create)
    create.add_argument(
        "--user",
        dest="users",
        action="extend",
        nargs="+",
        metavar="U",
        help="notebook user(s) to snapshot for (repeatable; default: notebooks.users)",
    )
    create.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the warehouse lock (default 0: fail at once)",
    )
    create.add_argument(
        "--no-publish",
        action="store_true",
        help="only the user snapshots; leave the published snapshot as it is",
    )
    create.add_argument("--json", action="store_true", help="machine-readable output")
    create.set_defaults(handler=_create)

    lst = sub.add_parser("list", help="list notebook snapshots and the published one")
    add_project_arg(lst)
    lst.add_argument("--user", default=None, metavar="U", help="only this user's snapshots")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(handler=_list)


def _config(args: argparse.Namespace):  # -> ProjectConfig
    from dango_dagster.config import load_config

    return load_config(getattr(args, "project", None))


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _create(args: argparse.Namespace) -> int:
    from dango_dagster.lock import LockWait
    from dango_dagster.snapshots import take_snapshot

    config = _config(args)

    def on_wait(step: LockWait) -> None:
        who = step.holder.describe() if step.holder else "another process"
        print(
            f"waiting for the warehouse lock held by {who} ... {step.waited_seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    result = take_snapshot(
        config,
        users=args.users,
        publish=not args.no_publish,
        lock_timeout=max(0.0, args.wait),
        on_lock_wait=on_wait,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return EXIT_OK
    print(
        f"snapshot taken at {result.taken_at.isoformat()}: {_mb(result.size_bytes)}, "
        f"{result.tables} tables; lock held {result.lock_held_seconds:.2f} s, "
        f"total {result.total_seconds:.2f} s"
    )
    if result.published_path is not None:
        print(f"  published: {result.published_path}")
    for user, path in result.user_paths.items():
        print(f"  {user}: {path}")
    if not result.user_paths:
        print("  (no notebook users: set notebooks.users in .dango/project.yml or pass --user)")
    for path in result.deleted:
        print(f"  removed old: {path.name}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    import datetime as dt

    from dango_dagster.snapshots import list_snapshots

    config = _config(args)
    snaps = list_snapshots(config, args.user)
    published = None
    try:
        st = config.published_snapshot_path.stat()
        published = {
            "path": str(config.published_snapshot_path),
            "taken_at": dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat(),
            "size_bytes": st.st_size,
        }
    except FileNotFoundError:
        pass
    if args.json:
        print(
            json.dumps(
                {"published": published, "snapshots": [s.as_dict() for s in snaps]}, indent=2
            )
        )
        return EXIT_OK
    if published is None:
        print("published: none yet (run `dango-dagster snapshot create`)")
    else:
        print(
            f"published: {published['path']} ({_mb(published['size_bytes'])}, "
            f"{published['taken_at']})"
        )
    if not snaps:
        print("no notebook snapshots" + (f" for {args.user}" if args.user else ""))
        return EXIT_OK
    print(f"{'user':<16} {'taken at (UTC)':<20} {'size':>10}  path")
    for s in snaps:
        when = s.taken_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{s.user:<16} {when:<20} {_mb(s.size_bytes):>10}  {s.path}")
    return EXIT_OK
