"""One "host" of the multi-host test: a process with its own DAGSTER_HOME and project folder that
materializes an asset writing one batch into the shared warehouse through the lock gate.

``python dagster_host.py BATCHES HOLD_SECONDS`` runs BATCHES materializations, each a Dagster run
recorded in the shared Postgres instance (DAGSTER_HOME's dagster.yaml, from
deploy/postgres/run_host.sh). Inside each hold it creates the shared witness file with O_EXCL
(which fails if another host is inside), logs ``enter``/``exit`` with CLOCK_MONOTONIC stamps, and
inserts its batch into the shared DuckDB file. ``HOLD_SECONDS`` < 0: hold the first batch until
killed (the test SIGKILLs it). Environment: DANGO_PROJECT_DIR, DAGSTER_HOME, DANGO_LOCK_*,
MULTIHOST_DIR (the shared folder: witness, log, warehouse), HOST_NAME.
"""

import os
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb

from dango_dagster.constants import TAG_LOCK_TIMEOUT
from dango_dagster.defs.gate import WarehouseLockGate
from dango_dagster.lock.info import process_start_time

SHARED = Path(os.environ["MULTIHOST_DIR"])
HOST = os.environ["HOST_NAME"]


def _log(kind: str) -> None:
    fd = os.open(SHARED / "log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{time.monotonic_ns()} {kind} {os.getpid()} {HOST}\n".encode())
    finally:
        os.close(fd)


def _enter_witness() -> int:
    """Create the shared witness file, which must not exist: nobody else is inside.

    A holder that was SIGKILLed inside leaves its witness behind; one naming a dead process is
    removed (and logged), one naming a live process is an overlap and fails the run.
    """
    path = SHARED / "witness"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = int(path.read_text() or 0)  # empty: someone is between create and write
            if not owner or process_start_time(owner) is not None:  # alive (not a zombie)
                raise RuntimeError(f"overlap: process {owner} is inside too") from None
            _log("stale-witness")
            path.unlink()
            continue
        os.write(fd, str(os.getpid()).encode())
        return fd


@dg.asset(kinds={"duckdb"}, group_name="multihost", description="One host's batch of rows.")
def host_batch(
    context: dg.AssetExecutionContext, warehouse_gate: WarehouseLockGate
) -> dg.MaterializeResult:
    batch = int(context.run.tags["batch"])
    hold = float(context.run.tags["hold"])
    with warehouse_gate.hold(context, f"batch {batch} of {HOST}", "data_load") as session:
        _log("enter")
        witness = _enter_witness()
        con = duckdb.connect(str(SHARED / "warehouse.duckdb"))
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS batches (host TEXT, batch INT, pid INT, run_id TEXT)"
            )
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?)",
                [HOST, batch, os.getpid(), context.run_id],
            )
            if hold < 0:
                print("HOLDING", os.getpid(), flush=True)
                time.sleep(3600)  # until SIGKILLed, with the batch uncommitted
            time.sleep(hold)
            con.execute("COMMIT")
        finally:
            con.close()
        os.close(witness)
        os.unlink(SHARED / "witness")
        _log("exit")
    return dg.MaterializeResult(metadata=session.metadata())


def main(batches: int, hold: float) -> int:
    instance = dg.DagsterInstance.get()
    for batch in range(batches):
        result = dg.materialize(
            [host_batch],
            instance=instance,
            resources={"warehouse_gate": WarehouseLockGate(queue_timeout_seconds=120)},
            tags={"batch": str(batch), "hold": str(hold), TAG_LOCK_TIMEOUT: "120"},
        )
        print("RUN", result.run_id, result.success, flush=True)
        if not result.success:
            return 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2])))
