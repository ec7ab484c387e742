"""``dango-dagster lake compact``: keep a DuckLake warehouse's files and snapshots in check."""

from __future__ import annotations

import argparse
import json

from dango_dagster.cli.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    lake = subparsers.add_parser("lake", help="maintain a DuckLake warehouse (warehouse.kind)")
    sub = lake.add_subparsers(dest="lake_command", metavar="ACTION", required=True)
    compact = sub.add_parser(
        "compact",
        help="merge small files, expire snapshots no reader can be pinned to, delete their files",
    )
    add_project_arg(compact)
    compact.add_argument(
        "--keep-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="keep snapshots older than the published one for this long (default 24)",
    )
    compact.add_argument("--wait", type=float, default=0.0, metavar="S", help="queue for the lock")
    compact.add_argument("--json", action="store_true", help="machine-readable output")
    compact.set_defaults(handler=_compact)


def _compact(args: argparse.Namespace) -> int:
    from dango_dagster.config import load_config
    from dango_dagster.errors import ProjectConfigError
    from dango_dagster.lake.maintenance import compact_lake

    config = load_config(getattr(args, "project", None))
    if config.settings.warehouse.kind != "ducklake":
        raise ProjectConfigError(
            f"{config.root} has a file warehouse: there is no lake to compact.",
            hint="`lake compact` is for warehouse.kind: ducklake (docs/SCALING.md).",
        )
    done = compact_lake(config, keep_hours=args.keep_hours, lock_timeout=args.wait)
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        print(
            f"compacted in {done['seconds']:.2f} s: {done['snapshots_expired']} snapshots "
            f"expired (published: {done['published_snapshot']}), Parquet files "
            f"{done['parquet_files_before']} -> {done['parquet_files_after']}"
        )
    return EXIT_OK
