"""dlt-based sources of ``.dango/sources.yml`` in Dango's format: real dlt loads, real DuckDB, a
real HTTP server on 127.0.0.1 for ``rest_api``; no mocks."""

from __future__ import annotations

import importlib.util
import json
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.defs.ingestion.sources import (
    SourceError,
    build_dlt_source,
    build_pipeline,
    rest_api_config,
    source_tables,
)
from dango_dagster.demo import init_demo_project

TOKEN = "s3cret-token"
ORDERS = [{"id": i, "amount": i * 1.5, "status": "paid"} for i in range(1, 8)]


def _add_sources(root: Path, text: str) -> ProjectConfig:
    path = root / ".dango" / "sources.yml"
    path.write_text(path.read_text() + textwrap.dedent(text), encoding="utf-8")
    return load_config(root)


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        # dlt's page_number paginator counts from 0 and stops at the first empty page.
        page = int(self.path.partition("page=")[2] or 0) if "page=" in self.path else 0
        body = {"data": ORDERS[page * 5 : (page + 1) * 5], "page": page, "total": 2}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rest_api_config_is_dangos_mapping() -> None:
    config = rest_api_config(
        {
            "base_url": "https://x",
            "auth_type": "api_key",
            "auth_token": "k",
            "api_key_name": "X-Key",
            "endpoints": ["users", {"path": "/v1/orders", "paginator": {"type": "none"}}],
        }
    )
    assert config["client"]["auth"] == {
        "type": "api_key",
        "name": "X-Key",
        "api_key": "k",
        "location": "header",
    }
    users, orders = config["resources"]
    assert users["endpoint"] == {"path": "users"} and users["write_disposition"] == "merge"
    assert orders["name"] == "v1_orders" and orders["endpoint"]["paginator"] == "single_page"


