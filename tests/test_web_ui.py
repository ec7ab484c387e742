"""The web UI as a user meets it: ``dagster dev`` on a synced demo project, headless Chromium.

One ``dagster dev`` (webserver, daemon, code server: real processes on a free port of 127.0.0.1)
serves every test of this module, on a demo project that ``dango-dagster sync`` loaded first.
Runs are launched with the GraphQL mutation the UI's "Materialize" button sends, tagged
``dagster/from_ui`` as the UI tags them. Screenshots go to each test's tmp folder.

The module costs 4-6 minutes on two cores (the sync, ``dagster dev`` starting, about a dozen
short runs): what it checks needs a live daemon and web server, so all its tests share one. The
run queue's tests (a run Queued behind an outside holder and behind another run) and the run
launcher's (a pre-started worker takes the second run, changed definitions and a reload fall back
to the stock launch, Terminate of a warm run) run in it too, rather than in a second
``dagster dev``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
from lockprocs.harness import LockProc

from dango_dagster.config import load_config
from dango_dagster.constants import TAG_LAUNCH
from dango_dagster.defs.automation import AUTOMATION_SENSOR, UPLOADS_SENSOR
from dango_dagster.demo import init_demo_project

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LOCATION = "dango_dagster"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class Dev:
    """A running ``dagster dev``: its URL, its instance, and GraphQL."""

    def __init__(self, url: str, home: Path, project: Path, log: Path) -> None:
        self.url, self.home, self.project, self.log = url, home, project, log
        self.instance = dg.DagsterInstance.from_config(str(home))
        self.synced_runs: set[str] = set()

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def sensors(self) -> dict[str, dict[str, Any]]:
        data = self.graphql(
            """query($sel: RepositorySelector!) { sensorsOrError(repositorySelector: $sel) {
                 ... on Sensors { results { name sensorState { status
                   ticks(limit: 5) { status timestamp } } } } } }""",
            {"sel": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}},
        )
        return {s["name"]: s["sensorState"] for s in data["sensorsOrError"]["results"]}

    def launch_from_ui(self, keys: list[list[str]]) -> str:
        data = self.graphql(
            """mutation($p: ExecutionParams!) { launchPipelineExecution(executionParams: $p) {
                 __typename ... on LaunchRunSuccess { run { runId } }
                 ... on PythonError { message } } }""",
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": "__repository__",
                        "pipelineName": "__ASSET_JOB",
                        "assetSelection": [{"path": k} for k in keys],
                    },
                    "mode": "default",
                    "executionMetadata": {"tags": [{"key": "dagster/from_ui", "value": "true"}]},
                }
            },
        )
        result = data["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = probe()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; log: {self.log}")

    def dequeued_at(self, run_id: str) -> float | None:
        """When the daemon took the run off the queue (its RUN_STARTING event), or None."""
        events = self.instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_STARTING)
        return events[0].timestamp if events else None

    def run(self, run_id: str) -> dg.DagsterRun:
        run = self.instance.get_run_by_id(run_id)
        assert run is not None
        return run

    def finished(self, run_id: str, timeout: float = 180) -> dg.DagsterRun:
        return self.wait_for(
            f"run {run_id[:8]} to finish",
            lambda: self.run(run_id).is_finished and self.run(run_id),
            timeout=timeout,
        )

    def wait_idle(self, timeout: float = 240) -> None:
        """No run queued or running (automation may follow a run with one of its own)."""
        busy = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING,
        ]
        self.wait_for(
            "the instance to be idle",
            lambda: not self.instance.get_runs(dg.RunsFilter(statuses=busy), limit=1),
            timeout=timeout,
        )

    def messages(self, run_id: str) -> list[str]:
        return [entry.message or "" for entry in self.instance.all_logs(run_id)]

    def warm_workers(self) -> list[psutil.Process]:
        """The pre-started run workers of this ``dagster dev`` that wait for a run."""
        found = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            cmdline = proc.info["cmdline"] or []
            env = proc.info["environ"] or {}
            if "dango_dagster.defs.warm_worker" in cmdline and env.get("DAGSTER_HOME") == str(
                self.home
            ):
                found.append(proc)
        return found

    def one_warm_worker(self) -> list[psutil.Process] | None:
        """The one pre-started worker once it is idle (imports done: no CPU over 0.5 s) and a
        worker that ran a run has exited."""
        found = self.warm_workers()
        if len(found) != 1:
            return None
        try:
            before = sum(found[0].cpu_times()[:2])
            time.sleep(0.5)
            return found if sum(found[0].cpu_times()[:2]) - before < 0.01 else None
        except psutil.NoSuchProcess:  # it took a run and has already exited
            return None

    def runs_of_worker(self, pid: int) -> list[dg.DagsterRun]:
        """The runs a worker process executed (a run records its own process in ``dango/pid``)."""
        return [r for r in self.instance.get_runs() if r.tags.get("dango/pid") == str(pid)]

    def idle_worker(self) -> psutil.Process:
        """A pre-started worker seen idle: blocked on its pipe, no CPU time over 3 s.

        Automation may hand the worker a run while it is watched (earlier tests leave marts to
        rebuild): then it is busy for a good reason, and the next worker is watched instead. A
        worker that used CPU or exited with no run handed to it fails the test.
        """
        for _ in range(4):
            found = self.wait_for("an idle pre-started worker", self.one_warm_worker, timeout=120)
            worker = found[0]
            try:
                before = sum(worker.cpu_times()[:2])
                time.sleep(3)
                used = sum(worker.cpu_times()[:2]) - before
            except psutil.NoSuchProcess:  # it ran a short run in those 3 s and exited
                seen = f"worker {worker.pid}, which exited"
            else:
                if used < 0.05:
                    return worker
                seen = f"worker {worker.pid}, which used {used:.2f} s of CPU"
            # The run's process tags itself once it starts: give it a moment to appear.
            # No run within 15 s: the worker spent CPU or exited while idle; the test fails here.
            self.wait_for(
                f"a run executed by {seen}",
                lambda pid=worker.pid: self.runs_of_worker(pid),
                timeout=15,
            )
            self.wait_idle()
        raise AssertionError("automation kept handing every pre-started worker a run")

    def reload_location(self) -> None:
        data = self.graphql(
            """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
                 __typename } }""",
            {"name": LOCATION},
        )
        assert data["reloadRepositoryLocation"]["__typename"] == "WorkspaceLocationEntry", data

    def terminate(self, run_id: str) -> None:
        data = self.graphql(
            """mutation($id: String!) { terminateRun(runId: $id) { __typename
                 ... on TerminateRunFailure { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )
        assert data["terminateRun"]["__typename"] == "TerminateRunSuccess", data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    base = tmp_path_factory.mktemp("web_ui")
    project = init_demo_project(base / "shop", rows=200)
    sync = subprocess.run(
        [str(BIN / "dango-dagster"), "sync", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    # The instance the sync recorded its run in, as the README's command uses it. Its sensors
    # have never ticked: no cursor yet.
    home = load_config(project).dagster_home
    assert (home / "dagster.yaml").exists()
    synced = {run.run_id for run in dg.DagsterInstance.from_config(str(home)).get_runs()}
    assert len(synced) == 1
    port = _free_port()
    log = base / "dagster_dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # the README's command: `dango-dagster dev`
            [str(BIN / "dango-dagster"), "dev", "--project", str(project), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: one killpg ends all of it
        )
    server = Dev(f"http://127.0.0.1:{port}", home, project, log)
    server.synced_runs = synced
    try:

        def loaded() -> bool:
            assert proc.poll() is None, f"dagster dev exited; log: {log}"
            try:
                return UPLOADS_SENSOR in server.sensors()
            except (OSError, AssertionError, KeyError, TypeError):
                return False

        server.wait_for("the code location to load", loaded, timeout=240)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "chromium and chromedriver are needed for the web UI test and are missing. "
            "Run scripts/setup.sh as root, or apt-get install chromium chromium-driver."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}",
    ):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_shows(driver: Any, texts: list[str], timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    raise AssertionError(f"page never showed {texts}; it shows:\n{body[:3000]}")


def test_sensors_run_by_themselves_and_start_from_the_synced_files(dev: Dev) -> None:
    def ticked() -> dict[str, Any] | None:
        sensors = dev.sensors()
        enough = len(sensors[UPLOADS_SENSOR]["ticks"]) >= 2 and sensors[AUTOMATION_SENSOR]["ticks"]
        return sensors if enough else None

    sensors = dev.wait_for("the daemon to tick both sensors", ticked, timeout=120)
    assert sensors[AUTOMATION_SENSOR]["status"] == "RUNNING"
    assert sensors[UPLOADS_SENSOR]["status"] == "RUNNING"
    # The sync loaded every file: the uploads sensor, ticking without a cursor, launched nothing.
    assert {run.run_id for run in dev.instance.get_runs()} == dev.synced_runs


def test_asset_graph_renders(dev: Dev, browser: Any, tmp_path: Path) -> None:
    groups = ["sources", "raw_orders", "raw_customers", "staging", "marts", "snapshots"]
    browser.get(f"{dev.url}/asset-groups")
    try:
        body = _page_shows(browser, groups)
        # Each group is named twice: in the side list and as a node of the drawn graph.
        lines = body.splitlines()
        assert all(lines.count(group) >= 2 for group in groups), body
    finally:
        browser.save_screenshot(str(tmp_path / "asset_graph.png"))
    browser.get(f"{dev.url}/assets/marts/fct_daily_sales")
    try:
        # Materialized by the sync, with its row count and every column typed by the warehouse.
        _page_shows(browser, ["Latest materialization", "Row count", "sales_date", "DECIMAL(18,2)"])
    finally:
        browser.save_screenshot(str(tmp_path / "fct_daily_sales.png"))


def test_ui_run_waits_for_outside_holder_then_automation_builds_dbt_and_snapshot(
    dev: Dev, browser: Any, tmp_path: Path
) -> None:
    """Materialize only the raw tables from the UI while another process holds the lock: the run
    stays Queued (no process) naming the holder, and starts once the holder lets go."""
    from selenium.webdriver.common.by import By

    nodes = dev.graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    raw = [n["assetKey"]["path"] for n in nodes if n["groupName"].startswith("raw_")]
    assert raw
    holder = LockProc("hold", dev.project, "ui-test", "held by an outside process")
    try:
        pid = int(holder.expect("HELD")[0])
        run_id = dev.launch_from_ui(raw)
        dev.wait_for(
            "the run to be held in the queue",
            lambda: dev.run(run_id).tags.get("dango/lock") == "queued",
            timeout=60,
        )
        browser.get(f"{dev.url}/runs/{run_id}")
        try:
            _page_shows(browser, ["Queued", "Run queued"], timeout=90)
            # The run's tags (its page's "View tags and config") name whom it waits for.
            browser.find_element(By.XPATH, "//button[contains(., 'View tags and config')]").click()
            _page_shows(browser, ["dango/lock_holder", f"PID {pid}"], timeout=30)
        finally:
            browser.save_screenshot(str(tmp_path / "queued_run.png"))
        run = dev.run(run_id)
        assert run.status == dg.DagsterRunStatus.QUEUED, run.status
        assert "dango/pid" not in run.tags  # no worker process was started for it
        assert run.tags["dango/warehouse"] == str(dev.project)
        assert run.tags["dango/lock_holder"].startswith(f"PID {pid} on ")
        released = time.time()
    finally:
        holder.let_go()
    dequeued = dev.wait_for("the run to leave the queue", lambda: dev.dequeued_at(run_id), 60)
    print(f"holder released -> run dequeued: {dequeued - released:.2f} s")
    assert dequeued - released < 10
    done = dev.wait_for(
        "the UI run to finish",
        lambda: dev.run(run_id).is_finished and dev.run(run_id),
        timeout=180,
    )
    assert done.status == dg.DagsterRunStatus.SUCCESS

    # Declarative automation follows: dbt models, then the snapshot, in a run of its own.
    def automation_run() -> dg.DagsterRun | None:
        runs = dev.instance.get_runs(
            dg.RunsFilter(tags={"dagster/from_automation_condition": "true"})
        )
        finished = [r for r in runs if r.is_finished]
        return finished[0] if finished else None

    auto = dev.wait_for("an automation run", automation_run, timeout=240)
    assert auto.status == dg.DagsterRunStatus.SUCCESS
    materialized = {
        e.dagster_event.asset_key.to_user_string()
        for e in dev.instance.all_logs(
            auto.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        if e.dagster_event and e.dagster_event.asset_key
    }
    assert "snapshots/warehouse" in materialized
    assert any(k.startswith("marts/") for k in materialized)
    snapshot = load_config(dev.project).published_snapshot_path
    assert snapshot.exists()


def test_second_run_queues_behind_the_first_and_a_killed_run_frees_its_place(dev: Dev) -> None:
    """Two UI runs of the project: the second stays Queued (no process) while the first is in
    progress; ``kill -9`` of the first lets the second start within seconds, not at the next
    30 s tick of the dead-run sensor."""
    nodes = dev.graphql("{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    raw = [n["assetKey"]["path"] for n in nodes if n["groupName"].startswith("raw_")]
    first = dev.launch_from_ui(raw)
    second = dev.launch_from_ui(raw)
    pid = int(dev.wait_for("the first run's process", lambda: dev.run(first).tags.get("dango/pid")))
    dev.wait_for(
        "the second run to name the first's process",
        lambda: f"PID {pid}" in dev.run(second).tags.get("dango/lock_holder", ""),
        timeout=30,
    )
    queued = dev.run(second)
    assert queued.status == dg.DagsterRunStatus.QUEUED and "dango/pid" not in queued.tags
    assert queued.tags["dango/lock"] == "queued"
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    dequeued = dev.wait_for("the second run to leave the queue", lambda: dev.dequeued_at(second))
    print(f"first run killed -> second dequeued: {dequeued - killed:.2f} s")
    assert dequeued - killed < 8
    dead = dev.run(first)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    done = dev.wait_for("the second run to finish", lambda: dev.run(second).is_finished, 180)
    assert done and dev.run(second).status == dg.DagsterRunStatus.SUCCESS


SNAPSHOT = [["snapshots", "warehouse"]]
PAUSE_MODEL = """\
import pathlib
import time


def model(dbt, session):
    # Waits while {pause} exists (at most 90 s), after touching {mark}: the test then knows
    # the run is inside its dbt build, holding the warehouse lock.
    dbt.config(materialized="table")
    pathlib.Path({mark!r}).touch()
    deadline = time.time() + 90
    while pathlib.Path({pause!r}).exists() and time.time() < deadline:
        time.sleep(0.2)
    return session.sql("select 1 as paused")
"""


def test_second_run_starts_in_a_pre_started_worker(dev: Dev) -> None:
    """Two runs one after the other: the second goes to the worker started after the first."""
    dev.wait_idle()
    first = dev.finished(dev.launch_from_ui(SNAPSHOT))
    assert first.status == dg.DagsterRunStatus.SUCCESS
    dev.wait_idle()
    # The first run the daemon launched in this session had no worker waiting yet.
    launched = [r for r in dev.instance.get_runs() if r.run_id not in dev.synced_runs]
    oldest = launched[-1]
    assert oldest.tags[TAG_LAUNCH] == "stock"
    assert any("no pre-started worker yet" in m for m in dev.messages(oldest.run_id))

    worker = dev.idle_worker()

    second_id = dev.launch_from_ui(SNAPSHOT)
    second = dev.finished(second_id)
    assert second.status == dg.DagsterRunStatus.SUCCESS
    assert second.tags[TAG_LAUNCH] == "warm"
    pid = second.tags["dango/pid"]
    assert any(
        m.startswith(f"Run handed to a pre-started worker (pid {pid})")
        for m in dev.messages(second_id)
    )
    # The idle worker seen above took a run: this one, or one that automation launched in the
    # meantime (the runs of earlier tests leave marts to rebuild), in which case the worker
    # pre-started after it took this one.
    took = dev.runs_of_worker(worker.pid)
    assert len(took) == 1 and took[0].tags[TAG_LAUNCH] == "warm", [r.tags for r in took]
    # It ran one run and exited; the next worker is already there.
    dev.wait_for("the worker to exit", lambda: not worker.is_running(), timeout=60)
    dev.wait_for("the next pre-started worker", dev.one_warm_worker, timeout=120)


# The worker's three checks; which one sees a reload first depends on when the daemon notices it.
STALE = (
    "code location was reloaded since its pre-started worker",
    "the run's job differs from the worker's definitions",
    "changed since the worker loaded the definitions",
)


def test_changed_definitions_fall_back_to_the_stock_launch(dev: Dev) -> None:
    """A file the definitions come from changes (then also the code location is reloaded):
    the run may not execute with the worker's old definitions."""
    dev.wait_idle()
    dev.wait_for("an idle pre-started worker", dev.one_warm_worker, timeout=120)
    config = load_config(dev.project)
    pause, mark = dev.project / "pause", dev.project / "paused"
    model = config.dbt_project_dir / "models" / "marts" / "zz_pause.py"
    model.write_text(PAUSE_MODEL.format(pause=str(pause), mark=str(mark)))

    changed = dev.finished(dev.launch_from_ui(SNAPSHOT))
    assert changed.status == dg.DagsterRunStatus.SUCCESS
    assert changed.tags[TAG_LAUNCH] == "stock"
    assert any(
        "(dbt) changed since the worker loaded the definitions" in m
        for m in dev.messages(changed.run_id)
    ), dev.messages(changed.run_id)

    # The next worker loaded the new file. Change it again, and reload the code location.
    dev.wait_idle()
    dev.wait_for("an idle pre-started worker", dev.one_warm_worker, timeout=120)
    model.write_text(model.read_text() + "\n# changed again before the reload\n")
    reloaded_at = time.time()
    dev.reload_location()
    dev.wait_for(
        "the reloaded code location to show the new model",
        lambda: any(
            n["assetKey"]["path"] == ["marts", "zz_pause"]
            for n in dev.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
        ),
        timeout=120,
    )
    mine = dev.finished(dev.launch_from_ui(SNAPSHOT))
    assert mine.status == dg.DagsterRunStatus.SUCCESS
    dev.wait_idle()
    # Automation may launch a run of the new model too: whichever the daemon launched first
    # after the reload met the worker loaded before it.
    after = [
        r
        for r in dev.instance.get_run_records()
        if r.create_timestamp.timestamp() > reloaded_at and r.start_time
    ]
    first = min(after, key=lambda r: r.start_time or 0).dagster_run
    assert first.tags[TAG_LAUNCH] == "stock"
    messages = dev.messages(first.run_id)
    assert any(reason in m for m in messages for reason in STALE), messages


def test_terminate_cancels_a_warm_run_and_frees_the_lock(dev: Dev) -> None:
    """The UI's Terminate on a run inside its dbt build, in a pre-started worker."""
    dev.wait_idle()
    dev.wait_for("a pre-started worker", dev.one_warm_worker, timeout=120)
    pause, mark = dev.project / "pause", dev.project / "paused"
    mark.unlink(missing_ok=True)
    pause.touch()
    try:
        run_id = dev.launch_from_ui([["marts", "zz_pause"]])
        dev.wait_for("the run to be inside its dbt build", mark.exists, timeout=120)
        assert dev.run(run_id).tags[TAG_LAUNCH] == "warm"
        probe = LockProc("dango", dev.project)
        probe.expect("BUSY")  # the run holds the warehouse lock
        probe.cleanup()
        dev.terminate(run_id)
        done = dev.finished(run_id, timeout=60)
    finally:
        pause.unlink(missing_ok=True)
    assert done.status == dg.DagsterRunStatus.CANCELED
    worker = int(done.tags["dango/pid"])
    dev.wait_for("the worker to exit", lambda: not psutil.pid_exists(worker), timeout=30)
    holder = LockProc("dango", dev.project)
    try:
        holder.expect("HELD")  # free: nobody holds it any more
    finally:
        holder.let_go()
        holder.cleanup()
    status = json.loads(
        (load_config(dev.project).state_dir / f"sync_status_{run_id[:12]}.json").read_text()
    )
    assert status["phase"] == "interrupted", status


def test_console_is_quiet(dev: Dev) -> None:
    """After the runs above: no DEBUG event lines, no superseded-command notice, no chatter."""
    text = dev.log.read_text(errors="replace")
    assert "SupersessionWarning" not in text
    assert " - DEBUG - " not in text
    assert "Checking for new runs for sensor" not in text
    assert f"http://127.0.0.1:{dev.url.rsplit(':', 1)[1]}" in text  # where the UI is
