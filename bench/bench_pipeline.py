"""The demo pipeline through Dagster, in each path a user takes, against the bare tools.

For each size it makes a fresh demo project and times, in the same run, the wall clock of what a
user starts (fresh processes), always the same work: load the csv sources, ``dbt build``
(models and tests), copy the warehouse for readers.

- bare:     dlt + ``dbt build`` + a plain file copy, in a new process (``bare_once.py``)
- sync:     ``dango-dagster sync --project P``
- demo run: ``dango-dagster demo run --project P`` (the main job), if the command exists
- sensor:   a CSV dropped into ``data/uploads/orders/`` while ``dagster dev`` runs; the run
            the uploads sensor launches (source + downstream dbt + snapshot), from created to
            finished, as the web UI shows it (launch overhead and sensor tick reported apart)

bare, sync and demo run alternate within each repetition so the noise of the shared machine hits
them alike; the sensor runs follow with ``dagster dev`` up. Then one sync is profiled (cProfile and
``-X importtime``) to show where its time goes. Figures also go to ``bench/results/*.json``.

    .venv/bin/python bench/bench_pipeline.py             # 500 and 100000 orders, 3 reps each
    .venv/bin/python bench/bench_pipeline.py --quick     # 500 orders, 1 rep: a smoke test
    .venv/bin/python bench/bench_pipeline.py --rows 500 --repeat 5 --paths bare sync
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dagster_dev_path import BenchError, DagsterDev, run_figures
from pipeline_profile import format_profile, profile_sync

from dango_dagster.config import SETTINGS_RELPATH, ProjectConfig, load_config
from dango_dagster.demo import init_demo_project

BIN = Path(sys.executable).parent
BENCH = Path(__file__).resolve().parent
PATHS = ("bare", "sync", "demo", "sensor")
LABELS = {
    "bare": "bare tools (dlt + dbt build + cp)",
    "sync": "dango-dagster sync",
    "demo": "dango-dagster demo run",
    "sensor": "sensor run under dagster dev",
}
BARE_STEPS = ("imports", "load", "dbt_build", "copy")
TIMEOUT = 900.0
_RUN_ID = re.compile(r"^run id:\s+(\S+)", re.MULTILINE)


def _cli_env() -> dict[str, str]:
    """The user's environment, minus what would point the CLI at another project or instance."""
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DANGO_PROJECT_DIR")}


