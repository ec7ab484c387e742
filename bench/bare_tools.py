"""Baseline: the demo pipeline run with the bare tools (file loader, then the dbt CLI), no Dagster.

The Dagster runs of the same steps are judged against these figures. For each size it makes a
fresh demo project, then runs ``--repeat`` times: the csv sources loaded by the file loader
(Dango's layout, each under the warehouse lock, no Dagster) and ``dbt build`` as a subprocess,
exactly as a user would run it. Prints the first run and the median of the rest.

    .venv/bin/python bench/bare_tools.py                 # 500 and 100000 orders, 3 runs each
    .venv/bin/python bench/bare_tools.py --rows 1000000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.ingestion.dango_files import load_files_source
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import DbtLock

STEPS = ("load", "dbt_build", "total")


def _dbt_build(config: ProjectConfig) -> float:
    project = str(config.dbt_project_dir)
    env = {
        **os.environ,
        "DANGO_WAREHOUSE_PATH": str(config.warehouse_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    cmd = [str(Path(sys.executable).parent / "dbt"), "build", "--project-dir", project]
    started = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--profiles-dir", project], env=env, cwd=config.root, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dbt build failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed


def run_once(config: ProjectConfig) -> dict[str, float]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    for source in config.sources:
        load_files_source(config, source, lambda: DbtLock(config.root, source="bench"))
    times["load"] = time.perf_counter() - t0
    times["dbt_build"] = _dbt_build(config)
    times["total"] = times["load"] + times["dbt_build"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dango-bench-") as tmp:
        for rows in args.rows:
            started = time.perf_counter()
            root = init_demo_project(Path(tmp) / f"demo_{rows}", rows=rows)
            init_seconds = time.perf_counter() - started
            config = load_config(root)
            runs = [run_once(config) for _ in range(args.repeat)]
            rest = runs[1:] or runs
            size_mb = config.warehouse_path.stat().st_size / 1e6
            medians = {s: statistics.median(r[s] for r in rest) for s in STEPS}
            report[str(rows)] = {
                "demo_init_seconds": init_seconds,
                "first": runs[0],
                "median_after_first": medians,
                "warehouse_mb": size_mb,
            }
            print(f"\n{rows} orders  (demo init {init_seconds:.2f} s, "
                  f"warehouse {size_mb:.1f} MB, {args.repeat} runs)")  # fmt: skip
            print(f"  {'step':<10} {'first':>8} {'median':>8}")
            for step in STEPS:
                print(f"  {step:<10} {runs[0][step]:>7.2f}s {medians[step]:>7.2f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
