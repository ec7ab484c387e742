"""One bare run of the demo pipeline in a fresh process, the way a user without Dagster runs it.

``bench_pipeline.py`` starts this as a new process per repetition, so the bare figure pays the
same interpreter start and imports (duckdb) a user's own script would: the csv sources loaded
by the file loader plus ``dbt build`` in a subprocess (``bare_tools.run_once``), then a copy of the
warehouse file (what the snapshot asset publishes). Prints the step times as one JSON line.

    .venv/bin/python bench/bare_once.py PROJECT_DIR
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import json  # noqa: E402 - the clock starts before the imports, which are part of the cost
import shutil  # noqa: E402
import sys  # noqa: E402

from bare_tools import run_once  # noqa: E402

from dango_dagster.config import load_config  # noqa: E402


def main(project: str) -> None:
    imports = time.perf_counter() - _STARTED
    config = load_config(project)
    times = run_once(config)
    started = time.perf_counter()
    config.published_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.warehouse_path, config.published_dir / "bare_copy.duckdb")
    times["copy"] = time.perf_counter() - started
    times["imports"] = imports
    times["in_process"] = time.perf_counter() - _STARTED
    print(json.dumps(times))


if __name__ == "__main__":
    main(sys.argv[1])
