"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary folder, a free
port on 127.0.0.1, one database per name.

    with PgServer(databases=("dagster", "lock", "lake")) as pg:
        pg.dsn("lock")        # postgresql://postgres@127.0.0.1:PORT/lock
        pg.conninfo("lake")   # dbname=lake host=127.0.0.1 port=PORT user=postgres (libpq style)

initdb refuses root, so as root every server command runs as the ``postgres`` user (``runuser``)
in a folder chowned to it. A watchdog stops the server when the creating process dies without
cleaning up (a SIGKILLed test run). Settings favour speed over durability (fsync off): tests only.
initdb costs 2-6 s on 2 busy cores: share one server per test session.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "postgres"


def find_pg_bindir() -> Path | None:
    """The folder with initdb/pg_ctl/psql, or None when PostgreSQL is not installed."""
    env = os.environ.get("PG_BINDIR")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent  # /usr/local/bin/initdb -> .../15/bin
    found_all = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    newest = sorted(found_all, key=lambda p: int(p.split("/")[4]))
    return Path(newest[-1]).parent if newest else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user() -> list[str]:
    """The prefix that runs a command as the server user ([] when we are not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--"]
    return ["su", SERVER_USER, "-s", "/bin/sh", "-c", '"$0" "$@"']


class PgServer:
    def __init__(self, databases: tuple[str, ...] = ("dagster", "lock", "lake")) -> None:
        self.databases = databases
        bindir = find_pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bindir = bindir
        self.root: Path | None = None
        self.port = 0
        self.start_seconds = 0.0
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._started = False
        self._owner_pid = os.getpid()

    @property
    def datadir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{db}"

    def conninfo(self, db: str = "postgres") -> str:
        return f"dbname={db} host=127.0.0.1 port={self.port} user={SERVER_USER}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = _as_server_user() + [str(self.bindir / args[0]), *args[1:]]
        cwd = self.root if self.root and self.root.exists() else "/"
        env = {**os.environ, "LC_ALL": "C", "PGTZ": "UTC"}
        return subprocess.run(cmd, cwd=cwd, check=check, capture_output=True, text=True, env=env)

    def start(self) -> PgServer:
        t0 = time.perf_counter()
        self.root = Path(tempfile.mkdtemp(prefix="pgtest-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVER_USER)
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", SERVER_USER, "-A", "trust",
                      "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")  # fmt: skip
            sockdir = self.root / "sock"
            sockdir.mkdir()
            if os.geteuid() == 0:
                shutil.chown(sockdir, SERVER_USER)
            conf = {
                "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": f"'{sockdir}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
                "shared_buffers": "64MB",
                "log_min_messages": "warning",
            }
            text = "".join(f"{k} = {v}\n" for k, v in conf.items())
            conf_path = self.datadir / "postgresql.auto.conf"
            subprocess.run(_as_server_user() + ["sh", "-c", f"cat >> '{conf_path}'"],
                           input=text, text=True, check=True, cwd="/")  # fmt: skip
            for _ in range(5):  # the port may be taken between choosing and binding it
                self.port = _free_port()
                started = self._run("pg_ctl", "-D", str(self.datadir), "-l",
                                    str(self.root / "log"), "-o", f"-p {self.port}",
                                    "-w", "-t", "60", "start", check=False)  # fmt: skip
                if started.returncode == 0:
                    break
            else:
                raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}")
            self._started = True
            self._start_watchdog()
            for db in self.databases:
                self._run("psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", SERVER_USER, "-d", "postgres",
                          "-c", f'CREATE DATABASE "{db}"')  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        atexit.register(self.stop)
        return self

    def _start_watchdog(self) -> None:
        pg_ctl = " ".join(_as_server_user() + [str(self.bindir / "pg_ctl")])
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{pg_ctl} -D '{self.datadir}' -m immediate -w stop >/dev/null 2>&1; "
            f"rm -rf '{self.root}'"
        )
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd="/",
        )  # fmt: skip

    def stop(self) -> None:
        if self.root is None or os.getpid() != self._owner_pid:
            return  # a forked child's atexit must never stop its parent's server
        if self._started:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop",
                      check=False)  # fmt: skip
            self._started = False
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
