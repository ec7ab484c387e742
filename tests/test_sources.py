"""dlt sources: real dlt loads into real DuckDB files, no mocks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from dlt.common.runtime import anon_tracker

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.ingestion.sources import (
    FILE_COLUMN,
    SourceError,
    build_dlt_source,
    build_pipeline,
    source_tables,
    table_files,
)
from dango_dagster.demo import init_demo_project


def _config(root: Path, yaml_text: str) -> ProjectConfig:
    (root / ".dango").mkdir(parents=True, exist_ok=True)
    (root / ".dango" / "project.yml").write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return load_config(root)


def _load(config: ProjectConfig, name: str) -> None:
    source = config.source(name)
    info = build_pipeline(config, source).run(build_dlt_source(config, source))
    info.raise_on_failed_jobs()


def _counts(config: ProjectConfig, schema: str) -> dict[str, int]:
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'",
            [schema],
        ).fetchall()
        return {
            t: con.execute(f'SELECT count(*) FROM {schema}."{t}"').fetchone()[0] for (t,) in tables
        }


@pytest.fixture
def demo(tmp_path: Path) -> ProjectConfig:
    return load_config(init_demo_project(tmp_path / "demo", rows=300))


# -- files sources ------------------------------------------------------------------------------
def test_table_discovery_files_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "up"
    (folder / "orders" / "2024").mkdir(parents=True)
    (folder / "orders" / "a.csv").write_text("x\n1\n")
    (folder / "orders" / "2024" / "b.csv").write_text("x\n2\n")
    (folder / "orders" / ".c.csv.123.tmp").write_text("x\n3\n")  # a writer's temp file
    (folder / "orders" / ".hidden.csv").write_text("x\n4\n")
    (folder / "orders" / "notes.txt").write_text("not data")
    (folder / "Order Items.csv").write_text("x\n5\n")
    (folder / "empty.csv").write_text("")
    (folder / "nothing_here").mkdir()
    (folder / "_meta").mkdir()
    (folder / "_meta" / "m.csv").write_text("x\n6\n")
    (folder / "orders.csv").write_text("x\n7\n")  # same table as the folder: merged
    (folder / "data.parquet").write_text("not csv")

    found = table_files(folder, "csv")
    assert list(found) == ["order_items", "orders"]
    assert [p.relative_to(folder).as_posix() for p in found["orders"]] == [
        "orders/2024/b.csv",
        "orders/a.csv",
        "orders.csv",
    ]
    assert list(table_files(folder, "parquet")) == ["data"]
    assert table_files(tmp_path / "missing", "csv") == {}


def test_demo_load_counts_types_and_origin(demo: ProjectConfig) -> None:
    source = demo.source("shop")
    assert source_tables(demo, source) == ["customers", "orders", "payments"]
    dlt_source = build_dlt_source(demo, source)
    assert dlt_source.name == "shop"
    assert set(dlt_source.resources) == {"customers", "orders", "payments"}

    pipeline = build_pipeline(demo, source)
    assert pipeline.pipeline_name == "dango_shop"
    assert pipeline.dataset_name == "raw_shop"
    assert Path(pipeline.working_dir).is_relative_to(demo.state_dir / "dlt")

    _load(demo, "shop")
    assert anon_tracker._ANON_TRACKER_ENDPOINT is None  # dlt's telemetry never started
    assert _counts(demo, "raw_shop") == {"customers": 60, "orders": 300, "payments": 315}
    with duckdb.connect(str(demo.warehouse_path), read_only=True) as con:
        types = {row[0]: row[1] for row in con.execute("DESCRIBE raw_shop.orders").fetchall()}
        files = con.execute(f"SELECT DISTINCT {FILE_COLUMN} FROM raw_shop.payments").fetchall()
    assert types == {
        "order_id": "BIGINT",
        "customer_id": "BIGINT",
        "order_date": "DATE",
        "status": "VARCHAR",
        FILE_COLUMN: "VARCHAR",
    }
    assert files == [("payments/payments_0001.csv",)]


def test_new_file_shows_up_after_reload_and_nothing_doubles(demo: ProjectConfig) -> None:
    _load(demo, "shop")
    _load(demo, "shop")  # a reload with no new files changes nothing
    assert _counts(demo, "raw_shop")["orders"] == 300

    extra = demo.uploads_dir / "shop" / "orders" / "orders_0002.csv"
    with open(extra, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order_id", "customer_id", "order_date", "status"])
        writer.writerows([(1000 + i, 1, "2025-07-01", "placed") for i in range(7)])
    _load(demo, "shop")
    assert _counts(demo, "raw_shop")["orders"] == 307
    with duckdb.connect(str(demo.warehouse_path), read_only=True) as con:
        sql = f"SELECT {FILE_COLUMN}, count(*) FROM raw_shop.orders GROUP BY 1"
        by_file = dict(con.execute(sql).fetchall())
    assert by_file == {"orders/orders_0001.csv": 300, "orders/orders_0002.csv": 7}

    extra.unlink()  # a file taken away is gone after the next full reload too
    _load(demo, "shop")
    assert _counts(demo, "raw_shop")["orders"] == 300


def test_extract_and_normalize_never_open_the_warehouse(demo: ProjectConfig) -> None:
    source = demo.source("shop")
    # Fresh project: after extract + normalize the warehouse file still does not exist.
    pipeline = build_pipeline(demo, source)
    pipeline.extract(build_dlt_source(demo, source))
    pipeline.normalize()
    assert not demo.warehouse_path.exists()
    pipeline.load().raise_on_failed_jobs()
    assert _counts(demo, "raw_shop")["orders"] == 300

    # Existing warehouse held open for writing by another process (as a dbt run under the lock
    # would): any open of the file from here fails, yet extract + normalize still succeed.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(demo.warehouse_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(demo.warehouse_path), read_only=True)
        before = demo.warehouse_path.stat().st_mtime_ns
        pipeline = build_pipeline(demo, source)
        pipeline.extract(build_dlt_source(demo, source))
        info = pipeline.normalize()
        assert info.row_counts["orders"] == 300
        assert demo.warehouse_path.stat().st_mtime_ns == before
    finally:
        holder.communicate("", timeout=30)
    pipeline.load().raise_on_failed_jobs()  # the "lock" is free again: load goes through
    assert _counts(demo, "raw_shop")["payments"] == 315


def test_dlt_needs_no_home_folder(tmp_path: Path) -> None:
    """dlt keeps everything under .dango/state and sends no telemetry (a fresh HOME stays empty)."""
    root = init_demo_project(tmp_path / "demo", rows=20)
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import sys; from dango_dagster.config import load_config; "
        "from dango_dagster.defs.ingestion.sources import build_dlt_source, build_pipeline; "
        "c = load_config(sys.argv[1]); s = c.source('shop'); "
        "build_pipeline(c, s).run(build_dlt_source(c, s)).raise_on_failed_jobs()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DLT_", "RUNTIME__"))}
    env |= {"HOME": str(home), "XDG_DATA_HOME": str(home / ".local")}
    subprocess.run([sys.executable, "-c", script, str(root)], env=env, check=True, timeout=120)
    assert list(home.iterdir()) == []
    assert (root / ".dango" / "state" / "dlt" / "dango_shop").is_dir()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_jsonl_files(tmp_path: Path, fmt: str) -> None:
    config = _config(tmp_path / "p", f"sources: [{{name: events, format: {fmt}}}]\n")
    folder = config.source_path(config.source("events"))
    (folder / "clicks").mkdir(parents=True)
    with duckdb.connect() as con:
        for part in (1, 2):
            target = folder / "clicks" / f"part_{part}.{fmt}"
            options = "FORMAT parquet" if fmt == "parquet" else "FORMAT json"
            con.execute(
                f"COPY (SELECT i AS click_id, DATE '2025-01-01' + i::INT AS day, 'x' || i AS tag "
                f"FROM range({part * 10}) r(i)) TO '{target}' ({options})"
            )
    _load(config, "events")
    assert _counts(config, "raw_events") == {"clicks": 30}
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        day_type = con.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = 'raw_events' AND table_name = 'clicks' AND column_name = 'day'"
        ).fetchone()
    assert day_type == ("DATE",)


def test_late_odd_value_does_not_break_a_csv_load(tmp_path: Path) -> None:
    """A column that looks like dates for 30k rows and then is not still loads (as text)."""
    config = _config(tmp_path / "p", "sources: [{name: odd}]\n")
    folder = config.source_path(config.source("odd"))
    folder.mkdir(parents=True)
    with open(folder / "things.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label"])
        writer.writerows((i, "2024-01-01" if i < 30_000 else "later") for i in range(30_001))
    _load(config, "odd")
    assert _counts(config, "raw_odd") == {"things": 30_001}


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path / "p", "sources: [{name: bad, format: parquet}]\n")
    folder = config.source_path(config.source("bad"))
    folder.mkdir(parents=True)
    (folder / "broken.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(Exception, match="broken.parquet") as info:
        _load(config, "bad")
    assert "Fix or remove the file" in str(info.value)


def test_files_gone_since_the_source_was_built(tmp_path: Path) -> None:
    config = _config(tmp_path / "p", "sources: [{name: shop}]\n")
    folder = config.source_path(config.source("shop"))
    folder.mkdir(parents=True)
    (folder / "orders.csv").write_text("order_id\n1\n")
    dlt_source = build_dlt_source(config, config.source("shop"))
    (folder / "orders.csv").unlink()
    pipeline = build_pipeline(config, config.source("shop"))
    with pytest.raises(Exception, match="no csv files"):
        pipeline.extract(dlt_source)


# -- dlt sources by import path -----------------------------------------------------------------
def test_dlt_source_by_ref(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "p",
        """\
        sources:
          - name: numbers
            type: dlt
            ref: dlt_fixture_sources:numbers_source
            kwargs: {count: 5}
          - name: events
            type: dlt
            ref: dlt_fixture_sources:bare_resource
        """,
    )
    numbers = build_dlt_source(config, config.source("numbers"))
    assert numbers.name == "numbers"  # renamed after the configured source
    assert source_tables(config, config.source("numbers")) == ["numbers", "letters"]
    assert source_tables(config, config.source("events")) == ["events"]
    assert build_dlt_source(config, config.source("events")).name == "events"

    _load(config, "numbers")
    _load(config, "events")
    assert _counts(config, "raw_numbers") == {"numbers": 5, "letters": 3}
    assert _counts(config, "raw_events") == {"events": 2}


@pytest.mark.parametrize(
    ("ref", "kwargs", "message"),
    [
        ("dango_no_such_module:src", {}, "module 'dango_no_such_module' not found"),
        ("dlt_fixture_broken:source", {}, "'dango_missing_dependency_xyz' is missing"),
        ("dlt_fixture_sources:nope", {}, "has no attribute 'nope'"),
        ("dlt_fixture_sources:NOT_CALLABLE", {}, "is a int, not a function"),
        ("dlt_fixture_sources:not_a_source", {}, "returned list, not a dlt source or resource"),
        ("dlt_fixture_sources:numbers_source", {"colour": "red"}, "Fix `kwargs:`"),
    ],
)
def test_bad_refs_say_what_to_fix(tmp_path: Path, ref: str, kwargs: dict, message: str) -> None:
    config = _config(
        tmp_path / "p",
        f"sources: [{{name: s, type: dlt, ref: '{ref}', kwargs: {json.dumps(kwargs)}}}]\n",
    )
    with pytest.raises(SourceError, match="source 's': ref") as info:
        build_dlt_source(config, config.source("s"))
    assert message in str(info.value)
