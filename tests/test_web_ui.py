"""The web UI as a user meets it: ``dagster dev`` on a synced demo project, headless Chromium.

One ``dagster dev`` (webserver, daemon, code server: real processes on a free port of 127.0.0.1)
serves every test of this module, on a demo project that ``dango-dagster sync`` loaded first.
Runs are launched with the GraphQL mutation the UI's "Materialize" button sends, tagged
``dagster/from_ui`` as the UI tags them. Screenshots go to each test's tmp folder.

The module costs about 2 minutes on two cores (the sync, ``dagster dev`` starting, five runs):
what it checks needs a live daemon and web server, so the five tests share one.
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
import pytest
from lockprocs.harness import LockProc

from dango_dagster.config import load_config
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


def test_console_is_quiet(dev: Dev) -> None:
    """After the runs above: no DEBUG event lines, no superseded-command notice, no chatter."""
    text = dev.log.read_text(errors="replace")
    assert "SupersessionWarning" not in text
    assert " - DEBUG - " not in text
    assert "Checking for new runs for sensor" not in text
    assert f"http://127.0.0.1:{dev.url.rsplit(':', 1)[1]}" in text  # where the UI is
