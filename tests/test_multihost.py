"""Three "hosts" on one Dagster instance and one warehouse lock, both on a real PostgreSQL.

Each host is a process with its own DAGSTER_HOME (made by deploy/postgres/run_host.sh, the
process-level recipe) and its own project folder; they share only the Postgres server (Dagster's
storage and the advisory lock) and a folder holding the warehouse, as hosts with a shared disk
would. Host A takes the lock and is SIGKILLed inside its write; B and C queue, take over, and
write three batches each. A user's checks: no two writes overlapped, every committed batch is
there, the handoff after the kill took under a second, and `lock status` from another project
folder named the holder's PID and host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psycopg2
import pytest
from pgserver import PgServer

from dango_dagster.config import REPO_ROOT

HOST_SCRIPT = Path(__file__).parent / "lockprocs" / "dagster_host.py"
RUN_HOST = REPO_ROOT / "deploy" / "postgres" / "run_host.sh"
CLI = str(Path(sys.executable).with_name("dango-dagster"))


def _waiters(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cur.fetchone()[0]


def _line(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.split()
    raise AssertionError(f"host exited (rc {proc.wait()}) before printing {prefix!r}")


@pytest.mark.slow
def test_three_dagster_hosts_share_instance_and_lock(pg_server: PgServer, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    base_env = {
        **os.environ,
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_server.port),
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused",  # the test server trusts local connections
        "DAGSTER_PG_DB": "dagster",
        "DANGO_LOCK_BACKEND": "postgres",
        "DANGO_LOCK_DSN": pg_server.dsn("lock"),
        "DANGO_LOCK_KEY": "multihost-shop",
        "MULTIHOST_DIR": str(shared),
        "DANGO_VENV_BIN": str(Path(sys.executable).parent),
    }
    envs: dict[str, dict[str, str]] = {}
    for name in ("a", "b", "c"):
        root = tmp_path / f"host-{name}"
        (root / ".dango" / "state").mkdir(parents=True)
        env = base_env | {
            "DAGSTER_HOME": str(root / "dagster_home"),
            "DANGO_PROJECT_DIR": str(root),
            "HOST_NAME": name,
        }
        subprocess.run(["bash", str(RUN_HOST), "init"], env=env, check=True, timeout=30)
        assert "postgresql+psycopg2" in (root / "dagster_home" / "dagster.yaml").read_text()
        envs[name] = env

    def start(name: str, batches: int, hold: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(HOST_SCRIPT), str(batches), str(hold)],
            env=envs[name],
            cwd=envs[name]["DANGO_PROJECT_DIR"],
            stdout=subprocess.PIPE,
            text=True,
        )

    host_a = start("a", 1, -1)  # holds until killed
    others: list[subprocess.Popen[str]] = []
    try:
        holder_pid = int(_line(host_a, "HOLDING")[1])
        assert holder_pid == host_a.pid

        status = subprocess.run(
            [CLI, "lock", "status", "--project", envs["c"]["DANGO_PROJECT_DIR"], "--json"],
            env=envs["c"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        report = json.loads(status.stdout)
        assert status.returncode == 1 and report["backend"] == "postgres", status.stderr
        assert report["holder"]["pid"] == holder_pid
        assert report["holder"]["hostname"] == socket.gethostname()
        assert report["holder"]["operation"].startswith("batch 0 of a")

        others = [start("b", 3, 0.05), start("c", 3, 0.05)]
        deadline = time.monotonic() + 180
        while _waiters(pg_server.dsn("lock")) < 2:  # both queue on the server for A's lock
            assert time.monotonic() < deadline, "hosts b and c never queued for the lock"
            assert all(p.poll() is None for p in others), "a host exited while A held the lock"
            time.sleep(0.2)
        host_a.send_signal(signal.SIGKILL)
        killed_ns = time.monotonic_ns()
        outputs = [p.communicate(timeout=240)[0] for p in others]
        assert [p.returncode for p in others] == [0, 0], outputs
    finally:
        for proc in [host_a, *others]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)

    # No overlap: after A's enter (never exited: killed), enters and exits strictly alternate.
    events = [line.split() for line in (shared / "log").read_text().splitlines()]
    events = [e for e in events if e[1] in ("enter", "exit")]
    assert events[0][1:] == ["enter", str(holder_pid), "a"]
    rest = sorted(events[1:], key=lambda e: int(e[0]))
    assert len(rest) == 12
    for enter, leave in zip(rest[::2], rest[1::2], strict=True):
        assert (enter[1], leave[1], enter[2]) == ("enter", "exit", leave[2])
    handoff = (int(rest[0][0]) - killed_ns) / 1e9
    assert handoff < 1.0, f"the next host took the lock {handoff:.3f} s after the kill"

    # Every committed batch is there; the killed host's uncommitted one is not.
    with duckdb.connect(str(shared / "warehouse.duckdb"), read_only=True) as con:
        rows = sorted(con.execute("SELECT host, batch FROM batches").fetchall())
    assert rows == [(h, b) for h in ("b", "c") for b in range(3)]

    # One Dagster instance: every host's runs are in the shared Postgres storage.
    with psycopg2.connect(pg_server.dsn("dagster")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
        statuses = dict(cur.fetchall())
    assert statuses.get("SUCCESS") == 6 and sum(statuses.values()) == 7, statuses


def test_compose_file_runs_every_part_on_postgres() -> None:
    """No Docker engine runs here: check the compose file a user runs, not containers."""
    import yaml

    folder = REPO_ROOT / "deploy" / "postgres"
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "code", "webserver", "daemon"} <= set(services)
    assert services["code"]["command"][:3] == ["dagster", "code-server", "start"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("code", "webserver", "daemon"):
        env = services[name]["environment"]
        assert env["DANGO_LOCK_BACKEND"] == "postgres" and env["DAGSTER_PG_HOST"] == "postgres"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    instance = yaml.safe_load((folder / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert "pools" not in instance and instance["run_monitoring"]["enabled"] is True
