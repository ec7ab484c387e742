"""The warehouse on DuckLake: attaching the catalog, and the snapshot readers are pinned to.

With ``warehouse.kind: ducklake`` the warehouse is no single DuckDB file but a DuckLake: its
catalog (tables, schemas, every snapshot) in PostgreSQL, its data as Parquet files under
``warehouse.data_path``, a folder every host sees at the same path. Writers on any host commit
through the catalog; the warehouse lock still serialises them (two ``CREATE OR REPLACE`` of one
dbt model conflict in DuckLake, see docs/SCALING.md).

Readers never need a copy: every commit is a numbered snapshot that stays readable, so
*publishing* is writing one number (``.dango/published/ducklake.json``), O(1) whatever the size,
and a reader attaches ``READ_ONLY`` at that ``SNAPSHOT_VERSION``: what it sees never changes
under it, and it never blocks a writer.

Everything attaches the lake as ``lake`` with ``METADATA_SCHEMA 'lake'``, as dlt's ``ducklake``
destination (named ``lake``) does, so dlt, dbt and readers see one catalog.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dango_dagster._fs import atomic_write_json
from dango_dagster.errors import ProjectConfigError, SnapshotError

if TYPE_CHECKING:
    import duckdb

    from dango_dagster.config import ProjectConfig

__all__ = [
    "CATALOG_ENV",
    "connect_warehouse",
    "warehouse_exists",
    "LAKE_NAME",
    "Lake",
    "lake_for",
    "open_published",
    "publish_snapshot",
    "published_snapshot",
]

CATALOG_ENV = "DANGO_LAKE_CATALOG"
LAKE_NAME = "lake"  # the attach alias, dlt's ducklake_name and the catalog's metadata schema
PUBLISHED_FILE = "ducklake.json"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Lake:
    """Where one project's DuckLake lives: the catalog (a ``postgresql://`` URL) and the data."""

    catalog: str
    data_path: Path

    @property
    def attach_path(self) -> str:
        """What DuckDB's ATTACH (and dbt-duckdb's ``attach: path``) takes."""
        return f"ducklake:postgres:{self.catalog}"

    def attach_sql(
        self, *, read_only: bool = False, snapshot: int | None = None, alias: str = LAKE_NAME
    ) -> str:
        options = [f"DATA_PATH {_quote(str(self.data_path) + '/')}"]
        options.append(f"METADATA_SCHEMA {_quote(LAKE_NAME)}")
        if snapshot is not None:
            options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
        if read_only:
            options.append("READ_ONLY")
        return f"ATTACH {_quote(self.attach_path)} AS {alias} ({', '.join(options)})"

    def connect(
        self, *, read_only: bool = False, snapshot: int | None = None
    ) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the lake attached (and in use) as ``lake``."""
        import duckdb

        from dango_dagster.lake.extensions import duckdb_config

        con = duckdb.connect(config=duckdb_config())
        try:
            con.execute(self.attach_sql(read_only=read_only, snapshot=snapshot))
            con.execute(f"USE {LAKE_NAME}")
        except duckdb.Error as exc:
            con.close()
            raise SnapshotError(
                f"Could not attach the DuckLake warehouse {self.attach_path} "
                f"(data {self.data_path}): {exc}",
                hint=(
                    "Check warehouse.catalog and warehouse.data_path; DuckLake needs the duckdb "
                    "1.5.5 environment with its extensions laid out (scripts/setup.sh)."
                ),
            ) from exc
        return con

    def current_snapshot_id(self) -> int:
        """The newest snapshot, read from the catalog database itself (a few ms: no DuckDB and no
        extension load). ``ducklake_snapshot`` is a table of the DuckLake format's catalog."""
        import psycopg2

        try:
            with psycopg2.connect(self.catalog, connect_timeout=10) as conn, conn.cursor() as cur:
                cur.execute(f'SELECT max(snapshot_id) FROM "{LAKE_NAME}".ducklake_snapshot')
                row = cur.fetchone()
        except psycopg2.Error as exc:
            raise SnapshotError(
                f"Could not read the DuckLake catalog {_redact(self.catalog)}: {exc}".strip(),
                hint="Check warehouse.catalog, and that a sync has written the lake once.",
            ) from exc
        if row is None or row[0] is None:
            raise SnapshotError("The DuckLake catalog has no snapshot yet.")
        return int(row[0])

    def dbt_env(self) -> dict[str, str]:
        """What the demo profile's ``ducklake`` target reads (profiles.yml)."""
        from dango_dagster.lake.extensions import extension_directory

        return {
            "DANGO_LAKE_ATTACH": self.attach_path,
            "DANGO_LAKE_DATA_PATH": str(self.data_path) + "/",
            "DANGO_DUCKDB_EXTENSION_DIR": str(extension_directory()),
        }

    def dlt_destination(self) -> Any:
        """dlt's ``ducklake`` destination on this lake (credentials built here: dlt ignores a
        ``storage`` given in a plain dict and writes to ``./lake.files`` instead)."""
        from dlt.destinations import ducklake

        from dango_dagster.lake._compat import ducklake_credentials
        from dango_dagster.lake.extensions import duckdb_config

        storage = str(self.data_path) + "/"
        creds = ducklake_credentials(LAKE_NAME, self.catalog, storage, duckdb_config())
        return ducklake(credentials=creds)


