"""``dango-dagster dev``: the Dagster web UI, daemon and code server for one project, quietly.

One command instead of a line of environment variables: ``dagster dev`` with the project's own
instance (``DAGSTER_HOME``, where ``dango-dagster sync`` records its runs, so the UI shows them
and the sensors keep their cursors across restarts), ``DANGO_PROJECT_DIR``, and the shipped
``workspace.yaml``. The console stays readable: Dagster's own services log warnings and errors
only (not two INFO lines per sensor tick), runs print INFO and up (``python_logs`` in the
instance settings), and ``dagster dev``'s notice that ``dg dev`` supersedes it is not shown:
``dg dev`` needs a ``dg`` project, which a Dango project folder is not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Python's warning filter syntax (message prefix, any category): Dagster's SupersessionWarning
# for `dagster dev`, in every process it starts (they inherit the environment).
_QUIET_SUPERSESSION = "ignore:Function `dev_command` is superseded"


def register(subparsers: argparse._SubParsersAction) -> None:
    from dango_dagster.cli import add_project_arg

    dev = subparsers.add_parser(
        "dev", help="the Dagster web UI (and its daemon) for the project: dagster dev, set up"
    )
    add_project_arg(dev)
    dev.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="port of the web UI (3000)")
    dev.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="what Dagster's own services print (default: warning)",
    )
    dev.set_defaults(handler=_dev)


def dev_command(
    project: Path, dagster_home: Path, *, host: str, port: int, log_level: str = "warning"
) -> tuple[list[str], dict[str, str]]:
    """The ``dagster dev`` command line and environment for a project (also used by tests)."""
    from dango_dagster.config import shipped_file

    cmd = [str(Path(sys.executable).with_name("dagster")), "dev"]
    cmd += ["-w", str(shipped_file("workspace.yaml")), "-h", host, "-p", str(port)]
    cmd += ["--log-level", log_level]
    warnings = os.environ.get("PYTHONWARNINGS")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DANGO_PROJECT_DIR": str(project),
        "PYTHONWARNINGS": f"{warnings},{_QUIET_SUPERSESSION}" if warnings else _QUIET_SUPERSESSION,
    }
    return cmd, env


def run_queue_note(dagster_home: Path) -> str | None:
    """A note when the instance lacks the run queue (made by an older version: ``run_queue:``).

    Runs still wait safely then, but inside a started step; the note says how to get the
    Queued state. The instance's settings are the user's file: we never rewrite them.
    """
    import yaml

    try:
        settings = yaml.safe_load((dagster_home / "dagster.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    coordinator = settings.get("run_coordinator") if isinstance(settings, dict) else None
    if isinstance(coordinator, dict) and coordinator.get("class") == "WarehouseRunCoordinator":
        return None
    return (
        f"  note: {dagster_home / 'dagster.yaml'} has no WarehouseRunCoordinator, so a run that "
        "waits for the warehouse shows as started, waiting in its step. To see it Queued, naming "
        "the lock's holder, put the run_coordinator section of docs/DAGSTER.md (The run queue) "
        "in place of its run_queue section."
    )


def _dev(args: argparse.Namespace) -> int:
    from dango_dagster.config import load_config, shipped_file
    from dango_dagster.sync import ensure_dagster_home

    config = load_config(getattr(args, "project", None))
    home = ensure_dagster_home(config)
    cmd, env = dev_command(
        config.root, home, host=args.host, port=args.port, log_level=args.log_level
    )
    print(f"Dagster web UI for {config.root}: http://{args.host}:{args.port}", flush=True)
    print(f"  instance {home}; Ctrl-C stops it", flush=True)
    note = run_queue_note(home)
    if note:
        print(note, flush=True)
    os.chdir(shipped_file("workspace.yaml").parent)  # workspace.yaml's working_directory: '.'
    os.execve(cmd[0], cmd, env)
    return 0  # pragma: no cover - execve does not return
