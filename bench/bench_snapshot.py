"""Benchmark: a warehouse snapshot against a plain ``cp`` of the same file, and the cost per user.

    .venv/bin/python bench/bench_snapshot.py             # ~1 GB warehouse, 5 rounds
    .venv/bin/python bench/bench_snapshot.py --size-mb 50 --rounds 3   # quick

Targets (issue 3): a snapshot within 1.2x of ``cp``; each additional notebook user O(1), a few ms.

The warehouse is generated once with DuckDB (random doubles and md5 strings, which barely
compress) and cached under ``bench/results/``. Every timed operation starts after an untimed
``sync``, so the write-back of the previous round never lands in the next one; ``cp`` and the
snapshot alternate within each round so machine noise hits both alike. The snapshot is durable
(fsync) where ``cp`` is not, so ``cp`` followed by ``sync FILE`` is shown as well.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import yaml

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.snapshots import SnapshotResult, take_snapshot

RESULTS = Path(__file__).resolve().parent / "results"
_ROWS_PER_CHUNK = 2_000_000


def build_warehouse(path: Path, size_mb: int) -> Path:
    """Grow a DuckDB file until it reaches ``size_mb``; reuse it when already there."""
    target = size_mb * 1_000_000
    if path.exists() and path.stat().st_size >= target * 0.95:
        return path
    path.unlink(missing_ok=True)
    Path(f"{path}.wal").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute("create table marts.facts (id bigint, a double, b double, s varchar)")
    start = 0
    while path.stat().st_size < target:
        con.execute(
            "insert into marts.facts select range, random(), random(), md5(range::varchar) "
            f"from range({start}, {start + _ROWS_PER_CHUNK})"
        )
        con.execute("checkpoint")
        start += _ROWS_PER_CHUNK
    con.execute("create table marts.summary as select count(*) n, sum(a) a from marts.facts")
    con.close()
    return path


def make_project(root: Path, warehouse: Path) -> ProjectConfig:
    (root / ".dango").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    cfg = {"warehouse": {"path": str(warehouse)}, "snapshots": {"retention": 3}}
    (root / ".dango" / "project.yml").write_text(yaml.safe_dump(cfg))
    return load_config(root)


def timed(fn: Callable[[], object]) -> float:
    os.sync()  # untimed: start every measurement with no dirty pages from the last one
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_snapshot(
    cfg: ProjectConfig, users: list[str], *, durable: bool = True
) -> tuple[float, SnapshotResult]:
    os.sync()
    start = time.perf_counter()
    result = take_snapshot(cfg, users=users, durable=durable)
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def _row(label: str, values: list[float], base: list[float]) -> str:
    """Median, best, and the median of the per-round ratios to ``base`` (same round, same noise)."""
    ratios = [v / b for v, b in zip(values, base, strict=True)]
    return (
        f"| {label} | {median(values):.3f} | {min(values):.3f} | "
        f"{median(values) / median(base):.2f}x | {median(ratios):.2f}x |"
    )


def measure_against_cp(cfg: ProjectConfig, warehouse: Path, rounds: int) -> list[str]:
    """``cp``, ``cp`` + ``sync`` and snapshots (published, no users), each once per round.

    The order within a round is shuffled (seeded): on this kind of VM a big unlink or sync can
    stall the next operation for seconds, and a fixed order would pin that on one contender.
    """
    cp_target = cfg.snapshots_dir / "cp_copy.duckdb"
    sync_target = cfg.snapshots_dir / "cp_sync_copy.duckdb"

    def plain_cp() -> None:
        subprocess.run(["cp", str(warehouse), str(cp_target)], check=True)

    def cp_and_sync() -> None:
        subprocess.run(["cp", str(warehouse), str(sync_target)], check=True)
        subprocess.run(["sync", str(sync_target)], check=True)

    times: dict[str, list[float]] = {"cp": [], "cp+sync": [], "snap": [], "fast": [], "held": []}

    def snapshot(durable: bool) -> None:
        elapsed, result = timed_snapshot(cfg, [], durable=durable)
        times["snap" if durable else "fast"].append(elapsed)
        if durable:
            times["held"].append(result.lock_held_seconds)

    ops: list[Callable[[], None]] = [
        lambda: times["cp"].append(timed(plain_cp)),
        lambda: times["cp+sync"].append(timed(cp_and_sync)),
        lambda: snapshot(True),
        lambda: snapshot(False),
    ]
    take_snapshot(cfg, users=[])  # warm-up: page cache, imports, an old file to replace
    plain_cp()
    cp_and_sync()
    shuffle = random.Random(42).shuffle
    for _ in range(rounds):
        shuffle(ops)
        for op in ops:
            op()
    cp_target.unlink()
    sync_target.unlink()
    cp = times["cp"]
    return [
        "| operation | median s | best s | vs cp (medians) | vs cp (per round) |",
        "|---|---:|---:|---:|---:|",
        _row("`cp` (not durable)", cp, cp),
        _row("`cp` + `sync FILE` (durable)", times["cp+sync"], cp),
        _row("`take_snapshot`, published, 0 users (durable)", times["snap"], cp),
        _row("of which the warehouse lock was held", times["held"], cp),
        _row("`take_snapshot(durable=False)` (no fsync, like `cp`)", times["fast"], cp),
    ]


def measure_users(cfg: ProjectConfig, rounds: int, user_counts: list[int]) -> list[str]:
    """Snapshots for 1, 10, 50... users, shuffled per round, in retention's steady state."""
    groups = {n: [f"u{n}_{i:03d}" for i in range(n)] for n in user_counts}
    totals: dict[int, list[float]] = {n: [] for n in user_counts}
    places: dict[int, list[float]] = {n: [] for n in user_counts}
    order = list(user_counts)
    for i in range(rounds + cfg.snapshots.retention):
        random.Random(i).shuffle(order)
        for n in order:
            elapsed, result = timed_snapshot(cfg, groups[n])
            if i >= cfg.snapshots.retention:  # from now on each run also deletes one per user
                totals[n].append(elapsed)
                places[n].append(result.place_seconds)
    lines = [
        "| notebook users | median snapshot s | median placement ms (links + retention) |",
        "|---:|---:|---:|",
    ]
    for n in user_counts:
        lines.append(f"| {n} | {median(totals[n]):.3f} | {median(places[n]) * 1000:.2f} |")
    lo, hi = min(user_counts), max(user_counts)
    if hi > lo:
        per_total = (median(totals[hi]) - median(totals[lo])) / (hi - lo)
        per_place = (median(places[hi]) - median(places[lo])) / (hi - lo)
        lines.append(
            f"| per extra user ({lo} -> {hi}) | {per_total * 1000:+.2f} ms | "
            f"{per_place * 1000:+.3f} ms |"
        )
    return lines


def run(size_mb: int, rounds: int, user_counts: list[int]) -> str:
    warehouse = build_warehouse(RESULTS / f"snapshot_warehouse_{size_mb}mb.duckdb", size_mb)
    with tempfile.TemporaryDirectory(dir=RESULTS, prefix="snapbench-") as tmp:
        cfg = make_project(Path(tmp) / "project", warehouse)
        cfg.ensure_dirs()
        lines = [
            f"Warehouse {warehouse.stat().st_size / 1e6:.0f} MB, {rounds} rounds "
            f"({sys.platform}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}).",
            "",
            *measure_against_cp(cfg, warehouse, rounds),
            "",
            *measure_users(cfg, rounds, user_counts),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="warehouse size (default 1024)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant")
    parser.add_argument(
        "--users", type=int, nargs="+", default=[1, 10, 50], help="user counts to compare"
    )
    args = parser.parse_args(argv)
    print(run(args.size_mb, args.rounds, sorted(set(args.users))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
