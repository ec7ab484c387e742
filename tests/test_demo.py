"""The demo project: generated data (deterministic, consistent) and `demo init`."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dango_dagster import config as config_module
from dango_dagster.cli import main
from dango_dagster.config import load_config
from dango_dagster.defs.ingestion.sources import source_tables
from dango_dagster.demo import (
    ORDER_STATUSES,
    PAYMENT_METHODS,
    DemoProjectError,
    generate_demo_data,
    init_demo_project,
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_counts_and_consistency(tmp_path: Path) -> None:
    counts = generate_demo_data(tmp_path, rows=300, seed=7)
    shop = tmp_path
    assert sorted(p.relative_to(shop).as_posix() for p in shop.rglob("*.csv")) == [
        "customers/customers_0001.csv",
        "orders/orders_0001.csv",
        "payments/payments_0001.csv",
    ]
    customers = _rows(shop / "customers" / "customers_0001.csv")
    orders = _rows(shop / "orders" / "orders_0001.csv")
    payments = _rows(shop / "payments" / "payments_0001.csv")
    assert counts == {"customers": len(customers), "orders": 300, "payments": len(payments)}
    assert len(customers) == 60
    assert 0.9 * 300 <= len(payments) <= 1.2 * 300

    # Headers are snake_case identifiers, as the dbt staging models name them.
    for rows in (customers, orders, payments):
        assert all(name == name.lower() and name.isidentifier() for name in rows[0])

    customer_ids = {r["customer_id"] for r in customers}
    order_status = {r["order_id"]: r["status"] for r in orders}
    assert len(customer_ids) == len(customers) and len(order_status) == len(orders)
    assert {r["customer_id"] for r in orders} <= customer_ids
    assert set(order_status.values()) <= set(ORDER_STATUSES)
    assert {r["order_id"] for r in payments} <= set(order_status)
    assert all(order_status[r["order_id"]] != "cancelled" for r in payments)
    assert {r["payment_method"] for r in payments} <= set(PAYMENT_METHODS)
    assert all(float(r["amount"]) >= 1.0 for r in payments)
    # Dates span many days, so fct_daily_sales has many rows.
    assert len({r["order_date"] for r in orders}) >= 50
    assert [r["order_date"] for r in orders] == sorted(r["order_date"] for r in orders)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "a", rows=400, seed=3)
    generate_demo_data(tmp_path / "b", rows=400, seed=3)
    generate_demo_data(tmp_path / "c", rows=400, seed=4)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")


def test_rows_scale_and_small_is_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    small = generate_demo_data(tmp_path / "s", rows=500)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"500 rows took {elapsed:.2f} s"  # bound asked for by the issue
    big = generate_demo_data(tmp_path / "b", rows=5000)
    assert big["orders"] == 10 * small["orders"]
    assert big["customers"] == 10 * small["customers"]
    assert 8 * small["payments"] < big["payments"] < 12 * small["payments"]
    with pytest.raises(ValueError, match="at least 1"):
        generate_demo_data(tmp_path / "z", rows=0)


def test_regenerating_keeps_other_files(tmp_path: Path) -> None:
    generate_demo_data(tmp_path, rows=50)
    extra = tmp_path / "orders" / "orders_0002.csv"
    extra.write_text("order_id,customer_id,order_date,status\n9999,1,2025-07-01,placed\n")
    generate_demo_data(tmp_path, rows=60)
    assert extra.exists()
    assert len(_rows(tmp_path / "orders" / "orders_0001.csv")) == 60
    assert not list(tmp_path.rglob(".*.tmp"))


def test_init_makes_a_complete_project(tmp_path: Path) -> None:
    root = init_demo_project(tmp_path / "new" / "shop", rows=300, seed=1)
    assert root == (tmp_path / "new" / "shop").resolve()
    config = load_config(root)
    assert [s.name for s in config.sources] == ["customers", "orders", "payments"]
    assert all(s.type == "csv" for s in config.sources)
    assert [s.name for s in config.schedules] == ["daily_refresh"]
    assert config.notebook_users == ["analyst"]
    assert config.state_dir.is_dir()
    assert config.dbt_project_dir == root / "dbt_project"
    assert (config.dbt_project_dir / "profiles.yml").is_file()
    assert source_tables(config, config.source("orders")) == ["orders"]
    assert (config.source_dir(config.source("orders")) / "orders_0001.csv").is_file()
    # The same bytes as generating directly: tests and benchmarks see the same data.
    generate_demo_data(tmp_path / "direct", rows=300, seed=1)
    assert _tree(config.uploads_dir) == _tree(tmp_path / "direct")
    # Nothing left beside it.
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["shop"]


def test_init_copies_no_dbt_build_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """target/, logs/ and dbt_packages/ of the source dbt project are not copied."""
    fake_repo = tmp_path / "repo"
    (fake_repo / ".dango").mkdir(parents=True)
    real = config_module.REPO_ROOT
    for name in ("project.yml", "sources.yml", "schedules.yml", "dango_dagster.yml"):
        shutil.copyfile(real / ".dango" / name, fake_repo / ".dango" / name)
    shutil.copytree(real / "dbt_project", fake_repo / "dbt_project")
    for junk in ("target", "logs", "dbt_packages"):
        (fake_repo / "dbt_project" / junk).mkdir(exist_ok=True)
        (fake_repo / "dbt_project" / junk / "x.json").write_text("{}")
    monkeypatch.setattr(config_module, "REPO_ROOT", fake_repo)

    root = init_demo_project(tmp_path / "shop", rows=20)
    assert (root / "dbt_project" / "models").is_dir()
    for junk in ("target", "logs", "dbt_packages"):
        assert not (root / "dbt_project" / junk).exists()


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.txt").write_text("precious")
    with pytest.raises(DemoProjectError, match="not empty; nothing was changed"):
        init_demo_project(target, rows=20)
    assert _tree(target) == {"thesis.txt": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no half-made project

    file_target = tmp_path / "afile"
    file_target.write_text("x")
    with pytest.raises(DemoProjectError, match="not a folder"):
        init_demo_project(file_target)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (init_demo_project(empty, rows=20) / ".dango" / "project.yml").is_file()


def test_cli_demo_init_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cli"
    assert main(["demo", "init", str(target), "--rows", "40", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert f"Created demo project {target.resolve()}" in out
    assert "40 rows of orders" in out
    assert f"export DANGO_PROJECT_DIR={target.resolve()}" in out

    assert main(["demo", "init", str(target)]) == 3
    assert "not empty" in capsys.readouterr().err

    assert main(["demo", "data", "--project", str(target), "--rows", "80"]) == 0
    assert "80 rows of orders" in capsys.readouterr().out
    assert len(_rows(target / "data" / "uploads" / "orders" / "orders_0001.csv")) == 80


def test_cli_entry_point_runs(tmp_path: Path) -> None:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "dango-dagster"
    target = tmp_path / "proj"
    done = subprocess.run(
        [str(exe), "demo", "init", str(target), "--rows", "30"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Next steps" in done.stdout
    bad = subprocess.run(
        [str(exe), "demo", "init", str(target)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 3
    assert "Traceback" not in bad.stderr and "not empty" in bad.stderr
