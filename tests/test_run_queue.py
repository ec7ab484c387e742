"""The run queue's coordinator on a real instance (the shipped ``dagster.yaml``), with real OS
processes holding the lock. Fast: no daemon; ``get_run_queue_config`` is what the queue daemon
calls on every pass. tests/test_web_ui.py checks the same under a real ``dagster dev``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from lockprocs.harness import LockProc
from pgserver import PgServer

from dango_dagster.config import shipped_file
from dango_dagster.constants import TAG_LOCK, TAG_LOCK_HOLDER, TAG_PID, TAG_WAREHOUSE
from dango_dagster.defs.run_queue import PER_WAREHOUSE_LIMIT, WarehouseRunCoordinator
from dango_dagster.defs.runs import identity_tags


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(shipped_file("dagster_home", "dagster.yaml"), home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _job(project: Path) -> dg.JobDefinition:
    @dg.asset(op_tags={TAG_WAREHOUSE: str(project)})
    def ours() -> None: ...

    @dg.asset
    def theirs() -> None: ...

    defs = dg.Definitions(assets=[ours, theirs], jobs=[dg.define_asset_job("j")])
    return defs.resolve_job_def("j")


def _origin() -> Any:
    """Where a queued run's code lives (Dagster requires one for a queued run; never contacted
    here since no daemon runs): a code location registered by name."""
    from dagster._core.remote_origin import (
        RegisteredCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )

    repo = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("test"), "__repository__")
    return RemoteJobOrigin(repo, "j")


def _submit(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    *keys: str,
    tags: dict[str, str] | None = None,
) -> dg.DagsterRun:
    """Submit a run of ``keys`` as the UI's Materialize button does (``tags`` replace its tag)."""
    subset = job.get_subset(asset_selection={dg.AssetKey(k) for k in keys})
    run = instance.create_run_for_job(
        subset,
        tags={"dagster/from_ui": "true"} if tags is None else tags,
        remote_job_origin=_origin(),
    )
    context = dg.SubmitRunContext(run, workspace=None)  # type: ignore[arg-type]
    return instance.run_coordinator.submit_run(context)


def _tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return dict(run.tags)


