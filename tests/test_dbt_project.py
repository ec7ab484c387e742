"""The dbt project: its contract with the rest of the product, and a real dlt load + dbt build."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
import yaml

from dango_dagster.config import REPO_ROOT, ProjectConfig, load_config
from dango_dagster.defs.ingestion.dango_files import load_files_source
from dango_dagster.demo import init_demo_project
from dango_dagster.lock import DbtLock

DBT_DIR = REPO_ROOT / "dbt_project"
MARTS = ("fct_orders", "fct_daily_sales", "dim_customers")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_profile_inside_project_reads_the_warehouse_path_from_env() -> None:
    project = _yaml(DBT_DIR / "dbt_project.yml")
    assert project["name"] == "dango_shop"
    profile = _yaml(DBT_DIR / "profiles.yml")[project["profile"]]
    assert profile["target"] == "dev"
    dev = profile["outputs"]["dev"]
    assert dev["type"] == "duckdb"
    assert dev["path"] == "{{ env_var('DANGO_WAREHOUSE_PATH', '../data/warehouse.duckdb') }}"
    assert dev["threads"] in (1, 2)
    assert not dev.get("extensions")  # nothing to download
    assert project["flags"]["send_anonymous_usage_stats"] is False


def test_sources_are_the_raw_tables_of_the_csv_sources() -> None:
    """Named as Dango names them: source('orders', 'orders') on raw_orders.orders."""
    sources = _yaml(DBT_DIR / "models" / "staging" / "_sources.yml")["sources"]
    assert [(s["name"], s["schema"], [t["name"] for t in s["tables"]]) for s in sources] == [
        (name, f"raw_{name}", [name]) for name in ("customers", "orders", "payments")
    ]
    assert (DBT_DIR / "macros" / "generate_schema_name.sql").is_file()


def test_every_mart_has_tests() -> None:
    models = _yaml(DBT_DIR / "models" / "marts" / "_marts.yml")["models"]
    tested = {m["name"] for m in models if any(c.get("data_tests") for c in m.get("columns", []))}
    assert set(MARTS) <= tested
    assert {p.stem for p in (DBT_DIR / "models" / "marts").glob("*.sql")} == set(MARTS)


def _dbt(config: ProjectConfig, *args: str) -> subprocess.CompletedProcess[str]:
    dbt = Path(sys.executable).parent / "dbt"
    project = config.dbt_project_dir
    env = {
        **os.environ,
        "DANGO_WAREHOUSE_PATH": str(config.warehouse_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    return subprocess.run(
        [str(dbt), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=config.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _load_and_build(config: ProjectConfig) -> dict:
    for source in config.sources:
        load_files_source(config, source, lambda: DbtLock(config.root, source="test"))
    done = _dbt(config, "build")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return json.loads((config.dbt_project_dir / "target" / "run_results.json").read_text())


def _expected(config: ProjectConfig) -> dict:
    """What the marts must say, computed from the CSV files in Python."""
    shop = config.uploads_dir
    orders: list[dict[str, str]] = []
    for path in sorted((shop / "orders").glob("*.csv")):
        with open(path, newline="") as fh:
            orders.extend(csv.DictReader(fh))
    with open(shop / "payments" / "payments_0001.csv", newline="") as fh:
        paid: dict[str, Decimal] = {}
        for row in csv.DictReader(fh):
            paid[row["order_id"]] = paid.get(row["order_id"], Decimal(0)) + Decimal(row["amount"])
    kept = [o for o in orders if o["status"] not in {"cancelled", "returned"}]
    revenue = sum((paid.get(o["order_id"], Decimal(0)) for o in kept), Decimal(0))
    return {"days": len({o["order_date"] for o in orders}), "revenue": revenue}


@pytest.mark.slow
def test_dlt_load_then_dbt_build_on_a_fresh_demo(tmp_path: Path) -> None:
    config = load_config(init_demo_project(tmp_path / "demo", rows=300))
    results = _load_and_build(config)
    statuses: dict[str, set[str]] = {}
    for r in results["results"]:
        statuses.setdefault(r["unique_id"].split(".")[0], set()).add(r["status"])
    assert statuses == {"model": {"success"}, "test": {"pass"}}
    assert sum(r["unique_id"].startswith("test.") for r in results["results"]) >= 20

    expected = _expected(config)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        schemas = {s for (s,) in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        assert {"raw_customers", "raw_orders", "raw_payments", "staging", "marts"} <= schemas
        assert not {s for s in schemas if s.startswith("main_")}

        def one(sql: str) -> tuple:
            return con.execute(sql).fetchone()

        assert one("SELECT count(*) FROM raw_orders.orders") == (300,)
        assert one("SELECT count(*) FROM staging.stg_orders") == (300,)
        assert one("SELECT count(*) FROM staging.stg_customers") == (60,)
        assert one("SELECT count(*) FROM raw_payments.payments") == one(
            "SELECT count(*) FROM staging.stg_payments"
        )
        assert one("SELECT count(*) FROM marts.dim_customers") == (60,)
        assert one("SELECT count(*), sum(orders), sum(revenue) FROM marts.fct_daily_sales") == (
            expected["days"],
            300,
            expected["revenue"],
        )
        assert expected["days"] >= 50
        assert one("SELECT sum(orders) FROM marts.dim_customers") == (300,)

    # A new upload file flows through the whole chain on the next load + build.
    new = config.uploads_dir / "orders" / "orders_0002.csv"
    new.write_text(
        "order_id,customer_id,order_date,status\n"
        "5001,1,2025-07-01,placed\n5002,2,2025-07-01,completed\n5003,1,2025-07-02,shipped\n"
    )
    _load_and_build(config)
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        total, days = con.execute(
            "SELECT sum(orders), count(*) FROM marts.fct_daily_sales"
        ).fetchone()
        july = con.execute(
            "SELECT orders FROM marts.fct_daily_sales WHERE sales_date = DATE '2025-07-01'"
        ).fetchone()
    assert (total, days) == (303, expected["days"] + 2)
    assert july == (2,)