@pytest.mark.slow
def test_rest_api_end_to_end_through_dagster(
    tmp_path: Path, api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rest_api source as `dango source add` writes it, its token in .env, run through Dagster."""
    from dango_dagster.sync import run_pipeline

    root = init_demo_project(tmp_path / "shop", rows=50)
    monkeypatch.delenv("SHOP_API_TOKEN", raising=False)
    (root / ".env").write_text(f"SHOP_API_TOKEN={TOKEN}\n")
    config = _add_sources(
        root,
        f"""\
        - name: shop_api
          type: rest_api
          enabled: true
          rest_api:
            base_url: {api_url}
            auth_type: bearer
            auth_token_env: SHOP_API_TOKEN
            endpoints:
            - path: orders
              name: orders
              data_selector: data
              paginator: {{type: page_number, page_param: page}}
        """,
    )
    assert source_tables(config, config.source("shop_api")) == ["orders"]
    outcome = run_pipeline(config, sources=["shop_api"], quiet=True)
    assert outcome.success, outcome.error
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        rows = con.execute("SELECT id, amount FROM raw_shop_api.orders ORDER BY id").fetchall()
        history = con.execute(
            "SELECT status, rows_processed FROM _dango_meta.sync_history "
            "WHERE source_name = 'shop_api'"
        ).fetchall()
    assert rows == [(o["id"], o["amount"]) for o in ORDERS]
    assert history == [("success", len(ORDERS))]
    entries = json.loads((root / ".dango" / "history" / "shop_api.json").read_text())
    assert entries[-1]["status"] == "success" and entries[-1]["rows_processed"] == len(ORDERS)


def test_dlt_native_from_custom_sources(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".dango").mkdir(parents=True)
    (root / "custom_sources").mkdir()
    (root / "custom_sources" / "numbers_mod.py").write_text(
        textwrap.dedent(
            """\
            import dlt

            @dlt.source
            def numbers(count: int = 2):
                @dlt.resource(write_disposition="replace")
                def squares():
                    yield [{"n": i, "sq": i * i} for i in range(count)]
                return squares
            """
        )
    )
    (root / ".dango" / "sources.yml").write_text("version: '1.0'\nsources:\n")
    config = _add_sources(
        root,
        """\
        - name: nums
          type: dlt_native
          dlt_native:
            source_module: numbers_mod
            source_function: numbers
            function_kwargs: {count: 4}
        """,
    )
    source = config.source("nums")
    # Its asset: dagster-dlt's spec, without the dlt objects the UI shows as "(unserializable)".
    from dango_dagster.defs.ingestion.assets import build_ingestion_assets

    (spec,) = build_ingestion_assets(config, source).specs
    assert spec.key.path == ["raw_nums", "squares"]
    assert not [k for k in spec.metadata if k.startswith("dagster_dlt/")], spec.metadata
    build_pipeline(config, source).run(build_dlt_source(config, source)).raise_on_failed_jobs()
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT sum(sq) FROM raw_nums.squares").fetchone() == (14,)


@pytest.mark.skipif(
    importlib.util.find_spec("dango") is not None, reason="getdango is installed here"
)
def test_verified_source_without_getdango_says_what_to_install(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".dango").mkdir(parents=True)
    (root / ".dango" / "sources.yml").write_text(
        "sources:\n- name: pay\n  type: stripe\n  stripe: {stripe_secret_key_env: STRIPE_KEY}\n"
    )
    config = load_config(root)
    with pytest.raises(SourceError, match=r"pip install getdango==1\.0\.13"):
        build_dlt_source(config, config.source("pay"))


def test_dlt_native_errors_say_what_to_fix(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".dango").mkdir(parents=True)
    (root / ".dango" / "sources.yml").write_text(
        "sources:\n- name: x\n  type: dlt_native\n  dlt_native: {source_module: nowhere_mod,"
        " source_function: f}\n"
    )
    config = load_config(root)
    with pytest.raises(SourceError, match="custom_sources"):
        build_dlt_source(config, config.source("x"))


def _run_source(config: ProjectConfig, name: str) -> None:
    source = config.source(name)
    build_pipeline(config, source).run(build_dlt_source(config, source)).raise_on_failed_jobs()


def test_sql_database_source_with_dangos_keys(tmp_path: Path) -> None:
    """sql_database / postgres / mysql keep their settings under generic_config, as Dango does;
    a real SQLite database stands in for the server (same dlt source, SQLAlchemy URL)."""
    import sqlite3

    root = tmp_path / "p"
    (root / ".dango").mkdir(parents=True)
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("create table customers (id integer primary key, name text)")
        con.executemany("insert into customers values (?, ?)", [(1, "ana"), (2, "ben")])
    (root / ".dango" / "sources.yml").write_text(
        "sources:\n- name: crm\n  type: sql_database\n  generic_config:\n"
        "    credentials_env: CRM_DB_URL\n    table_names: [customers]\n"
    )
    (root / ".env").write_text(f"CRM_DB_URL=sqlite:///{db}\n")
    config = load_config(root)
    assert source_tables(config, config.source("crm")) == ["customers"]
    _run_source(config, "crm")
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT id, name FROM raw_crm.customers ORDER BY id").fetchall() == [
            (1, "ana"),
            (2, "ben"),
        ]


def test_filesystem_source_reads_by_extension(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / ".dango").mkdir(parents=True)
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "a.csv").write_text("sku,qty\nx,1\ny,2\n")
    (root / ".dango" / "sources.yml").write_text(
        "sources:\n- name: files\n  type: filesystem\n  filesystem:\n"
        f"    bucket_url: {exports.as_uri()}\n    file_glob: '*.csv'\n    table_name: stock\n"
    )
    config = load_config(root)
    _run_source(config, "files")
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT sum(qty) FROM raw_files.stock").fetchone() == (3,)


@pytest.mark.slow
def test_empty_replace_of_a_dlt_source_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dango's empty_sync_policy for dlt sources: a replace resource that returns no rows must
    not empty a table with rows (block, the default); `allow` lets it."""
    from dango_dagster.sync import run_pipeline

    root = init_demo_project(tmp_path / "shop", rows=20)
    (root / "custom_sources").mkdir()
    (root / "custom_sources" / "stock_mod.py").write_text(
        textwrap.dedent(
            """\
            import os
            import dlt

            @dlt.resource(write_disposition="replace")
            def stock():
                yield [{"sku": i} for i in range(int(os.environ["STOCK_ROWS"]))]
            """
        )
    )
    config = _add_sources(
        root,
        """\
        - name: wh
          type: dlt_native
          dlt_native: {source_module: stock_mod, source_function: stock}
        """,
    )

    def sync() -> tuple[bool, str | None, int]:
        outcome = run_pipeline(load_config(root), sources=["wh"], sync_only=True, quiet=True)
        with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
            rows = con.execute("SELECT count(*) FROM raw_wh.stock").fetchone()[0]
        return outcome.success, outcome.error, rows

    monkeypatch.setenv("STOCK_ROWS", "3")
    assert sync()[::2] == (True, 3)
    monkeypatch.setenv("STOCK_ROWS", "0")
    ok, error, rows = sync()
    assert (ok, rows) == (False, 3) and "empty_sync_policy: allow" in (error or "")
    path = root / ".dango" / "sources.yml"
    path.write_text(path.read_text() + "  empty_sync_policy: allow\n")
    assert sync()[::2] == (True, 0)
