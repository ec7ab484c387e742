"""dbt inside the Dagster process vs a dbt subprocess (the ``dbt.in_process`` setting).

For each size it makes one fresh demo project and runs ``dango-dagster sync --project P`` (a new
process each time, as a user does), alternating the setting within each repetition so the noise
of the shared machine hits both alike:

- warm: the manifest is parsed (every sync after the first);
- cold: ``dbt_project/target`` removed first, as on a fresh project or after editing a model, so
  loading the definitions runs ``dbt parse`` (in process, or as a subprocess);
- bare: ``dbt build`` run by hand as a subprocess on the same data, the dbt part of the baseline.

From each run's event log: the dbt step (STEP_START -> STEP_SUCCESS), split into dbt itself
(until the step logs "dbt build took") and the Dagster events yielded after it.

    .venv/bin/python bench/bench_dbt_step.py                      # 300 and 100000 orders, 5 reps
    .venv/bin/python bench/bench_dbt_step.py --rows 300 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from dango_dagster.config import SETTINGS_RELPATH, ProjectConfig, load_config
from dango_dagster.demo import init_demo_project

BIN = Path(sys.executable).parent
_RUN_ID = re.compile(r"^run id:\s+(\S+)", re.MULTILINE)
VARIANTS = ("subprocess warm", "in process warm", "subprocess cold", "in process cold")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DANGO_PROJECT_DIR")}


def _set_in_process(config: ProjectConfig, value: bool) -> None:
    path = config.root / SETTINGS_RELPATH
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    settings.setdefault("dbt", {})["in_process"] = value
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


def _step_figures(instance: Any, run_id: str) -> dict[str, float]:
    marks: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.step_key != "dbt_models":
            continue
        kind = entry.dagster_event_type.name if entry.dagster_event_type else ""
        if kind in ("STEP_START", "STEP_SUCCESS"):
            marks[kind] = entry.timestamp
        elif (entry.user_message or "").startswith("dbt build took"):
            marks["built"] = entry.timestamp
    return {
        "dbt step": marks["STEP_SUCCESS"] - marks["STEP_START"],
        "  dbt itself": marks["built"] - marks["STEP_START"],
        "  events after dbt": marks["STEP_SUCCESS"] - marks["built"],
    }


def time_sync(config: ProjectConfig, instance: Any, *, in_process: bool, cold: bool) -> dict:
    _set_in_process(config, in_process)
    if cold:
        shutil.rmtree(config.dbt_project_dir / "target", ignore_errors=True)
    cmd = [str(BIN / "dango-dagster"), "sync", "--project", str(config.root)]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    match = _RUN_ID.search(done.stdout)
    if done.returncode != 0 or not match:
        sys.exit(f"sync failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {"sync": seconds, **_step_figures(instance, match.group(1))}


def time_bare_dbt(config: ProjectConfig) -> dict:
    project = str(config.dbt_project_dir)
    env = {**_env(), "DANGO_WAREHOUSE_PATH": str(config.warehouse_path)}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    cmd = [str(BIN / "dbt"), "build", "--project-dir", project, "--profiles-dir", project]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=project, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"dbt build failed:\n{done.stdout[-3000:]}")
    return {"dbt build": time.perf_counter() - started}


def bench_size(base: Path, rows: int, repeat: int) -> dict[str, list[dict]]:
    from dagster import DagsterInstance

    from dango_dagster.sync import ensure_dagster_home

    config = load_config(init_demo_project(base / f"demo_{rows}", rows=rows))
    instance = DagsterInstance.from_config(str(ensure_dagster_home(config)))
    time_sync(config, instance, in_process=True, cold=True)  # first load of the raw data
    samples: dict[str, list[dict]] = {v: [] for v in (*VARIANTS, "bare dbt build")}
    for rep in range(repeat):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            got = time_sync(
                config, instance, in_process="in process" in variant, cold="cold" in variant
            )
            samples[variant].append(got)
        samples["bare dbt build"].append(time_bare_dbt(config))
        line = " | ".join(f"{v} {s[-1]['sync' if 'sync' in s[-1] else 'dbt build']:.1f}"
                          for v, s in samples.items())  # fmt: skip
        print(f"  [{rows}] rep {rep + 1}/{repeat}: {line}", flush=True)
    return samples


def print_table(report: dict[int, dict[str, list[dict]]]) -> None:
    parts = ("sync", "dbt step", "  dbt itself", "  events after dbt", "dbt build")
    print("\nMedians in seconds (min in brackets):\n")
    print("| orders | variant | n | " + " | ".join(p.strip() for p in parts) + " |")
    print("|---:|---|---:|" + "---:|" * len(parts))
    for rows, samples in report.items():
        for variant, runs in samples.items():
            cells = []
            for part in parts:
                values = [r[part] for r in runs if part in r]
                cells.append(
                    f"{statistics.median(values):.2f} ({min(values):.2f})" if values else "-"
                )
            print(f"| {rows:,} | {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    for rows, samples in report.items():
        for mode in ("warm", "cold"):
            sub = statistics.median(r["sync"] for r in samples[f"subprocess {mode}"])
            inp = statistics.median(r["sync"] for r in samples[f"in process {mode}"])
            print(f"\n{rows:,} orders, {mode}: sync in process {inp:.2f} s vs subprocess "
                  f"{sub:.2f} s: {sub - inp:+.2f} s saved ({inp / sub:.2f}x)", end="")  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[300, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="dango-bench-dbt-") as tmp:
        report = {rows: bench_size(Path(tmp), rows, args.repeat) for rows in args.rows}
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print_table(report)


if __name__ == "__main__":
    main()
