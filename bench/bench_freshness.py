"""Fresh data in seconds: a CSV dropped into the demo's uploads, until its rows are in the
published snapshot, under ``dagster dev``, with each part of the way timed.

The demo project is synced first (``dango-dagster sync``), then ``dagster dev`` starts on the
project's own instance, as the README says. Measured:

- start: runs ``dagster dev`` launches by itself in its first 45 s (target: none; the uploads
  sensor starts from the files the sync loaded);
- per drop: a 5-row orders CSV written beside and renamed into ``data/uploads/orders/``;
  the clock stops when a read-only connection to the published snapshot (what the query API,
  Metabase and notebooks read) sees all 5 rows. The run the uploads sensor launched tells where
  the time went: sensor wait (drop -> run created), enqueue and dequeue, worker process start
  (imports, definitions), each step (load, dbt, snapshot), the rest.

``--baseline`` compares the run launchers: sessions alternate between the shipped instance
settings (``WarmRunLauncher``: the run goes to a pre-started worker) and Dagster's stock
``DefaultRunLauncher`` (the code server spawns a new process per run), so the machine's load hits
both alike; the report puts the medians of each part side by side, with the ratio. The first run
of a warm session has no worker yet; every drop waits for the next worker to be ready, as a file
arriving a few seconds after the last run finds it.

    .venv/bin/python bench/bench_freshness.py              # 7 drops, warm launcher
    .venv/bin/python bench/bench_freshness.py --rounds 2 --drops 4 --baseline
    .venv/bin/python bench/bench_freshness.py --drops 3 --skip-start-check
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psutil
import yaml
from dagster_dev_path import SENSOR_TAG, UPLOADS_SENSOR, BenchError, DagsterDev, run_figures

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.constants import TAG_LAUNCH
from dango_dagster.demo import init_demo_project

BIN = Path(sys.executable).parent
BENCH = Path(__file__).resolve().parent
START_WINDOW_S = 45.0
DROP_ROWS = 5
SOURCE = "orders"  # the demo's csv source: data/uploads/orders/*.csv -> raw_orders.orders
LOAD = "load (files step)"
# Parts of a run's time, in the order they happen (keys of dagster_dev_path.run_phases).
PARTS = (
    ("sensor wait", "tick_seconds"),
    ("created -> enqueued", "created->enqueued"),
    ("enqueued -> dequeued", "enqueued->dequeued"),
    ("launch -> a worker process has the run", "worker spawned"),
    ("worker imports + definitions (warm: its plan)", "worker imports+definitions"),
    ("load (files step)", LOAD),
    ("dbt build (dbt step)", "step dbt_models"),
    ("snapshot (snapshot step)", "step snapshots__warehouse"),
    ("run: outside steps", "run start->end outside steps"),
)


_NOT_LOAD = ("step dbt_models", "step snapshots__warehouse")


def _sensor_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={SENSOR_TAG: UPLOADS_SENSOR}), limit=50))


def prepare(base: Path, rows: int | None) -> ProjectConfig:
    root = init_demo_project(base / "shop", **({} if rows is None else {"rows": rows}))
    sync = subprocess.run(
        [str(BIN / "dango-dagster"), "sync", "--project", str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if sync.returncode != 0:
        raise BenchError(f"the first sync failed:\n{sync.stdout[-2000:]}\n{sync.stderr[-2000:]}")
    return load_config(root)


def start_check(dev: DagsterDev, started: float) -> dict[str, Any]:
    """Runs launched by ``dagster dev`` itself during its first 45 s on a synced project."""
    before = {r.run_id for r in dev.instance.get_runs()}
    dev.wait_sensor_ticked(UPLOADS_SENSOR)
    ready_after = time.monotonic() - started
    time.sleep(max(0.0, START_WINDOW_S - (time.monotonic() - started)))
    launched = [r for r in dev.instance.get_runs() if r.run_id not in before]
    return {
        "sensor_first_tick_after_s": round(ready_after, 1),
        "window_s": round(time.monotonic() - started, 1),
        "runs_launched": len(launched),
    }


def _drop(config: ProjectConfig, number: int) -> tuple[float, list[int]]:
    folder = config.source_dir(config.source(SOURCE))
    first = 20_000_000 + number * 10
    ids = [first + i for i in range(DROP_ROWS)]
    lines = ["order_id,customer_id,order_date,status"]
    lines += [f"{i},1,2025-06-30,placed" for i in ids]
    tmp = folder / f".fresh_{number:04d}.csv.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    final = folder / f"fresh_{number:04d}.csv"
    os.replace(tmp, final)
    return time.time(), ids


def _visible(snapshot: Path, ids: list[int]) -> bool:
    try:
        with duckdb.connect(str(snapshot), read_only=True) as con:
            row = con.execute(
                f"select count(*) from raw_{SOURCE}.{SOURCE} where order_id in "
                f"({', '.join(map(str, ids))})"
            ).fetchone()
            found = row[0] if row else 0
    except duckdb.Error:
        return False
    return found == len(ids)


def one_drop(dev: DagsterDev, config: ProjectConfig, number: int) -> dict[str, Any]:
    dev.wait_idle()
    before = {r.run_id for r in _sensor_runs(dev.instance)}
    dropped, ids = _drop(config, number)
    snapshot = config.published_snapshot_path
    while not _visible(snapshot, ids):
        if time.time() - dropped > 300:
            raise BenchError(f"drop {number}: rows not in the snapshot after 300 s; {dev.log_path}")
        time.sleep(0.05)
    visible = time.time() - dropped
    runs = [r for r in _sensor_runs(dev.instance) if r.run_id not in before]
    if len(runs) != 1:
        raise BenchError(f"drop {number}: expected one sensor run, found {len(runs)}")
    record = dev._finished(runs[0].run_id)  # noqa: SLF001 - the harness's own waiting loop
    figures = run_figures(dev.instance, record)
    _sum_load_steps(figures["phases"])
    figures["phases"]["tick_seconds"] = figures["created"] - dropped
    figures["drop_to_snapshot_seconds"] = visible
    figures["launch"] = record.dagster_run.tags.get(TAG_LAUNCH, "-")
    figures["snapshot_to_run_end_seconds"] = (
        figures["created"] + figures["run_seconds"] - (dropped + visible)
    )
    return figures


def _sum_load_steps(steps: dict[str, float]) -> None:
    loads = [k for k in steps if k.startswith("step ") and k not in _NOT_LOAD]
    steps[LOAD] = sum(steps[k] for k in loads)


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s["phases"].get(key) for s in samples]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report_lines(result: dict[str, Any]) -> list[str]:
    samples = result["samples"]
    totals = [s["drop_to_snapshot_seconds"] for s in samples]
    lines = [
        f"drop -> rows in the published snapshot, {len(totals)} drops of {DROP_ROWS} rows: "
        f"median {statistics.median(totals):.2f} s, min {min(totals):.2f} s, "
        f"max {max(totals):.2f} s",
        "",
        "| part | median s |",
        "|---|---:|",
    ]
    for label, key in PARTS:
        value = _median(samples, key)
        lines.append(f"| {label} | {value:.2f} |" if value is not None else f"| {label} | - |")
    lines.append(f"| **drop -> visible in snapshot** | **{statistics.median(totals):.2f}** |")
    start = result.get("start")
    if start:
        lines.append("")
        lines.append(
            f"dagster dev start on the synced project: {start['runs_launched']} run(s) launched "
            f"in the first {start['window_s']:.0f} s (uploads sensor first ticked after "
            f"{start['sensor_first_tick_after_s']} s)."
        )
    return lines


WARM = {"module": "dango_dagster.defs.run_launcher", "class": "WarmRunLauncher"}
STOCK = {"module": "dagster", "class": "DefaultRunLauncher"}


def _set_launcher(config: ProjectConfig, launcher: dict[str, str]) -> None:
    """The instance's ``run_launcher`` (the bench project's own copy of the shipped settings)."""
    path = config.dagster_home / "dagster.yaml"
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    settings["run_launcher"] = launcher
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


def _wait_warm_worker(dev: DagsterDev, timeout: float = 120.0) -> dict[str, float] | None:
    """Until the pre-started worker is idle (blocked on its pipe); its memory, in MB."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline", "environ"]):
            env = proc.info["environ"] or {}
            if "dango_dagster.defs.warm_worker" not in (proc.info["cmdline"] or []):
                continue
            if env.get("DAGSTER_HOME") != str(dev.dagster_home):
                continue
            with contextlib.suppress(psutil.Error):
                cpu = sum(proc.cpu_times()[:2])
                time.sleep(0.5)
                if sum(proc.cpu_times()[:2]) - cpu < 0.01:  # done importing
                    mem = proc.memory_full_info()
                    return {"rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20}
        time.sleep(0.5)
    return None


def session(
    config: ProjectConfig,
    log: Path,
    drops: int,
    out: dict[str, Any],
    *,
    warm: bool,
    start_check_too: bool = False,
) -> None:
    """One ``dagster dev`` on the project, ``drops`` files dropped one after the other."""
    first = 1 + len(out["samples"]) + 1000 * ("baseline" in log.name)  # fresh order ids
    _set_launcher(config, WARM if warm else STOCK)
    opened = time.time()
    with DagsterDev(config, config.dagster_home, log) as dev:
        started = time.monotonic()
        if start_check_too:
            out["start"] = start_check(dev, started)
            print(f"start: {out['start']}", flush=True)
        else:
            dev.wait_sensor_ticked(UPLOADS_SENSOR, after=opened)
        # The session's first run: no pre-started worker yet (warm) and cold caches (both).
        # Not counted; what is measured is a file arriving while dagster dev has been up.
        out.setdefault("first_runs", []).append(one_drop(dev, config, first + 500))
        for number in range(first, first + drops):
            if warm:
                dev.wait_idle()
                memory = _wait_warm_worker(dev)
                if memory:
                    out.setdefault("worker_memory", []).append(memory)
            sample = one_drop(dev, config, number)
            out["samples"].append(sample)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sample["phases"].items())
            print(
                f"drop {number}: {sample['drop_to_snapshot_seconds']:.2f} s ({parts})", flush=True
            )


