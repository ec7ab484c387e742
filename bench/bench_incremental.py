"""Incremental file loading: 10 new orders into a 2 M-order project vs a no-change sync of a
500-order project, in one run.

Before the Dango-compatible loader, every sync reloaded every file of every table (adding 10 rows to
a 2 M-order project: a 52 s sync, 4.5 M rows reloaded, the lock held ~23 s). Now a sync reads only
new and changed files (``main._dango_file_metadata``, as Dango does), parses them outside the lock
and swaps them in under it, so its cost should not grow with the table. Target: the big sync within
1.3x of the small no-change sync, the lock held < 2 s.

Both projects are made and loaded once (not timed). Each repetition then times, alternating which
goes first:

- cli: ``dango-dagster sync --project P --source orders --sync-only`` in a fresh process (what a
  user runs; through Dagster), and the warehouse lock's hold from the materialization metadata;
- loader: the file loader alone (``load_files_source`` under ``DbtLock``), no Dagster.

    .venv/bin/python bench/bench_incremental.py                  # 2 000 000 vs 500, 3 reps
    .venv/bin/python bench/bench_incremental.py --big 100000 --repeat 1   # a smoke test
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
from typing import Any

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.dbt.assets import ensure_manifest
from dango_dagster.defs.ingestion.dango_files import load_files_source
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import DbtLock

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.3
TARGET_HELD_S = 2.0


def _hold(config: ProjectConfig):
    return lambda: DbtLock(config.root, source="bench", operation="load files")


def make_project(base: Path, rows: int) -> ProjectConfig:
    """A demo project with every source loaded once and the dbt manifest parsed (not timed)."""
    started = time.perf_counter()
    config = load_config(init_demo_project(base / f"demo_{rows}", rows=rows))
    for source in config.sources:
        load_files_source(config, source, _hold(config))
    ensure_manifest(config)
    print(f"  made and loaded {rows:,} orders in {time.perf_counter() - started:.1f} s", flush=True)
    return config


def drop_orders(config: ProjectConfig, number: int, rows: int = 10) -> None:
    """``rows`` new orders in a new file, written beside and renamed into place."""
    folder = config.source_dir(config.source("orders"))
    first = 50_000_000 + number * rows
    lines = ["order_id,customer_id,order_date,status"]
    lines += [f"{first + i},1,2025-06-30,placed" for i in range(rows)]
    tmp = folder / f".orders_new_{number:04d}.csv.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, folder / f"orders_new_{number:04d}.csv")


def cli_sync(config: ProjectConfig) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DANGO_PROJECT_DIR")}
    cmd = [str(BIN / "dango-dagster"), "sync", "--project", str(config.root)]
    cmd += ["--source", "orders", "--sync-only"]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {"seconds": seconds, **_last_materialization(config)}


def _last_materialization(config: ProjectConfig) -> dict[str, Any]:
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(config.dagster_home))
    event = instance.get_latest_materialization_event(dg.AssetKey(["raw_orders", "orders"]))
    assert event is not None and event.asset_materialization is not None
    meta = event.asset_materialization.metadata

    def value(key: str) -> Any:
        return getattr(meta.get(key), "value", None)

    return {
        "lock_held_seconds": value("lock_held_seconds"),
        "rows_loaded": value("rows_loaded"),
        "table_rows": value("dagster/row_count"),
    }


def loader_sync(config: ProjectConfig) -> dict[str, Any]:
    started = time.perf_counter()
    held: dict[str, float] = {}

    class _Timed:
        def __enter__(self) -> None:
            self.lock = DbtLock(config.root, source="bench", operation="load files").acquire()
            held["start"] = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            held["seconds"] = time.perf_counter() - held["start"]
            self.lock.release()

    result = load_files_source(config, config.source("orders"), _Timed)
    return {
        "seconds": time.perf_counter() - started,
        "lock_held_seconds": held["seconds"],
        "rows_loaded": result.rows_added,
        "table_rows": result.total_rows,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=2_000_000)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        "cli": {"big": [], "small": []},
        "loader": {"big": [], "small": []},
    }
    with tempfile.TemporaryDirectory(prefix="dango-incr-") as tmp:
        print(f"setting up {args.small:,} and {args.big:,} orders ...", flush=True)
        small = make_project(Path(tmp), args.small)
        big = make_project(Path(tmp), args.big)
        number = 0
        for rep in range(args.repeat):
            order = ("small", "big") if rep % 2 == 0 else ("big", "small")
            for path, sync in (("cli", cli_sync), ("loader", loader_sync)):
                for which in order:
                    config = small if which == "small" else big
                    if which == "big":
                        number += 1
                        drop_orders(config, number)
                    figures = sync(config)
                    assert figures["rows_loaded"] == (10 if which == "big" else 0), figures
                    runs[path][which].append(figures)
                    print(
                        f"  rep {rep + 1} {path:<6} {which:<5} {figures['seconds']:7.2f} s, "
                        f"lock held {figures['lock_held_seconds']:.3f} s, "
                        f"+{figures['rows_loaded']} rows of {figures['table_rows']:,}",
                        flush=True,
                    )
    report: dict[str, Any] = {"big_orders": args.big, "small_orders": args.small}
    print(f"\nmedians of {args.repeat} (10 new orders into {args.big:,} vs no change in "
          f"{args.small:,})")  # fmt: skip
    for path in ("cli", "loader"):
        b, s = runs[path]["big"], runs[path]["small"]
        ratio = _median(b, "seconds") / _median(s, "seconds")
        held = max(float(r["lock_held_seconds"]) for r in b)
        report[path] = {
            "big_seconds": _median(b, "seconds"),
            "small_seconds": _median(s, "seconds"),
            "ratio": ratio,
            "big_lock_held_max_seconds": held,
            "big_lock_held_median_seconds": _median(b, "lock_held_seconds"),
            "runs": runs[path],
        }
        verdict = "ok" if ratio <= TARGET_RATIO and held < TARGET_HELD_S else "MISSED"
        print(
            f"  {path:<6} big {_median(b, 'seconds'):7.2f} s  small {_median(s, 'seconds'):7.2f} s"
            f"  ratio {ratio:.2f}x (target <= {TARGET_RATIO}x)  lock held max {held:.3f} s "
            f"(target < {TARGET_HELD_S} s)  {verdict}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "incremental.json"
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
