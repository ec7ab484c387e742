"""`dango-dagster query`: readable table, JSON and CSV output; clear messages for each failure."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import (
    ApiServer,
    free_port,
    publish_snapshot,
    run_cli,
    served_project,
    write_project,
)

from dango_dagster.cli.query_cmd import format_table

Env = tuple[ApiServer, str, subprocess.CompletedProcess[str]]
RUNAWAY = "select count(*) from range(100000000) a, range(100000000) b where a.range + b.range = 7"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("api-cli") / "project"
    with served_project(root, "cli", publish=False, query_max_rows=20) as (server, key):
        before_snapshot = run_cli("query", "select 1", "--url", server.url, "--key", key)
        publish_snapshot(root)
        yield server, key, before_snapshot


def test_table_output_by_default_with_key_from_env(env: Env) -> None:
    server, key, _ = env
    out = run_cli(
        "query",
        "select day, orders, revenue from marts.fct_daily_sales order by day limit 3",
        "--url",
        server.url,
        env={"DANGO_API_KEY": key},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split(" | ") == ["day       ", "orders", "revenue"]
    assert lines[2].startswith("2024-01-01 |")
    assert lines[-1].startswith("(3 rows; snapshot ")


def test_json_and_csv_output_with_key_flag(env: Env) -> None:
    server, key, _ = env
    args = ("select customer_id, name from marts.dim_customers order by 1 limit 2",)
    js = run_cli("query", *args, "--url", server.url, "--key", key, "--format", "json")
    assert js.returncode == 0, js.stderr
    body = json.loads(js.stdout)
    assert body["columns"] == ["customer_id", "name"]
    assert body["rows"] == [[0, "customer 0"], [1, "customer 1"]]
    cs = run_cli("query", *args, "--url", server.url, "--key", key, "--format", "csv")
    assert list(csv.reader(io.StringIO(cs.stdout))) == [
        ["customer_id", "name"],
        ["0", "customer 0"],
        ["1", "customer 1"],
    ]


def test_truncation_is_visible(env: Env) -> None:
    server, key, _ = env
    out = run_cli("query", "select * from raw_shop.orders", "--url", server.url, "--key", key)
    assert out.returncode == 0
    assert "(20 rows, truncated at 20" in out.stdout


def test_clear_messages_for_401_408_503_and_unreachable(env: Env) -> None:
    server, key, before_snapshot = env
    assert before_snapshot.returncode == 3
    assert "503" in before_snapshot.stderr and "run the pipeline" in before_snapshot.stderr.lower()

    bad = run_cli("query", "select 1", "--url", server.url, "--key", "dango_ak_nope")
    assert bad.returncode == 3 and "401" in bad.stderr and "--key" in bad.stderr
    nokey = run_cli("query", "select 1", "--url", server.url, env={"DANGO_API_KEY": ""})
    assert nokey.returncode == 3 and "DANGO_API_KEY" in nokey.stderr

    slow = run_cli("query", RUNAWAY, "--url", server.url, "--key", key, "--timeout", "1")
    assert slow.returncode == 3
    assert "408" in slow.stderr and "cancelled" in slow.stderr

    refused = run_cli("query", "drop table x", "--url", server.url, "--key", key)
    assert refused.returncode == 3 and "403" in refused.stderr

    gone = run_cli("query", "select 1", "--url", f"http://127.0.0.1:{free_port()}", "--key", key)
    assert gone.returncode == 3 and "api serve" in gone.stderr
    assert "Traceback" not in gone.stderr + slow.stderr + bad.stderr


def test_format_table_aligns_and_marks_nulls() -> None:
    text = format_table(
        {
            "columns": ["name", "n"],
            "rows": [["a", 1], [None, 22.5]],
            "row_count": 2,
            "truncated": False,
            "snapshot_at": "2024-01-01T00:00:00+00:00",
            "elapsed_ms": 3,
        }
    )
    assert text.splitlines()[:4] == ["name |    n", "-----+-----", "a    |    1", "NULL | 22.5"]


def test_serve_refuses_invalid_settings_naming_the_key(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", query_max_rows=0, rate_limit="lots")
    out = run_cli("api", "serve", "--project", str(root), "--port", str(free_port()))
    assert out.returncode == 3
    assert "api.query_max_rows" in out.stderr and "api.rate_limit" in out.stderr
    assert "Traceback" not in out.stderr
