"""Bad upload files through the console script: the sync fails naming the file, nothing is lost,
and removing the file heals the next sync.

The loader that guarantees "nothing lost" is the Dango-compatible csv loader (staging + swap,
tests/test_dango_files.py tests it directly); this is the user's path around it: a real project,
``dango-dagster sync``, and what its last lines say.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pytest
from pause_support import start_sync

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project

pytestmark = pytest.mark.slow

TABLES = ("raw_orders.orders", "marts.fct_orders", "marts.fct_daily_sales")


def _counts(project: Path) -> dict[str, int]:
    config = load_config(project)
    counts: dict[str, int] = {}
    for name, path in (("live", config.warehouse_path), ("snap", config.published_snapshot_path)):
        with duckdb.connect(str(path), read_only=True) as con:
            for table in TABLES:
                sql = f"select count(*) from {table}"
                counts[f"{name}:{table}"] = con.execute(sql).fetchone()[0]
    return counts


def _sync(project: Path) -> subprocess.CompletedProcess[str]:
    proc = start_sync(project)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = init_demo_project(tmp_path_factory.mktemp("bad") / "shop", rows=200)
    done = _sync(project)
    assert done.returncode == 0, done.stdout + done.stderr
    return project


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("orders_bad_types.csv", None, "column 'order_id'"),
        ("orders_garbage.csv", b"\x00\x01\x02\xff\xfe garbage \x89PNG\r\n\x1a\n", "Could not read"),
    ],
)
def test_bad_file_fails_the_sync_and_loses_nothing(
    shop: Path, name: str, content: bytes | None, expected: str
) -> None:
    before = _counts(shop)
    folder = load_config(shop).root / "data" / "uploads" / "orders"
    good = sorted(folder.glob("*.csv"))[0]
    if content is None:  # the real header, then a row whose order_id is not a number
        header, first = good.read_text().splitlines()[:2]
        content = f"{header}\nnot-a-number,{first.split(',', 1)[1]}\n".encode()
    bad = folder / name
    bad.write_bytes(content)
    try:
        failed = _sync(shop)
        assert failed.returncode != 0, failed.stdout + failed.stderr
        last = failed.stderr.strip().splitlines()[-4:]
        assert any(str(bad) in line for line in last), failed.stderr
        assert any(expected in line for line in last), failed.stderr
        assert "Traceback" not in failed.stderr and "Error occurred while executing" not in (
            failed.stderr
        )
        assert _counts(shop) == before  # live raw table, marts and snapshot keep every row
    finally:
        bad.unlink()
    healed = _sync(shop)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert _counts(shop) == before
