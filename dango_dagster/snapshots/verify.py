"""The DuckDB side of a snapshot: checkpoint the live file, then prove the copy matches it.

Under the lock, the live warehouse is opened read-write (DuckDB's own file lock then proves that
no process bypassing ``DbtLock`` has it open), checkpointed so every committed transaction is in
the main file rather than the WAL, and its catalog is recorded. After the lock is released, the
copy must open read-only and show the same catalog: same tables and views, same column counts,
same row counts. A truncated or torn copy fails that test and never gets a final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dango_dagster.errors import SnapshotError, WarehouseMissingError

__all__ = [
    "Catalog",
    "SnapshotError",
    "WarehouseMissingError",
    "checkpoint_and_catalog",
    "open_live_warehouse",
    "verify_copy",
]

# Schemas whose tables get an exact row count in the result (the asset's metadata).
COUNTED_SCHEMAS = ("marts",)

_CATALOG_SQL = """
select schema_name, table_name, 'table', column_count, estimated_size
from duckdb_tables() where database_name = current_database() and not temporary
union all
select schema_name, view_name, 'view', column_count, null
from duckdb_views() where database_name = current_database() and not internal and not temporary
order by 1, 2
"""


@dataclass(frozen=True)
class Catalog:
    """``(schema, name, kind, columns, rows)`` of every table and view of a database."""

    entries: tuple[tuple[str, str, str, int, int | None], ...]

    @property
    def table_names(self) -> list[str]:
        return [f"{s}.{n}" for s, n, kind, _, _ in self.entries if kind == "table"]

    def describe_difference(self, other: Catalog) -> str:
        ours, theirs = set(self.entries), set(other.entries)
        missing = sorted(f"{e[0]}.{e[1]}" for e in ours - theirs)
        extra = sorted(f"{e[0]}.{e[1]}" for e in theirs - ours)
        return f"missing or changed: {missing or 'none'}; unexpected: {extra or 'none'}"


def _read_catalog(con: Any) -> Catalog:
    rows = con.execute(_CATALOG_SQL).fetchall()
    return Catalog(tuple((str(s), str(n), str(k), int(c), r) for s, n, k, c, r in rows))


def table_names(con: Any) -> set[tuple[str, str]]:
    """``(schema, table)`` of every base table of the connection's database."""
    sql = (
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = current_database() and not temporary"
    )
    return {(str(s), str(t)) for s, t in con.execute(sql).fetchall()}


def open_live_warehouse(path: Path) -> Any:
    """A read-write connection to the live warehouse, with a clear error when that fails."""
    import duckdb

    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise SnapshotError(
            f"Could not open the warehouse {path} for the snapshot checkpoint: {exc}. Some "
            "process has the live file open without holding the warehouse lock (a notebook or "
            "BI tool reading it directly?). Readers must use snapshots; close that process and "
            "try again. Nothing was changed."
        ) from exc
    except duckdb.Error as exc:
        raise SnapshotError(f"Could not open the warehouse {path}: {exc}") from exc


def checkpoint_and_catalog(con: Any, path: Path) -> Catalog:
    """``CHECKPOINT`` the live file and record its catalog (called under the lock)."""
    import duckdb

    try:
        con.execute("CHECKPOINT")
        catalog = _read_catalog(con)
    except duckdb.Error as exc:
        raise SnapshotError(
            f"CHECKPOINT of the warehouse {path} failed: {exc}. Another connection in this "
            "process may still have a transaction open; finish it and try again."
        ) from exc
    wal = Path(f"{path}.wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise SnapshotError(
            f"{wal} still holds data after CHECKPOINT, so a copy of {path} would miss committed "
            "transactions. Close other connections to the warehouse and try again."
        )
    return catalog


def quote_ident(name: str) -> str:
    """A DuckDB identifier, quoted (catalog names come from the warehouse, never trusted)."""
    return '"' + name.replace('"', '""') + '"'


def verify_copy(copy: Path, expected: Catalog, size: int) -> dict[str, int]:
    """Open the copy read-only and check it against the live catalog; returns marts row counts.

    Raises ``SnapshotError`` when the copy is short, does not open, or its catalog differs.
    """
    import duckdb

    actual_size = os.stat(copy).st_size
    if actual_size != size:
        raise SnapshotError(
            f"The snapshot copy has {actual_size} bytes where the warehouse had {size}; it was "
            "discarded and the previous snapshots are untouched."
        )
    try:
        con = duckdb.connect(str(copy), read_only=True)
    except duckdb.Error as exc:
        raise SnapshotError(
            f"The snapshot copy does not open ({exc}); it was discarded and the previous "
            "snapshots are untouched."
        ) from exc
    try:
        got = _read_catalog(con)
        if got != expected:
            raise SnapshotError(
                "The snapshot copy does not match the warehouse it was taken from ("
                f"{expected.describe_difference(got)}); it was discarded and the previous "
                "snapshots are untouched."
            )
        counts: dict[str, int] = {}
        for schema, name, kind, _, _ in got.entries:
            if kind == "table" and schema in COUNTED_SCHEMAS:
                sql = f"select count(*) from {quote_ident(schema)}.{quote_ident(name)}"
                row = con.execute(sql).fetchone()
                counts[f"{schema}.{name}"] = int(row[0]) if row else 0
        return counts
    except duckdb.Error as exc:
        raise SnapshotError(
            f"Reading the snapshot copy failed ({exc}); it was discarded and the previous "
            "snapshots are untouched."
        ) from exc
    finally:
        con.close()