def side_by_side(warm: dict[str, Any], stock: dict[str, Any]) -> list[str]:
    """Medians of each part for the two launchers, and their ratio."""
    lines = [
        f"| part | warm launcher ({len(warm['samples'])} drops) | stock launcher "
        f"({len(stock['samples'])} drops) | warm / stock |",
        "|---|---:|---:|---:|",
    ]
    for label, key in PARTS:
        a, b = _median(warm["samples"], key), _median(stock["samples"], key)
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        cells = [f"{v:.2f}" if v is not None else "-" for v in (a, b)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    a = statistics.median(s["drop_to_snapshot_seconds"] for s in warm["samples"])
    b = statistics.median(s["drop_to_snapshot_seconds"] for s in stock["samples"])
    lines.append(f"| **drop -> visible in snapshot** | **{a:.2f}** | {b:.2f} | **{a / b:.2f}** |")
    launches = [s.get("launch") for s in warm["samples"]]
    lines += ["", f"warm sessions: {launches.count('warm')} of {len(launches)} runs warm-launched"]
    memory = warm.get("worker_memory") or []
    if memory:
        rss = statistics.median(m["rss_mb"] for m in memory)
        uss = statistics.median(m["uss_mb"] for m in memory)
        lines.append(f"one idle pre-started worker: {rss:.0f} MB RSS, {uss:.0f} MB its own (USS)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=7, help="drops per dagster dev session")
    parser.add_argument("--rounds", type=int, default=1, help="sessions of each launcher")
    parser.add_argument("--rows", type=int, default=None, help="demo orders (default: demo's)")
    parser.add_argument("--skip-start-check", action="store_true")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="alternate with sessions on Dagster's stock DefaultRunLauncher",
    )
    parser.add_argument("--report", type=Path, help="print the tables of a saved result, only")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text(encoding="utf-8"))
        for sample in saved["samples"] + saved.get("baseline", {}).get("samples", []):
            _sum_load_steps(sample["phases"])
        print("\n".join(report_lines(saved)))
        if "baseline" in saved:
            print("\n".join(["", *side_by_side(saved, saved["baseline"])]))
        return

    base = Path(tempfile.mkdtemp(prefix="bench_fresh_"))
    config = prepare(base, args.rows)
    result: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "settings": config.automation.model_dump(),
        "launcher": WARM,
        "load_average": [],
        "samples": [],
    }
    baseline: dict[str, Any] = {"launcher": STOCK, "samples": []}
    for round_ in range(args.rounds):
        # Sessions alternate the two launchers, so the shared machine's load hits both alike.
        result["load_average"].append(os.getloadavg())
        session(
            config,
            base / f"dagster_dev_{round_}.log",
            args.drops,
            result,
            warm=True,
            start_check_too=round_ == 0 and not args.skip_start_check,
        )
        if args.baseline:
            result["load_average"].append(os.getloadavg())
            session(
                config,
                base / f"dagster_dev_baseline_{round_}.log",
                args.drops,
                baseline,
                warm=False,
            )
    result["load_average"].append(os.getloadavg())
    lines = report_lines(result)
    if args.baseline:
        result["baseline"] = baseline
        lines += ["", *side_by_side(result, baseline)]
    loads = [round(v[0], 1) for v in result["load_average"]]
    lines += ["", f"load average (1 min) at each session's start and the end: {loads}"]
    print("\n".join(lines))
    out = BENCH / "results" / "freshness.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"\nfigures: {out}\nlogs: {base}/dagster_dev_*.log")


if __name__ == "__main__":
    main()
