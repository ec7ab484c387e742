"""How fast the demo generator writes the shop's CSV files (target: 1e6 orders in < 20 s).

.venv/bin/python bench/demo_data.py                    # 500, 100000, 1000000 orders
.venv/bin/python bench/demo_data.py --rows 5000000 --repeat 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dango_dagster.demo import generate_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'orders':>10} {'median':>9} {'min':>9} {'rows/s':>11} {'MB':>8}")
    for rows in args.rows:
        times: list[float] = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="dango-gen-") as tmp:
                started = time.perf_counter()
                counts = generate_demo_data(Path(tmp), rows=rows)
                times.append(time.perf_counter() - started)
                size = sum(p.stat().st_size for p in Path(tmp).rglob("*.csv")) / 1e6
        median = statistics.median(times)
        total_rows = sum(counts.values())
        print(f"{rows:>10} {median:>8.3f}s {min(times):>8.3f}s {total_rows / median:>11,.0f} "
              f"{size:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
