"""The lock gate inside real Dagster runs, against a real outside process holding the lock."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from dango_dagster.constants import TAG_LOCK
from dango_dagster.defs.gate import WarehouseLockGate, lock_timeout_for_run
from dango_dagster.sync_status import read_status, status_path

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from dango_dagster.lock import DbtLock
    lock = DbtLock(sys.argv[1], source="ui", operation="sync shop").acquire(timeout=0)
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
    lock.release()
    print("released", flush=True)
    """
)


class Holder:
    """Another OS process holding the warehouse lock, the way Dango's web sync would."""

    def __init__(self, project: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, str(project)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=10)


@pytest.fixture
def holder(project_dir: Path) -> Iterator[Holder]:
    h = Holder(project_dir)
    yield h
    h.release()


@dg.asset(kinds={"duckdb"})
def gated_write(
    context: dg.AssetExecutionContext, warehouse_gate: WarehouseLockGate
) -> dg.MaterializeResult:
    """A minimal writing asset: a table written only while the gate is held."""
    config = warehouse_gate.project_config()
    with (
        warehouse_gate.hold(context, operation="write numbers", phase="data_load") as session,
        duckdb.connect(str(config.warehouse_path)) as con,
    ):
        con.execute("create or replace table numbers as select range as n from range(10)")
    return dg.MaterializeResult(metadata=session.metadata())


def _materialize(
    project: Path,
    instance: dg.DagsterInstance,
    run_id: str,
    tags: dict[str, str] | None = None,
    gate: dict[str, float] | None = None,
) -> dg.ExecuteInProcessResult:
    resource = WarehouseLockGate(
        project_dir=str(project), report_interval_seconds=0.3, **(gate or {})
    )
    defs = dg.Definitions(assets=[gated_write], resources={"warehouse_gate": resource})
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, run_id=run_id, tags=tags, raise_on_error=False
    )


