"""Audit appends from many threads and processes never interleave or lose a line."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from api_support import audit_lines, child, served_project

from dango_dagster.config import load_config


def test_concurrent_processes_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    writers, per_writer = 4, 150
    procs = [
        subprocess.Popen(
            child(
                f"from api_support import append_audit_lines as a; a({str(path)!r}, {w}, "
                f"{per_writer})"
            )
        )
        for w in range(writers)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == writers * per_writer
    for writer in range(writers):
        mine = [r for r in records if r["writer"] == writer]
        assert [r["seq"] for r in mine] == list(range(per_writer)), "lost or reordered lines"
        assert all(set(r["sql"]) == {chr(ord("a") + writer)} for r in mine), "interleaved"
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.slow
def test_two_workers_under_concurrent_load_audit_every_request(tmp_path: Path) -> None:
    root = tmp_path / "project"
    with served_project(root, "load", workers=2) as (server, key):
        cases = [
            ("select * from raw_shop.orders limit 20", key),
            ("drop table marts.fct_daily_sales", key),
            ("select 1", "dango_ak_wrong"),
            ("select 'x' || repeat('y', 5000) as long_text", key),
        ]
        seen: list[tuple[str, int]] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            for i in range(30):
                sql, k = cases[(n + i) % len(cases)]
                response = server.query(sql, k)
                with lock:
                    seen.append((response.json()["request_id"], response.status_code))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = [line for line in audit_lines(root) if line["path"] == "/api/query"]
    assert len(lines) == len(seen) == 240
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == 240
    for request_id, status in seen:
        assert by_id[request_id]["status"] == status
    assert Counter(line["status"] for line in lines) == Counter({200: 120, 403: 60, 401: 60})
    assert load_config(root).audit_log_path.stat().st_mode & 0o777 == 0o600
