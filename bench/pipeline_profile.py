"""Where the time of one ``dango-dagster sync`` goes: imports, definitions, steps, event writes.

``bench_pipeline.py`` runs this file as a fresh process under ``python -X importtime`` (the way a
user's ``dango-dagster sync`` starts), with the sync itself under cProfile, and reads back one
JSON line. cProfile slows pure-Python code (imports, Dagster's bookkeeping) by roughly a third, so
the parts are read as shares, next to the unprofiled wall times of the same run.

    .venv/bin/python -X importtime bench/pipeline_profile.py PROJECT_DIR
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import contextlib  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# label -> (path suffix of the function's file, function name); cumulative seconds are reported.
_DG = "dagster/_core/"
PARTS: dict[str, tuple[str, str]] = {
    "sync handler (all of it)": ("dango_dagster/cli/sync_cmd.py", "handle_sync"),
    "open instance": ("dango_dagster/runner.py", "open_instance"),
    "definitions load": ("dango_dagster/defs_builder.py", "build_definitions"),
    "  of which ensure_manifest": ("dango_dagster/transformation.py", "ensure_manifest"),
    "run creation (run + plan snapshots)": (_DG + "instance/runs/run_domain.py", "create_run"),
    "execute_in_process": (_DG + "definitions/job_definition.py", "execute_in_process"),
    "dlt step (run_ingestion)": ("dango_dagster/ingestion.py", "run_ingestion"),
    "  dlt extract": ("dlt/pipeline/pipeline.py", "extract"),
    "  dlt normalize": ("dlt/pipeline/pipeline.py", "normalize"),
    "  dlt load": ("dlt/pipeline/pipeline.py", "load"),
    "dbt step (dbt_models)": ("dango_dagster/transformation.py", "dbt_models"),
    "  waiting on dbt (process or thread)": (
        "dagster_dbt/core/dbt_cli_invocation.py",
        "_stream_stdout",
    ),
    "snapshot (take_snapshot)": ("dango_dagster/snapshots.py", "take_snapshot"),
    "event handling (handle_new_event)": (
        _DG + "instance/methods/event_methods.py",
        "handle_new_event",
    ),
    "  of which sqlite store_event": ("sqlite/sqlite_event_log.py", "store_event"),
}
_SQLITE_CALLS = (
    "<method 'commit' of 'sqlite3.Connection' objects>",
    "<method 'close' of 'sqlite3.Connection' objects>",
)
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")
_PACKAGES = ("dagster", "dagster_dbt", "dagster_dlt", "dlt", "duckdb", "sqlalchemy")


def _cumulative(stats: pstats.Stats) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, ncalls, _tt, ct, _callers) in raw.items():
        for label, (suffix, func) in PARTS.items():
            if name == func and filename.replace("\\", "/").endswith(suffix):
                entry = found.setdefault(label, {"seconds": 0.0, "calls": 0})
                entry["seconds"] += ct
                entry["calls"] += ncalls
    return {label: found[label] for label in PARTS if label in found}


def _sqlite_commits(stats: pstats.Stats) -> dict[str, float]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out = {"seconds": 0.0, "calls": 0}
    for (filename, _line, name), (_cc, ncalls, tt, _ct, _callers) in raw.items():
        if filename == "~" and name in _SQLITE_CALLS:
            out["seconds"] += tt
            out["calls"] += ncalls
    return out


def child(project: str) -> None:
    """The fresh process: ``dango-dagster sync`` under cProfile; one JSON line on stdout."""
    from dango_dagster.cli import main

    profile = cProfile.Profile()
    out = io.StringIO()
    profile.enable()
    with contextlib.redirect_stdout(out):
        code = main(["sync", "--project", project])
    profile.disable()
    in_process = time.perf_counter() - _STARTED  # before the (slow) stats below
    stats = pstats.Stats(profile)
    result = {
        "exit_code": code,
        "in_process_seconds": in_process,
        "parts": _cumulative(stats),
        "sqlite_commit_and_close": _sqlite_commits(stats),
    }
    result["stats_seconds"] = time.perf_counter() - _STARTED - in_process
    print(json.dumps(result))


def parse_importtime(stderr: str) -> dict[str, Any]:
    """Total import time (top-level imports) and the first import of a few big packages."""
    total = 0.0
    packages: dict[str, float] = {}
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if not match:
            continue
        cumulative, indent, name = int(match.group(2)) / 1e6, match.group(3), match.group(4)
        if len(indent) <= 1:
            total += cumulative
        if name in _PACKAGES and name not in packages:
            packages[name] = cumulative
    return {"total_seconds": total, "first_import_seconds": packages}


def profile_sync(project: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run the profiled sync in a fresh process; wall time, import times and profile parts."""
    cmd = [sys.executable, "-X", "importtime", str(Path(__file__).resolve()), str(project)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"profiled sync failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["wall_seconds"] = wall
    result["imports"] = parse_importtime(done.stderr)
    return result


def format_profile(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal and the docs: seconds and share of the profiled wall time."""
    wall = result["wall_seconds"]
    rows = [("process wall time (profiled)", wall, None)]
    outside = wall - result["in_process_seconds"] - result["stats_seconds"]
    rows.append(("process start + interpreter exit (final GC)", outside, None))
    imports = result["imports"]
    rows.append(("imports (all, -X importtime)", imports["total_seconds"], None))
    for name, seconds in sorted(imports["first_import_seconds"].items(), key=lambda kv: -kv[1]):
        rows.append((f"  import {name} (first, incl. its deps)", seconds, None))
    for label, entry in result["parts"].items():
        rows.append((label, entry["seconds"], int(entry["calls"])))
    commit = result["sqlite_commit_and_close"]
    rows.append(("  sqlite commit+close (fsync)", commit["seconds"], int(commit["calls"])))
    lines = [f"  {'part':<44} {'s':>7} {'share':>6} {'calls':>6}"]
    for label, seconds, calls in rows:
        share = f"{100 * seconds / wall:5.1f}%" if wall else ""
        lines.append(f"  {label:<44} {seconds:>7.2f} {share:>6} {calls if calls else '':>6}")
    return lines


if __name__ == "__main__":
    child(sys.argv[1])
