"""Writers and the API never wait for each other: the API reads the snapshot, never the live file.

Writers are real child processes that hold ``DbtLock`` and a read-write DuckDB connection on
``config.warehouse_path``, as dlt, dbt and the snapshot asset do.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ApiServer, build_warehouse, child, served_project

from dango_dagster.config import load_config
from dango_dagster.lock import DbtLock, read_lock_holder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    root = tmp_path_factory.mktemp("api-writers") / "project"
    with served_project(root, "writers") as env:
        build_warehouse(load_config(root).warehouse_path)
        yield env


def test_writer_holding_the_live_file_does_not_delay_or_fail_queries(
    env: tuple[ApiServer, str], tmp_path: Path
) -> None:
    server, key = env
    ready, release = tmp_path / "ready", tmp_path / "release"
    writer = subprocess.Popen(
        child(
            f"from api_support import hold_live_warehouse as h; h({str(server.project)!r}, "
            f"{str(ready)!r}, {str(release)!r})"
        )
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert writer.poll() is None, "writer died"
            assert time.monotonic() < deadline, "writer never got the live file"
            time.sleep(0.05)
        holder = read_lock_holder(server.project)
        assert holder is not None and holder.pid == writer.pid
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            response = server.query("select sum(revenue) from marts.fct_daily_sales", key)
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
        assert writer.poll() is None, "the writer still held the file during every query"
        assert max(latencies) < 2.0, latencies
    finally:
        release.write_text("go")
        writer.wait(timeout=60)
    assert writer.returncode == 0


def test_stream_of_queries_does_not_delay_a_writer(env: tuple[ApiServer, str]) -> None:
    server, key = env
    stop = threading.Event()
    statuses: list[int] = []

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(server.query("select * from raw_shop.orders limit 50", key).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        out = subprocess.run(
            child(f"from api_support import write_repeatedly as w; w({str(server.project)!r}, 10)"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(r["ok"] for r in results), results
    # Opening the live file read-write succeeds at once (no reader holds it); generous bound.
    assert max(r["open_s"] for r in results) < 2.0, results
    assert len(statuses) > 20 and set(statuses) == {200}


def test_snapshot_asset_publication_is_served_without_restart(env: tuple[ApiServer, str]) -> None:
    """The real snapshot code (lock, CHECKPOINT, copy, verify, os.replace) feeds the API."""
    import duckdb

    from dango_dagster.snapshots import take_snapshot

    server, key = env
    config = load_config(server.project)
    with DbtLock(server.project, source="test", operation="dbt build"):
        con = duckdb.connect(str(config.warehouse_path))
        con.execute("create or replace table marts.build_info as select 42 as version")
        con.close()
    before = server.query("select version from marts.build_info", key).json()
    take_snapshot(config, users=[])
    after = server.query("select version from marts.build_info", key).json()
    assert after["rows"] == [[42]] and before["rows"] != after["rows"]
    assert after["snapshot_at"] >= before["snapshot_at"]