def _limits(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    config = instance.get_concurrency_config().run_queue_config
    assert config is not None
    return list(config.tag_concurrency_limits)


def test_shipped_settings_use_the_warehouse_queue(instance: dg.DagsterInstance) -> None:
    assert isinstance(instance.run_coordinator, WarehouseRunCoordinator)
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert _limits(instance) == [PER_WAREHOUSE_LIMIT]  # nothing queued: no probe at all


def test_runs_of_our_assets_name_their_warehouse(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    job = _job(project_dir)
    assert _submit(instance, job, "ours").tags[TAG_WAREHOUSE] == str(project_dir)
    assert _submit(instance, job, "ours", "theirs").tags[TAG_WAREHOUSE] == str(project_dir)
    assert TAG_WAREHOUSE not in _submit(instance, job, "theirs").tags  # a user's own asset only


def test_queued_run_waits_for_an_outside_holder_and_names_it(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    run = _submit(instance, _job(project_dir), "ours")
    holder = LockProc("hold", project_dir, "cli", "sync shop")
    try:
        pid = int(holder.expect("HELD")[0])
        blocked = {"key": TAG_WAREHOUSE, "value": str(project_dir), "limit": 0}
        assert blocked in _limits(instance)
        tags = _tags(instance, run.run_id)
        assert tags[TAG_LOCK] == "queued"
        assert tags[TAG_LOCK_HOLDER].startswith(f"PID {pid} on ")
        assert "cli / sync shop" in tags[TAG_LOCK_HOLDER]
    finally:
        holder.let_go()
    assert _limits(instance) == [PER_WAREHOUSE_LIMIT]
    tags = _tags(instance, run.run_id)
    assert (tags[TAG_LOCK], tags[TAG_LOCK_HOLDER]) == ("free", "none")


def test_second_run_of_a_project_is_queued_behind_the_first(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    job = _job(project_dir)
    first = _submit(instance, job, "ours")
    second = _submit(instance, job, "ours")
    _limits(instance)
    assert _tags(instance, first.run_id).get(TAG_LOCK) is None  # next: not held
    behind = _tags(instance, second.run_id)[TAG_LOCK_HOLDER]
    assert behind.startswith(f"run {first.run_id[:8]} of this project (next in the queue")


def test_a_killed_run_frees_its_place_at_the_next_pass(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    """A run in progress whose process was SIGKILLed is failed by the queue's next pass."""
    job = _job(project_dir)
    dead = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    victim = subprocess.Popen(["sleep", "60"])
    tags = identity_tags()
    tags[TAG_PID] = str(victim.pid)
    tags["dango/process_start_time"] = ""  # a PID alone is enough to see it gone
    tags[TAG_LOCK], tags[TAG_LOCK_HOLDER] = "held", f"this run (PID {victim.pid})"
    instance.add_run_tags(dead.run_id, {TAG_WAREHOUSE: str(project_dir), **tags})
    queued = _submit(instance, job, "ours")
    _limits(instance)
    assert "in progress, PID" in _tags(instance, queued.run_id)[TAG_LOCK_HOLDER]
    victim.kill()
    victim.wait()
    _limits(instance)
    failed = instance.get_run_by_id(dead.run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    assert (failed.tags[TAG_LOCK], failed.tags[TAG_LOCK_HOLDER]) == ("released", "none")
    assert _tags(instance, queued.run_id)[TAG_LOCK] == "free"


def test_instance_limits_that_replace_ours_are_named(tmp_path: Path, project_dir: Path) -> None:
    home = tmp_path / "home2"
    home.mkdir()
    text = shipped_file("dagster_home", "dagster.yaml").read_text()
    text = text.replace(
        "    max_concurrent_runs: 4\n",
        "    max_concurrent_runs: 4\n    tag_concurrency_limits: [{key: team, limit: 1}]\n",
    )
    (home / "dagster.yaml").write_text(text)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = _submit(instance, _job(project_dir), "ours")
        holder = LockProc("hold", project_dir)
        try:
            holder.expect("HELD")
            assert _limits(instance) == [{"key": "team", "limit": 1}]  # Dagster's rule
            assert TAG_LOCK not in _tags(instance, run.run_id)  # no false "queued"
        finally:
            holder.let_go()


def test_fail_fast_runs_are_not_held_in_the_queue(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    """A run nobody asked to wait (no sensor, schedule or UI tag) fails at once in its step, as
    without the queue; so it is not tagged and the queue never holds it back."""
    assert TAG_WAREHOUSE not in _submit(instance, _job(project_dir), "ours", tags={}).tags


def test_a_run_queued_past_its_lock_timeout_fails_naming_the_holder(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    job = _job(project_dir)
    run = _submit(
        instance, job, "ours", tags={"dagster/from_ui": "true", "dango/lock_timeout": "1"}
    )
    holder = LockProc("hold", project_dir, "cli", "sync shop")
    try:
        pid = int(holder.expect("HELD")[0])
        _limits(instance)
        assert _tags(instance, run.run_id)[TAG_LOCK] == "queued"
        time.sleep(1.2)
        _limits(instance)
    finally:
        holder.let_go()
    failed = instance.get_run_by_id(run.run_id)
    assert failed is not None and failed.status == dg.DagsterRunStatus.FAILURE
    assert failed.tags[TAG_LOCK] == "timeout"
    failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"held by PID {pid} on " in (failure[0].message or "")


def test_dev_names_an_instance_without_the_run_queue(tmp_path: Path) -> None:
    """An instance made by an older version (``run_queue:``, no coordinator, no launcher)."""
    from dango_dagster.cli.dev_cmd import instance_settings_note

    shutil.copyfile(shipped_file("dagster_home", "dagster.yaml"), tmp_path / "dagster.yaml")
    assert instance_settings_note(tmp_path) is None
    (tmp_path / "dagster.yaml").write_text("run_queue:\n  dequeue_interval_seconds: 1\n")
    note = instance_settings_note(tmp_path)
    assert note is not None
    assert "no run_coordinator WarehouseRunCoordinator" in note
    assert "no run_launcher WarmRunLauncher" in note
    assert note.splitlines()[-1].strip().endswith("in place of its run_queue section.")


def test_waiting_behind_a_run_of_the_project_has_no_time_limit(
    instance: dg.DagsterInstance, project_dir: Path
) -> None:
    """A backfill's runs take turns: behind runs of its own project, a run never times out."""
    job = _job(project_dir)
    ahead = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    instance.add_run_tags(ahead.run_id, {TAG_WAREHOUSE: str(project_dir), **identity_tags()})
    run = _submit(
        instance, job, "ours", tags={"dagster/from_ui": "true", "dango/lock_timeout": "1"}
    )
    _limits(instance)
    time.sleep(1.2)
    _limits(instance)
    behind = instance.get_run_by_id(run.run_id)
    assert behind is not None and behind.status == dg.DagsterRunStatus.QUEUED
    assert behind.tags[TAG_LOCK_HOLDER].startswith(f"run {ahead.run_id[:8]} of this project")


def test_postgres_backend_holder_on_another_host_keeps_runs_queued(
    instance: dg.DagsterInstance,
    project_dir: Path,
    tmp_path: Path,
    pg_server: PgServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several hosts: the advisory lock, held from another host's folder (this one's flock is
    free), keeps the run queued, and the queue names that holder (from pg_locks)."""
    monkeypatch.setenv("DANGO_LOCK_BACKEND", "postgres")
    monkeypatch.setenv("DANGO_LOCK_DSN", pg_server.dsn("lock"))
    monkeypatch.setenv("DANGO_LOCK_KEY", "queue-test")
    other_host = tmp_path / "other_host"
    (other_host / ".dango" / "state").mkdir(parents=True)
    run = _submit(instance, _job(project_dir), "ours")
    holder = LockProc("hold", other_host, "schedule", "dbt build nightly")
    try:
        pid = int(holder.expect("HELD")[0])
        assert {"key": TAG_WAREHOUSE, "value": str(project_dir), "limit": 0} in _limits(instance)
        assert _tags(instance, run.run_id)[TAG_LOCK_HOLDER].startswith(f"PID {pid} on ")
    finally:
        holder.let_go()
    assert _limits(instance) == [PER_WAREHOUSE_LIMIT]
