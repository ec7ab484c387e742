"""DangoDuckDBResource and the pandas IO manager in real Dagster runs, against a real outside
process holding the warehouse lock (the same holder as the gate's tests)."""

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from test_gate import Holder

from dango_dagster import DangoDuckDBPandasIOManager, DangoDuckDBResource, SnapshotError
from dango_dagster.constants import TAG_LOCK
from dango_dagster.sync_status import read_status, status_path

DAY = dg.StaticPartitionsDefinition(["a", "b"])


@pytest.fixture
def holder(project_dir: Path) -> Iterator[Holder]:
    h = Holder(project_dir)
    yield h
    h.release()


@dg.asset(partitions_def=DAY)
def events(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> None:
    """A user's own partitioned asset, annotated with the stock resource type."""
    with duckdb.get_connection() as con:
        con.execute("create table if not exists events (part varchar, n int)")
        con.execute("insert into events values (?, 1)", [context.partition_key])


def _run(project: Path, instance: dg.DagsterInstance, run_id: str, tags: dict[str, str]):
    defs = dg.Definitions(
        assets=[events], resources={"duckdb": DangoDuckDBResource(project_dir=str(project))}
    )
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, run_id=run_id, tags=tags, partition_key="a", raise_on_error=False
    )


def test_backfill_run_queues_behind_the_holder_then_writes(
    project_dir: Path, holder: Holder
) -> None:
    run_id = str(uuid.uuid4())
    with dg.instance_for_test() as instance:
        box: dict[str, dg.ExecuteInProcessResult] = {}
        runner = threading.Thread(
            target=lambda: box.update(
                r=_run(project_dir, instance, run_id, {"dagster/backfill": "x"})
            )
        )
        runner.start()
        status_file = status_path(project_dir / ".dango" / "state", run_id[:12])
        deadline = time.monotonic() + 60
        while (read_status(status_file) or {}).get("phase") != "lock_waiting":
            assert time.monotonic() < deadline, "the backfill run never showed it was waiting"
            time.sleep(0.05)
        assert read_status(status_file)["holder"]["pid"] == holder.pid
        time.sleep(0.3)
        assert runner.is_alive(), "a backfill run must queue for the lock, not fail"
        holder.release()
        runner.join(timeout=60)
        assert box["r"].success
        assert instance.get_run_by_id(run_id).tags[TAG_LOCK] == "released"
        logs = " ".join(e.message for e in instance.all_logs(run_id) if e.message)
        assert f"PID {holder.pid}" in logs and "duckdb write: events" in logs
    with duckdb.connect(str(project_dir / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select part, n from events").fetchall() == [("a", 1)]


def test_plain_run_fails_at_once_naming_the_holder(project_dir: Path, holder: Holder) -> None:
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = _run(project_dir, instance, str(uuid.uuid4()), {})
        assert not result.success and time.monotonic() - started < 30
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.step_failure_data.user_failure_data.description
        assert f"PID {holder.pid}" in text and "dango/lock_timeout" in text
    assert not (project_dir / "data" / "warehouse.duckdb").exists()


@dg.asset(key_prefix=["own"])
def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3]})


@dg.asset(key_prefix=["own"])
def doubled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x=frame["x"] * 2)


def test_pandas_io_manager_stores_and_loads_through_the_lock(project_dir: Path) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [frame, doubled],
            instance=instance,
            resources={"io_manager": DangoDuckDBPandasIOManager(project_dir=str(project_dir))},
        )
        assert result.success
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags[TAG_LOCK] == "released"  # every connection went through the gate's code
    with duckdb.connect(str(project_dir / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select sum(x) from own.doubled").fetchone()[0] == 12


def test_snapshot_connection_reads_while_a_writer_holds_the_lock(
    project_dir: Path, holder: Holder
) -> None:
    resource = DangoDuckDBResource(project_dir=str(project_dir))
    with (
        pytest.raises(SnapshotError, match="No published snapshot"),
        resource.get_snapshot_connection(),
    ):
        pass
    published = project_dir / ".dango" / "published" / "warehouse.duckdb"
    published.parent.mkdir(parents=True)
    with duckdb.connect(str(published)) as con:
        con.execute("create table t as select 42 as answer")
    with resource.get_snapshot_connection() as con:  # no lock taken: the holder keeps it
        assert con.execute("select answer from t").fetchone()[0] == 42
