"""The SQL of the file loader: parse a file into staging, check it fits, build the swap.

Readers, columns and types are Dango's (``read_csv_auto``, ``read_json_auto``, ``read_parquet``,
the four ``_dango_*`` columns), so a table either tool created is one the other can extend.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from dango_dagster.errors import FileSourceError

DANGO_COLUMNS = ("_dango_filename", "_dango_file_mtime", "_dango_loaded_at", "_dango_deleted")
_DANGO_TYPES = ("VARCHAR", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "BOOLEAN")
READ_FUNCTIONS = {
    ".csv": "read_csv_auto",
    ".json": "read_json_auto",
    ".jsonl": "read_json_auto",
    ".ndjson": "read_json_auto",
    ".parquet": "read_parquet",
}
_FIX = "Nothing was changed. Fix or remove the file, then sync again."


# A file source cannot be synced; the message names the file and what to do.
FilesLoadError = FileSourceError


@dataclass
class Staged:
    """One file parsed into the staging database."""

    path: str
    table: str
    size: int
    mtime_ns: int
    st_mtime: float
    rows: int
    columns: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mtime(self) -> dt.datetime:
        # Exactly what Dango stores and compares: datetime.fromtimestamp(st_mtime), local, naive.
        return dt.datetime.fromtimestamp(self.st_mtime)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _where(prefix: str, table: str) -> str:
    return f"{prefix}.{quote(table)}" if prefix else quote(table)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def stage_file(
    con: duckdb.DuckDBPyConnection, prefix: str, name: str, path: str, st: os.stat_result
) -> Staged:
    """Parse ``path`` into table ``name`` of the staging database (as Dango's readers type it)."""
    item = Staged(
        path=path,
        table=name,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        st_mtime=st.st_mtime,
        rows=0,
    )
    if st.st_size == 0:
        return item  # a file being created: 0 rows, skipped like Dango's 0-row files
    reader = READ_FUNCTIONS[Path(path).suffix.lower()]
    where = _where(prefix, name)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {where} AS SELECT * FROM {reader}({sql_text(path)})")
    except duckdb.Error as exc:
        detail = str(exc).split("Possible Solution")[0].strip().replace("\n", " ")[:400]
        raise FilesLoadError(f"Could not read {path} ({reader}): {detail}\n{_FIX}") from exc
    item.rows = con.execute(f"SELECT count(*) FROM {where}").fetchone()[0]  # type: ignore[index]
    item.columns = [
        (r[0], r[1])
        for r in con.execute(f"DESCRIBE {where}").fetchall()
        if r[0] not in DANGO_COLUMNS
    ]
    return item


def check_against(
    con: duckdb.DuckDBPyConnection,
    prefix: str,
    item: Staged,
    reference: list[tuple[str, str]],
    table: str = "the raw table",
) -> None:
    """Raise if the staged file does not fit ``reference`` (the table's columns and types):
    other column names (Dango's strict mode), or a value that does not cast (line and column)."""
    if item.rows == 0:
        return
    mine, want = dict(item.columns), dict(reference)
    if set(mine) != set(want):
        extra, missing = sorted(set(mine) - set(want)), sorted(set(want) - set(mine))
        parts = [f"extra columns {extra}" if extra else "", f"missing {missing}" if missing else ""]
        raise FilesLoadError(
            f"Schema mismatch in {item.path}: {', '.join(p for p in parts if p)} compared with "
            f"{table} (columns {sorted(want)}).\n{_FIX} To change the table's columns, drop it "
            "and its rows in _dango_file_metadata (Dango: `dango source remove`, "
            "`dango db clean`, `dango source add`)."
        )
    where = _where(prefix, item.table)
    for col, typ in reference:
        if mine[col] == typ:
            continue
        bad = con.execute(
            f"SELECT rowid, CAST({quote(col)} AS VARCHAR) FROM {where} WHERE {quote(col)} IS NOT "
            f"NULL AND TRY_CAST({quote(col)} AS {typ}) IS NULL ORDER BY rowid LIMIT 1"
        ).fetchone()
        if bad is not None:
            line = bad[0] + (2 if item.path.lower().endswith(".csv") else 1)
            kind = "line" if item.path.lower().endswith(".csv") else "row"
            raise FilesLoadError(
                f"Bad value in {item.path}, {kind} {line}, column {col!r}: {bad[1]!r} is not a "
                f"{typ} (the column's type in {table}).\n{_FIX}"
            )


def create_table_sql(target: str, columns: list[tuple[str, str]]) -> str:
    cols = [f"{quote(n)} {t}" for n, t in columns]
    cols += [f"{n} {t}" for n, t in zip(DANGO_COLUMNS, _DANGO_TYPES, strict=True)]
    return f"CREATE TABLE {target} ({', '.join(cols)})"


def insert_sql(target: str, prefix: str, item: Staged, columns: list[tuple[str, str]]) -> str:
    """Rows of a staged file in the table's column order and types, with Dango's four columns."""
    select = [f"CAST({quote(n)} AS {t})" for n, t in columns]
    stamp = item.mtime.strftime("%Y-%m-%d %H:%M:%S")
    select += [
        sql_text(os.path.basename(item.path)),
        f"TIMESTAMP '{stamp}'",
        "CURRENT_TIMESTAMP",
        "false",
    ]
    return f"INSERT INTO {target} SELECT {', '.join(select)} FROM {_where(prefix, item.table)}"
