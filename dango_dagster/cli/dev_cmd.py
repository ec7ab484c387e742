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


# What the shipped instance settings add (class in its section -> what a user misses without it).
_SHIPPED_SECTIONS = {
    "run_coordinator": (
        "WarehouseRunCoordinator",
        "a run that waits for the warehouse shows as started, waiting in its step, instead of "
        "Queued naming the lock's holder (docs/DAGSTER.md, The run queue)",
    ),
    "run_launcher": (
        "WarmRunLauncher",
        "every run starts in a new process that imports Dagster, dbt and the definitions again, "
        "about 3.5 s (docs/DAGSTER.md, Run launcher)",
    ),
}


def instance_settings_note(dagster_home: Path) -> str | None:
    """A note when the instance lacks the run queue or the warm run launcher (made by an older
    version). Runs still work and wait safely; the note says what is missing and how to get it.
    The instance's settings are the user's file: we never rewrite them.
    """
    import yaml

    path = dagster_home / "dagster.yaml"
    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(settings, dict):
        return None
    missing = []
    for section, (cls, without) in _SHIPPED_SECTIONS.items():
        value = settings.get(section)
        if not (isinstance(value, dict) and value.get("class") == cls):
            missing.append(f"    - no {section} {cls}: {without}")
    if not missing:
        return None
    return "\n".join(
        [
            f"  note: {path} predates these instance settings:",
            *missing,
            "    To get them, copy those sections of dagster_home/dagster.yaml (shipped with"
            " dango-dagster) into it, in place of its run_queue section.",
        ]
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
    note = instance_settings_note(home)
    if note:
        print(note, flush=True)
    os.chdir(shipped_file("workspace.yaml").parent)  # workspace.yaml's working_directory: '.'
    os.execve(cmd[0], cmd, env)
    return 0  # pragma: no cover - execve does not return
