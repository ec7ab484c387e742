"""Helpers for the snapshot tests: real warehouses, real child processes.

Child processes run functions of this module (``python -c "from snapshot_support import ..."``
with this folder on ``PYTHONPATH``), so the code under test runs in a separate OS process
exactly as a sync, a notebook or a rogue reader would.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import duckdb
import yaml

TESTS_DIR = Path(__file__).resolve().parent


def write_config(project: Path, **sections: object) -> None:
    """Write ``.dango/project.yml`` with the given sections."""
    path = project / ".dango" / "project.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections), encoding="utf-8")


def make_warehouse(path: Path, rows: int = 1000) -> None:
    """A small warehouse shaped like the demo: raw, staging and marts schemas, a view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema if not exists raw_shop")
        con.execute("create schema if not exists staging")
        con.execute("create schema if not exists marts")
        con.execute(
            f"create or replace table raw_shop.orders as select range as id, "
            f"range % 97 as customer_id, (range % 1000) / 10.0 as amount from range({rows})"
        )
        con.execute("create or replace view staging.stg_orders as select * from raw_shop.orders")
        con.execute(
            "create or replace table marts.fct_daily_sales as select customer_id, "
            "sum(amount) as revenue, count(*) as orders from raw_shop.orders group by 1"
        )
    finally:
        con.close()


def make_big_warehouse(path: Path, rows: int) -> None:
    """A warehouse of roughly ``rows * 25`` bytes of incompressible data (for kill tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema if not exists marts")
        con.execute(
            f"create table marts.big as select range as i, random() as a, "
            f"md5(range::varchar) as s from range({rows})"
        )
    finally:
        con.close()


def table_rows(db: Path, table: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"select * from {table} order by all").fetchall()
    finally:
        con.close()


def child(python: str, code: str, **popen: object) -> subprocess.Popen[str]:
    """Start ``python -c code`` with this folder importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [python, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def call(python: str, func: str, *args: object) -> subprocess.Popen[str]:
    """Run ``func(*args)`` of this module in a child process."""
    return child(python, f"from snapshot_support import {func}; {func}(*{args!r})")


def wait_for(path: Path, timeout: float = 30.0, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until ``path`` exists (a child's "ready" signal); fail with the child's output."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"child exited early ({proc.returncode}): {out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


# --- code that runs in child processes -----------------------------------------------------------


def hold_lock(project: str, ready: str, release: str, operation: str = "nightly-sync") -> None:
    """Hold the warehouse lock until the file ``release`` appears (or 60 s pass)."""
    from dango_dagster.lock import DbtLock

    lock = DbtLock(project, source="test-holder", operation=operation)
    lock.acquire(timeout=30)
    Path(ready).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.release()


def hold_live_open(warehouse: str, ready: str, release: str) -> None:
    """Keep the live warehouse open read-write WITHOUT the lock (a rogue process)."""
    con = duckdb.connect(warehouse)
    con.execute("select 1")
    Path(ready).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    con.close()


LEDGER_SETUP = """
create schema if not exists marts;
create table marts.items (batch integer, n integer, value bigint);
create table marts.ledger (batches integer, n_rows bigint, total bigint);
insert into marts.ledger values (0, 0, 0);
"""


def setup_ledger(warehouse: Path) -> None:
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(warehouse))
    con.execute(LEDGER_SETUP)
    con.close()


def ledger_state(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int, int]:
    """``(batches, rows per ledger, rows counted, total per ledger, total summed)``."""
    batches, n_rows, total = con.execute("select * from marts.ledger").fetchone()
    counted, summed = con.execute(
        "select count(*), coalesce(sum(value), 0) from marts.items"
    ).fetchone()
    return batches, n_rows, counted, total, int(summed)


def check_ledger(db: Path) -> int:
    """Open a snapshot read-only, assert the invariant, return the number of batches it holds."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        batches, n_rows, counted, total, summed = ledger_state(con)
    finally:
        con.close()
    assert (n_rows, total) == (counted, summed), f"torn snapshot {db}: {n_rows=} {counted=}"
    return batches


def writer_loop(project: str, stop: str, progress: str) -> None:
    """Write the live warehouse in a loop, each write one transaction under ``DbtLock``.

    Each transaction inserts a batch and updates the ledger to match; every third one also
    deletes an older batch. Checkpoint-on-shutdown is off, so committed data stays in the WAL
    between writes: a snapshot that skipped ``CHECKPOINT`` would miss it. ``progress`` gets the
    committed batch count while the lock is still held.
    """
    from dango_dagster.lock import DbtLock

    warehouse = Path(project) / "data" / "warehouse.duckdb"
    lock = DbtLock(project, source="test-writer", operation="write loop")
    batch = 0
    while not Path(stop).exists():
        lock.acquire(timeout=60)
        try:
            con = duckdb.connect(str(warehouse))
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
            con.execute("SET wal_autocheckpoint = '10GB'")
            batch += 1
            con.execute("begin")
            con.execute(
                "insert into marts.items select ?, range, range * ? from range(500)", [batch, batch]
            )
            if batch % 3 == 0:
                con.execute("delete from marts.items where batch = ?", [batch - 2])
            con.execute(
                "update marts.ledger set batches = batches + 1, "
                "n_rows = (select count(*) from marts.items), "
                "total = (select coalesce(sum(value), 0) from marts.items)"
            )
            con.execute("commit")
            con.close()
            tmp = Path(progress + ".tmp")
            tmp.write_text(str(batch))
            os.replace(tmp, progress)
        finally:
            lock.release()
        time.sleep(0.002)


def reader_loop(published: str, stop: str, report: str) -> None:
    """Open the published snapshot again and again; record opens and any failure."""
    opens, errors, last = 0, [], -1
    while not Path(stop).exists():
        if not Path(published).exists():
            time.sleep(0.005)
            continue
        try:
            last = max(last, check_ledger(Path(published)))
            opens += 1
        except Exception as exc:  # noqa: BLE001 - every failure is what we report
            errors.append(f"{type(exc).__name__}: {exc}")
    Path(report).write_text(yaml.safe_dump({"opens": opens, "errors": errors, "last": last}))


def release_later(release: str, delay: float) -> None:
    """Create ``release`` after ``delay`` seconds (lets a lock holder go while we wait)."""
    time.sleep(delay)
    Path(release).touch()