def _wait_for(predicate, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_timeout_policy_follows_who_launched_the_run() -> None:
    assert lock_timeout_for_run({"dagster/sensor_name": "s"}, 300) == 300
    assert lock_timeout_for_run({"dagster/schedule_name": "s"}, 300) == 300
    assert lock_timeout_for_run({"dagster/backfill": "b"}, 300) == 300
    assert lock_timeout_for_run({"dagster/from_automation_condition": "true"}, 300) == 300
    assert lock_timeout_for_run({"dagster/from_ui": "true"}, 300) == 300
    assert lock_timeout_for_run({}, 300) == 0
    assert lock_timeout_for_run({"dango/lock_timeout": "7.5"}, 300) == 7.5
    with pytest.raises(dg.Failure, match="dango/lock_timeout"):
        lock_timeout_for_run({"dango/lock_timeout": "soon"}, 300)


def test_sensor_run_waits_visibly_then_completes(project_dir: Path, holder: Holder) -> None:
    run_id = str(uuid.uuid4())
    with dg.instance_for_test() as instance:
        box: dict[str, object] = {}
        runner = threading.Thread(
            target=lambda: box.update(
                result=_materialize(
                    project_dir, instance, run_id, tags={"dagster/sensor_name": "uploads_sensor"}
                )
            )
        )
        runner.start()
        status_file = status_path(project_dir / ".dango" / "state", run_id[:12])
        _wait_for(lambda: (read_status(status_file) or {}).get("phase") == "lock_waiting")
        status = read_status(status_file)
        assert status["holder"]["pid"] == holder.pid
        assert status["holder"]["operation"] == "sync shop"
        _wait_for(lambda: instance.get_run_by_id(run_id).tags.get(TAG_LOCK) == "waiting")
        time.sleep(0.5)
        assert runner.is_alive(), "the sensor run must queue, not fail"
        holder.release()
        runner.join(timeout=30)
        result = box["result"]
        assert result.success
        assert instance.get_run_by_id(run_id).tags[TAG_LOCK] == "released"
        logs = " ".join(e.message for e in instance.all_logs(run_id) if e.message)
        assert f"PID {holder.pid}" in logs and "waits up to 300 s" in logs
        mat = result.asset_materializations_for_node("gated_write")[0]
        assert mat.metadata["lock_wait_seconds"].value >= 0.5
        assert mat.metadata["lock_held_seconds"].value >= 0
    with duckdb.connect(str(project_dir / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from numbers").fetchone()[0] == 10


def test_sensor_run_with_short_queue_fails_naming_holder(project_dir: Path, holder: Holder) -> None:
    run_id = str(uuid.uuid4())
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = _materialize(
            project_dir,
            instance,
            run_id,
            tags={"dagster/sensor_name": "uploads_sensor"},
            gate={"queue_timeout_seconds": 1.0},
        )
        waited = time.monotonic() - started
        assert not result.success
        assert waited >= 1.0
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.step_failure_data.user_failure_data.description
        assert f"PID {holder.pid}" in text and "sync shop" in text and "'ui'" in text
        assert instance.get_run_by_id(run_id).tags[TAG_LOCK] == "timeout"
    status = read_status(status_path(project_dir / ".dango" / "state", run_id[:12]))
    assert status["phase"] == "failed" and status["holder"]["pid"] == holder.pid


def test_run_without_trigger_tags_fails_at_once(project_dir: Path, holder: Holder) -> None:
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = _materialize(project_dir, instance, str(uuid.uuid4()))
        assert not result.success
        assert time.monotonic() - started < 30  # no 300 s queue; a few seconds of Dagster at most
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.step_failure_data.user_failure_data.description
        assert "did not wait" in text and f"PID {holder.pid}" in text
        assert "dango/lock_timeout" in text  # tells the user how to let it queue
    assert not (project_dir / "data" / "warehouse.duckdb").exists()  # nothing was written


@dg.asset
def write_then_fail(context: dg.AssetExecutionContext, warehouse_gate: WarehouseLockGate) -> None:
    """Writes under the gate, then fails after releasing (a bug in user code, say)."""
    with warehouse_gate.hold(context, operation="write", phase="data_load"):
        pass
    raise RuntimeError("transform exploded")


def _write_then_fail_job() -> dg.JobDefinition:
    """The job a run worker would load (``execute_job`` needs it reconstructable)."""
    from dango_dagster.config import load_config
    from dango_dagster.defs.runs import recording_executor

    project = os.environ[_PROJECT_ENV]
    defs = dg.Definitions(
        assets=[write_then_fail],
        jobs=[dg.define_asset_job("write_then_fail_job")],
        resources={"warehouse_gate": WarehouseLockGate(project_dir=project)},
        executor=recording_executor(load_config(project)),
    )
    return defs.resolve_job_def("write_then_fail_job")


_PROJECT_ENV = "DANGO_TEST_GATE_PROJECT"


def test_run_writes_its_own_final_state(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run launched like the daemon launches it (its job's own executor) records its process
    and writes its final state itself: the cause, the run's own PID, no sensor tick needed."""
    monkeypatch.setenv(_PROJECT_ENV, str(project_dir))
    with dg.instance_for_test() as instance:
        with dg.execute_job(dg.reconstructable(_write_then_fail_job), instance=instance) as result:
            assert not result.success
            run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags["dango/pid"] == str(os.getpid())
        assert run.tags["dango/lock"] == "released" and run.tags["dango/lock_holder"] == "none"
    status = read_status(status_path(project_dir / ".dango" / "state", result.run_id[:12]))
    assert status["phase"] == "failed" and status["pid"] == os.getpid()
    assert status["message"] == "RuntimeError: transform exploded"  # not Dagster's wrapper
    assert status["step"] == "write_then_fail" and status["waited_seconds"] < 1


@dg.op
def _noop() -> None:
    pass


@dg.job
def _noop_job() -> None:
    _noop()


def test_dead_runs_sensor_fails_a_run_whose_process_is_gone(project_dir: Path) -> None:
    """A run left STARTED by a process that died (here: a real process that exited) is marked
    failed with the reason by the sensor's tick, and its status file ``interrupted``."""
    import psutil

    from dango_dagster.config import load_config
    from dango_dagster.defs.dead_runs import build_dead_runs_sensor
    from dango_dagster.sync_status import SyncStatus

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    assert not psutil.pid_exists(pid)
    config = load_config(project_dir)
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(
            _noop_job,
            tags={"dango/pid": str(pid), "dango/process_start_time": "1.0", "dango/host": ""},
        )
        instance.handle_run_event(
            run.run_id,
            dg.DagsterEvent(
                event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
            ),
        )
        status = SyncStatus(config.state_dir, run.run_id)
        status.update("dbt", "dbt build: writing the warehouse")
        data = read_status(status.path)
        data["pid"] = pid  # the dead process wrote it
        status.path.write_text(json.dumps(data))
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        sensor = build_dead_runs_sensor(config)
        sensor(dg.build_sensor_context(instance=instance))
        after = instance.get_run_by_id(run.run_id)
        assert after.status == dg.DagsterRunStatus.FAILURE
        messages = " ".join(e.message or "" for e in instance.all_logs(run.run_id))
        assert f"process {pid} gone during dbt build" in messages
    final = read_status(status.path)
    assert final["phase"] == "interrupted" and final["pid"] == pid