def _run(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        cmd, env=_cli_env(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tails = f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        raise BenchError(f"{' '.join(cmd)} exited {done.returncode}:\n{tails}")
    return seconds, done.stdout


def prepare_project(base: Path, rows: int) -> tuple[ProjectConfig, Any]:
    """A fresh demo project with a fast uploads sensor, its manifest parsed and instance created
    (so no path pays the one-off ``dbt parse`` or instance set-up in its first repetition)."""
    from dagster import DagsterInstance

    from dango_dagster.defs.dbt.assets import ensure_manifest
    from dango_dagster.sync import ensure_dagster_home

    root = init_demo_project(base / f"demo_{rows}", rows=rows)
    settings_path = root / SETTINGS_RELPATH
    settings = yaml.safe_load(settings_path.read_text(encoding="utf-8")) or {}
    settings.setdefault("automation", {}).update(
        {"upload_sensor_interval_seconds": 1, "upload_settle_seconds": 0}
    )
    settings_path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    config = load_config(root)
    ensure_manifest(config)
    instance = DagsterInstance.from_config(str(ensure_dagster_home(config)))
    return config, instance


def time_bare(config: ProjectConfig, _instance: Any) -> dict[str, Any]:
    seconds, out = _run([sys.executable, str(BENCH / "bare_once.py"), str(config.root)])
    return {"seconds": seconds, "steps": json.loads(out.strip().splitlines()[-1])}


def _time_cli(config: ProjectConfig, instance: Any, args: list[str]) -> dict[str, Any]:
    from dagster import RunsFilter

    seconds, out = _run([str(BIN / "dango-dagster"), *args, "--project", str(config.root)])
    match = _RUN_ID.search(out)
    if not match:
        raise BenchError(f"no run id in the output of {args}:\n{out[-2000:]}")
    record = instance.get_run_records(RunsFilter(run_ids=[match.group(1)]))[0]
    figures = run_figures(instance, record)
    figures["outside_run_seconds"] = seconds - (figures["run_seconds"] or 0.0)
    return {"seconds": seconds, **figures}


def time_sync(config: ProjectConfig, instance: Any) -> dict[str, Any]:
    return _time_cli(config, instance, ["sync"])


def time_demo(config: ProjectConfig, instance: Any) -> dict[str, Any]:
    return _time_cli(config, instance, ["demo", "run"])


def demo_run_exists() -> bool:
    cmd = [str(BIN / "dango-dagster"), "demo", "run", "--help"]
    return subprocess.run(cmd, capture_output=True, env=_cli_env(), check=False).returncode == 0


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "n": len(values)}


def _value(path: str, sample: dict[str, Any]) -> float:
    return float(sample["run_seconds"] if path == "sensor" else sample["seconds"])


def _attempt(out: dict[str, Any], path: str, measure: Callable[[], dict[str, Any]]) -> str:
    """One sample; a failed run is recorded (and left out of the figures), not fatal."""
    try:
        got = measure()
    except BenchError as exc:
        out["failures"].append(f"{path}: {exc}"[-3000:])
        return f"{path} FAILED ({str(exc).splitlines()[0][:80]})"
    out["samples"][path].append(got)
    return _brief(path, got)


def _brief(path: str, got: dict[str, Any]) -> str:
    if path != "sensor":
        return f"{path} {got['seconds']:.1f} s"
    return (f"sensor run {got['run_seconds']:.1f} s (launch {got['launch_seconds']:.1f} s, "
            f"tick {got['tick_seconds']:.1f} s, other runs {got['other_runs']})")  # fmt: skip


def bench_size(
    base: Path, rows: int, repeat: int, paths: list[str], log_dir: Path
) -> dict[str, Any]:
    config, instance = prepare_project(base, rows)
    timers = {"bare": time_bare, "sync": time_sync, "demo": time_demo}
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    out: dict[str, Any] = {"samples": samples, "failures": [], "project": str(config.root)}
    for rep in range(repeat):
        line = [
            _attempt(out, path, lambda t=timers[path]: t(config, instance))
            for path in PATHS
            if path in paths and path != "sensor"
        ]
        if line:
            print(f"  [{rows}] rep {rep + 1}/{repeat}: {' | '.join(line)}", flush=True)
    if "sensor" in paths:
        log = log_dir / f"dagster_dev_{rows}.log"
        with DagsterDev(config, Path(instance.root_directory), log) as dev:
            try:
                if config.warehouse_path.exists():  # synced above: the sensor launches nothing
                    dev.wait_sensor_ticked()
                    print(f"  [{rows}] dagster dev up; the sensor started from the synced files")
                else:
                    out["sensor_first_run"] = first = dev.startup_run()
                    took = f"{first['run_seconds']:.1f} s (launch {first['launch_seconds']:.1f} s)"
                    print(f"  [{rows}] dagster dev up; its first sensor run took {took}")
            except BenchError as exc:  # e.g. the run failed: the drops below still tell
                out["failures"].append(f"sensor (first run at start): {exc}"[-3000:])
                print(f"  [{rows}] the first sensor run FAILED: {str(exc).splitlines()[0]}")
                dev.wait_idle()
            for rep in range(repeat):
                got = _attempt(out, "sensor", dev.sensor_run)
                print(f"  [{rows}] rep {rep + 1}/{repeat}: {got}", flush=True)
    out["summary"] = {
        p: {
            **_stats([_value(p, s) for s in samples[p]]),
            "failed": sum(f.startswith(f"{p}: ") for f in out["failures"]),
        }
        for p in paths
        if samples[p]
    }
    out["config"] = config
    return out


def print_tables(report: dict[str, Any]) -> list[str]:
    lines = ["| path | orders | n | median s | min s | x bare (median) | x bare (min) |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for rows, size in report["sizes"].items():
        summary = size["summary"]
        bare = summary.get("bare")
        for path, st in summary.items():
            ratio = f"{st['median'] / bare['median']:.2f}" if bare else "-"
            ratio_min = f"{st['min'] / bare['min']:.2f}" if bare else "-"
            n = f"{st['n']} ({st['failed']} failed)" if st["failed"] else str(st["n"])
            lines.append(f"| {LABELS[path]} | {int(rows):,} | {n} | {st['median']:.1f} | "
                         f"{st['min']:.1f} | {ratio} | {ratio_min} |")  # fmt: skip
    lines += ["", "Medians of the parts (s):", ""]
    lines.append("| orders | path | parts |")
    lines.append("|---:|---|---|")
    for rows, size in report["sizes"].items():
        for path, samples in size["samples"].items():
            lines.append(f"| {int(rows):,} | {path} | {_parts(path, samples)} |")
    return lines


def _parts(path: str, samples: list[dict[str, Any]]) -> str:
    """Median seconds of each part of a path (medians of parts need not add up to the total)."""
    if not samples:
        return "-"
    rows: list[dict[str, float]] = []
    for x in samples:
        if path == "bare":
            rows.append({step: x["steps"][step] for step in BARE_STEPS})
        elif path == "sensor":
            rows.append({"sensor tick (drop->created)": x["tick_seconds"], **x["phases"]})
        else:
            rows.append({"process outside the run": x["outside_run_seconds"], **x["phases"]})
    names = list(dict.fromkeys(name for row in rows for name in row))
    return ", ".join(
        f"{name} {statistics.median(row.get(name, 0.0) for row in rows):.2f}" for name in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--quick", action="store_true", help="500 orders, 1 repetition")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled sync")
    parser.add_argument("--profile-rows", type=int, help="size to profile (default: the largest)")
    parser.add_argument("--json", type=Path, help="default: bench/results/pipeline_<time>.json")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = [500], 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops dagster dev
    os.environ.pop("DAGSTER_HOME", None)  # each project's own instance, as the CLI picks it
    paths = list(args.paths)
    if "demo" in paths and not demo_run_exists():
        print("note: `dango-dagster demo run` does not exist here; the demo path is skipped")
        paths.remove("demo")
    stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    json_path = args.json or BENCH / "results" / f"pipeline_{stamp}.json"
    profile_rows = args.profile_rows or max(args.rows)
    report: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": (
            f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "loadavg_start": os.getloadavg(),
        "repeat": args.repeat,
        "sizes": {},
    }
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dango-bench-pipeline-") as tmp:
            for rows in args.rows:
                print(f"\n{rows} orders (load average {os.getloadavg()[0]:.1f})", flush=True)
                size = bench_size(Path(tmp), rows, args.repeat, paths, json_path.parent)
                config = size.pop("config")
                report["sizes"][str(rows)] = size
                if rows == profile_rows and not args.no_profile:
                    print(f"  [{rows}] profiling one sync ...", flush=True)
                    report["profile"] = profile_sync(config.root)
                    report["profile"]["rows"] = rows
    finally:
        report["loadavg_end"] = os.getloadavg()
        report["bench_seconds"] = time.monotonic() - started
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str))
    load = f"{report['loadavg_start'][0]:.1f} at start, {report['loadavg_end'][0]:.1f} at end"
    print(f"\n{report['machine']}; load average {load}; {report['bench_seconds'] / 60:.1f} min\n")
    print("\n".join(print_tables(report)))
    if "profile" in report:
        print(f"\nWhere one `dango-dagster sync` spends its time ({report['profile']['rows']} "
              "orders, under cProfile; parts overlap, nested ones are indented):")  # fmt: skip
        print("\n".join(format_profile(report["profile"])))
    print(f"\nJSON: {json_path}")


if __name__ == "__main__":
    main()
