"""``dango-dagster demo init|data|run``: the demo shop, for first steps, tests and benchmarks."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from dango_dagster.cli.errors import EXIT_OK

if TYPE_CHECKING:  # heavy imports stay inside the handlers
    from pathlib import Path

    from dango_dagster.config import ProjectConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_size_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows",
        type=_positive_int,
        default=500,
        metavar="N",
        help="orders to generate; customers are N/5, payments about N (default 500)",
    )
    parser.add_argument(
        "--seed", type=int, default=42, metavar="S", help="random seed; same seed, same files"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    demo = subparsers.add_parser("demo", help="create and run the demo shop project")
    sub = demo.add_subparsers(dest="demo_command", metavar="ACTION", required=True)

    init = sub.add_parser(
        "init",
        help="create a complete demo project folder (config, dbt project, generated data)",
        description="Create a fresh demo project in DIR (which must be new or empty).",
    )
    init.add_argument("dir", metavar="DIR", help="folder to create (must not exist or be empty)")
    _add_size_args(init)
    init.set_defaults(handler=_init)

    data = sub.add_parser(
        "data",
        help="(re)generate the demo upload files in an existing project",
        description=(
            "Write the demo shop's CSV files under data/uploads/<table>/ of the project "
            "(replaces the generated *_0001.csv files, keeps any others)."
        ),
    )
    add_project_arg(data)
    _add_size_args(data)
    data.set_defaults(handler=_data)

    run = sub.add_parser(
        "run",
        help="the main job: generate the demo data if missing, run everything through Dagster",
        description=(
            "Generate the demo data if the project has none, then load, transform and snapshot "
            "it through Dagster (recorded in the project's instance), and say how to open the UI."
        ),
    )
    add_project_arg(run)
    _add_size_args(run)
    run.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="S",
        help="queue up to S seconds if another process holds the warehouse lock (default 300)",
    )
    run.set_defaults(handler=_run)


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dango_dagster.config import load_config
    from dango_dagster.demo import init_demo_project

    started = time.monotonic()
    root = init_demo_project(Path(args.dir), rows=args.rows, seed=args.seed)
    config = load_config(root)
    print(f"Created demo project {root} in {time.monotonic() - started:.1f} s:")
    print(f"  {'.dango/sources.yml':<30} sources: {', '.join(s.name for s in config.sources)}")
    print(f"  {'.dango/schedules.yml':<30} schedules: "
          f"{', '.join(s.name for s in config.schedules) or '-'}")  # fmt: skip
    print(f"  {'.dango/dango_dagster.yml':<30} notebook users: "
          f"{', '.join(config.notebook_users) or '-'}")  # fmt: skip
    print(f"  {'dbt_project/':<30} dbt project (staging and marts models, tests)")
    _print_uploads(config)
    print("Next steps:")
    print(f"  export DANGO_PROJECT_DIR={root}")
    print("  dango-dagster demo run                        # load, transform, snapshot")
    print("  dango-dagster dev                             # the Dagster web UI")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from dango_dagster.cli.sync_cmd import print_summary, progress_printer, raise_if_failed
    from dango_dagster.config import load_config
    from dango_dagster.demo import TABLES, generate_demo_data

    started = time.monotonic()
    config = load_config(args.project)
    if not all((config.uploads_dir / table).is_dir() for table in TABLES):
        generate_demo_data(config.uploads_dir, rows=args.rows, seed=args.seed)
        print(f"Generated the demo data ({args.rows} orders):")
        _print_uploads(config)
    print(f"Running the pipeline of {config.root} through Dagster ...", flush=True)
    from dango_dagster.sync import run_pipeline

    outcome = run_pipeline(
        config,
        wait_seconds=args.wait,
        progress=progress_printer(started),
        launched_by="demo",
        quiet=True,
    )
    print_summary(outcome)
    raise_if_failed(outcome)
    print("\nOpen the Dagster web UI (the run above is in its Runs list):")
    print(f"  {sys.prefix}/bin/dango-dagster dev --project {config.root}")
    print("  then browse http://127.0.0.1:3000")
    return EXIT_OK


def _data(args: argparse.Namespace) -> int:
    from dango_dagster.config import load_config
    from dango_dagster.demo import generate_demo_data

    config = load_config(args.project)
    started = time.monotonic()
    generate_demo_data(config.uploads_dir, rows=args.rows, seed=args.seed)
    print(f"Generated the demo data in {time.monotonic() - started:.1f} s:")
    _print_uploads(config)
    return EXIT_OK


def _print_uploads(config: ProjectConfig) -> None:
    from dango_dagster.demo import TABLES

    shop = config.uploads_dir
    for table in TABLES:
        files = sorted((shop / table).glob("*.csv"))
        with_rows = sum(_count_rows(path) for path in files)
        rel = (shop / table).relative_to(config.root)
        print(f"  {str(rel) + '/':<30} {len(files)} file(s), {with_rows} rows of {table}")


def _count_rows(path: Path) -> int:
    """Data lines of a generated CSV (header excluded; the generator never quotes newlines)."""
    with open(path, "rb") as fh:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1)