def lake_for(config: ProjectConfig) -> Lake:
    """The project's DuckLake; a clear error when its catalog is not configured."""
    settings = config.settings.warehouse
    catalog = os.environ.get(CATALOG_ENV) or settings.catalog
    if not catalog:
        raise ProjectConfigError(
            f"{config.root} has warehouse.kind: ducklake but no catalog.",
            hint=f"Set warehouse.catalog (postgresql://user@host/db) or {CATALOG_ENV}.",
        )
    if not catalog.startswith(("postgresql://", "postgres://")):
        raise ProjectConfigError(
            f"warehouse.catalog {catalog!r} is not a postgresql:// URL.",
            hint="Set warehouse.catalog to postgresql://user@host:5432/db.",
        )
    data = Path(settings.data_path).expanduser()
    return Lake(catalog=catalog, data_path=data if data.is_absolute() else config.root / data)


def publish_snapshot(config: ProjectConfig, lake: Lake | None = None) -> dict[str, Any]:
    """Pin readers to the lake's current snapshot: one number written atomically, O(1).

    Call it under the warehouse lock (as the snapshot asset does), so the pin is a state every
    writer has finished with.
    """
    lake = lake or lake_for(config)
    started = time.perf_counter()
    snapshot = lake.current_snapshot_id()
    record = {"snapshot_id": snapshot, "catalog": _redact(lake.catalog)}
    record["published_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config.published_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(published_file(config), record)
    record["seconds"] = time.perf_counter() - started
    return record


def published_file(config: ProjectConfig) -> Path:
    """``.dango/published/ducklake.json``: the pin, replaced atomically at every publish."""
    return config.published_dir / PUBLISHED_FILE


def published_snapshot(config: ProjectConfig) -> int | None:
    """The snapshot readers are pinned to, or None before the first publish."""
    try:
        raw = json.loads(published_file(config).read_text(encoding="utf-8"))
        return int(raw["snapshot_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def open_published(config: ProjectConfig) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published DuckLake snapshot (what the file copy was)."""
    snapshot = published_snapshot(config)
    if snapshot is None:
        raise SnapshotError(
            f"Nothing is published for {config.root} yet.",
            hint="Run the pipeline once (`dango-dagster sync`): it publishes at the end.",
        )
    return lake_for(config).connect(read_only=True, snapshot=snapshot)


def _redact(url: str) -> str:
    from dango_dagster.lock.postgres import redact_dsn

    return redact_dsn(url)


def connect_warehouse(config: ProjectConfig, *, read_only: bool = True) -> Any:
    """A connection to the live warehouse, whatever its kind; only under the warehouse lock.

    ``file``: the DuckDB file itself. ``ducklake``: an in-memory DuckDB with the lake attached and
    in use, so the same SQL (``current_database()``, ``schema.table``) works on both.
    """
    if config.settings.warehouse.kind == "ducklake":
        return lake_for(config).connect(read_only=read_only)
    import duckdb

    if not read_only:
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(config.warehouse_path), read_only=read_only)


def warehouse_exists(config: ProjectConfig) -> bool:
    """Whether anything was ever written (a lake always exists once its catalog is set)."""
    if config.settings.warehouse.kind == "ducklake":
        return True
    return config.warehouse_path.exists()
