"""The warehouse lock on PostgreSQL: a session advisory lock, for writers on several hosts.

``flock`` excludes processes of one host only. When Dagster runs its run workers on several hosts
(docs/SCALING.md), they agree on one advisory lock in one Postgres database instead. This module
is the primitive (one holder's session); ``DbtLock`` adds re-entrancy, waits that report progress
and the errors naming the holder, exactly as for the file backend.

Why each choice (measured; docs/SCALING.md has the figures):

* One dedicated session per holder, autocommit. A *session* lock lives exactly as long as the
  session: released by ``pg_advisory_unlock`` or by the session ending (exit, SIGKILL: the server
  sees the socket close and frees the lock at once). PgBouncer in transaction mode breaks this.
* A dead *host* closes nothing, so keepalives: server-side ``tcp_keepalives_*`` and
  ``tcp_user_timeout`` (~25 s) let the server drop it; client-side libpq keepalives let a holder
  notice it lost its session (``check()``).
* Key: a signed 64-bit BLAKE2b of the warehouse name, the same on every host and every Python
  (``hashtext`` is internal and 32-bit).
* Waiting: ``SET lock_timeout`` to the next report, then ``pg_advisory_lock``: the server wakes us
  the moment the holder lets go, the socket blocks at no CPU, and a slice that ends (55P03) lets
  us report progress and queue again.
* Holder info: a row in ``dango_lock_holders`` carrying the holder's ``backend_pid``; readers trust
  ``pg_locks`` and use the row only when its backend holds the lock, so a dead holder's row is
  never believed. ``application_name`` (63 bytes: ``dango-lock:<pid>@<host>``) names a holder
  that has no row yet.
* fork: a child closing its copy of the connection would send Terminate on the *shared* socket and
  end the parent's session (freeing its lock). After fork the child points those fds at
  /dev/null and keeps the connection objects for ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from dango_dagster.errors import DbtLockError
from dango_dagster.lock.info import LockHolder

__all__ = ["PgLockSession", "lock_key_int", "read_pg_holder", "redact_dsn"]

TABLE = "dango_lock_holders"
_DDL_LOCK_KEY = -0x64616E676F  # a constant transaction lock that serialises our CREATE TABLE
_CLIENT_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
_SESSION_SQL = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
    "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000; "
    "SET idle_session_timeout = 0; SET idle_in_transaction_session_timeout = 0; "
    "SET statement_timeout = 0"
)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for messages and ``lock status``."""
    dsn = re.sub(r"password=\S+", "password=***", dsn)
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def lock_key_int(key: str) -> int:
    """The advisory lock key of a warehouse name: signed 64-bit, stable on every host."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _classid_objid(k: int) -> tuple[int, int]:
    """How ``pg_locks`` shows a bigint advisory key (objsubid 1): high and low 32 bits."""
    unsigned = k & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def _connect(dsn: str, application_name: str, **extra: Any) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(
            dsn, application_name=application_name[:63], connect_timeout=10, **extra
        )
    except psycopg2.Error as exc:
        raise DbtLockError(
            f"Could not reach the lock server {redact_dsn(dsn)}: {str(exc).strip()}.",
            hint="Check lock.dsn / DANGO_LOCK_DSN (or DANGO_LOCK_BACKEND=file on a single host).",
        ) from exc
    conn.autocommit = True
    return conn


# Open holder/waiter sessions of this process, and (in a forked child) the parent's, never closed.
_LIVE: set[psycopg2.extensions.connection] = set()
_LEAKED: list[psycopg2.extensions.connection] = []
_TABLE_READY: set[str] = set()
_TABLE_MUTEX = threading.Lock()


def _after_fork_in_child() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for conn in list(_LIVE):
            with contextlib.suppress(Exception):
                os.dup2(devnull, conn.fileno())
            _LEAKED.append(conn)
    finally:
        os.close(devnull)
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ensure_table(conn: psycopg2.extensions.connection) -> None:
    """Create the holder table once per server; concurrent ``IF NOT EXISTS`` races otherwise."""
    with _TABLE_MUTEX:
        if conn.dsn in _TABLE_READY:
            return
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_KEY,))
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (lock_key bigint PRIMARY KEY, "
                    "key_name text NOT NULL, backend_pid int NOT NULL, pid int, hostname text, "
                    "source text, operation text, started_at text, "
                    "process_start_time double precision, info jsonb)"
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        _TABLE_READY.add(conn.dsn)


_READ_SQL = """
SELECT l.pid, a.application_name, host(a.client_addr), {row}
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid {join}
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(c)s::oid AND l.objid = %(o)s::oid AND l.objsubid = 1
"""
_ROW = "h.backend_pid, h.pid, h.hostname, h.source, h.operation, h.started_at, h.process_start_time"
_JOIN = f"LEFT JOIN {TABLE} h ON h.lock_key = %(k)s AND h.backend_pid = l.pid"


def _read_holder(conn: psycopg2.extensions.connection, key: str) -> LockHolder | None:
    k = lock_key_int(key)
    c, o = _classid_objid(k)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
        row_cols = _ROW if cur.fetchone()[0] else ", ".join(["NULL"] * 7)
        join = _JOIN if row_cols == _ROW else ""
        cur.execute(_READ_SQL.format(row=row_cols, join=join), {"k": k, "c": c, "o": o})
        row = cur.fetchone()
    if row is None:
        return None
    backend_pid, app, client_addr, row_backend, pid, host, source, op, started, pst = row
    extra = {
        "backend": "postgres",
        "key": key,
        "backend_pid": backend_pid,
        "application_name": app,
        "client_addr": client_addr,
    }
    if row_backend is not None:
        return LockHolder(
            pid=pid,
            source=source or "unknown",
            operation=op or "unknown",
            started_at=started,
            hostname=host,
            process_start_time=pst,
            extra=extra,
        )
    # Taken but not described yet (a split second), or a foreign tool: the application name may
    # still say who.
    pid_guess, host_guess = None, None
    if app and app.startswith("dango-lock:") and "@" in app:
        pid_txt, host_guess = app[len("dango-lock:") :].split("@", 1)
        pid_guess = int(pid_txt) if pid_txt.isdigit() else None
    return LockHolder(pid=pid_guess, hostname=host_guess or client_addr, known=False, extra=extra)


def read_pg_holder(dsn: str, key: str) -> LockHolder | None:
    """The live holder of warehouse ``key`` on lock server ``dsn``, from any host; None if free.

    Never takes or disturbs the lock.
    """
    conn = _connect(dsn, "dango-lock-status")
    try:
        return _read_holder(conn, key)
    finally:
        conn.close()


class PgLockSession:
    """One holder's (or waiter's) session on the lock. Not re-entrant: ``DbtLock`` is."""

    def __init__(self, dsn: str, key: str) -> None:
        self.dsn, self.key = dsn, key
        self.k = lock_key_int(key)
        self._owner_pid = os.getpid()
        self.conn = _connect(
            dsn, f"dango-lock:{os.getpid()}@{socket.gethostname()}", **_CLIENT_KEEPALIVE
        )
        _LIVE.add(self.conn)
        try:
            with self.conn.cursor() as cur:
                cur.execute(_SESSION_SQL)
            _ensure_table(self.conn)
        except BaseException:
            self.close()
            raise

    def _scalar(self, sql: str, *params: Any) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        return None if row is None else row[0]

    def try_lock(self) -> bool:
        return bool(self._scalar("SELECT pg_try_advisory_lock(%s)", self.k))

    def wait(self, seconds: float) -> bool:
        """Queue on the server for up to ``seconds``; True once the lock is ours."""
        ms = max(1, int(seconds * 1000))
        try:
            self._scalar(f"SET lock_timeout = {ms}; SELECT pg_advisory_lock(%s)", self.k)
        except psycopg2.errors.LockNotAvailable:
            return False
        except psycopg2.Error as exc:
            raise DbtLockError(
                f"Lost the lock server {redact_dsn(self.dsn)} while waiting: {exc}".strip()
            ) from exc
        return True

    def read_holder(self) -> LockHolder | None:
        """Who holds it, read on this session (no new connection per progress report)."""
        try:
            return _read_holder(self.conn, self.key)
        except psycopg2.Error:
            return None

    def publish(self, holder: LockHolder) -> None:
        """Describe ourselves in the holder table (one round trip, lock_timeout reset too)."""
        info = json.dumps({"key": self.key, **holder.extra})
        with self.conn.cursor() as cur:
            cur.execute(
                f"SET lock_timeout = 0; INSERT INTO {TABLE} (lock_key, key_name, backend_pid, "
                "pid, hostname, source, operation, started_at, process_start_time, info) "
                "VALUES (%s, %s, pg_backend_pid(), %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (lock_key) DO UPDATE SET key_name = EXCLUDED.key_name, "
                "backend_pid = EXCLUDED.backend_pid, pid = EXCLUDED.pid, "
                "hostname = EXCLUDED.hostname, source = EXCLUDED.source, "
                "operation = EXCLUDED.operation, started_at = EXCLUDED.started_at, "
                "process_start_time = EXCLUDED.process_start_time, info = EXCLUDED.info",
                (
                    self.k,
                    self.key,
                    holder.pid,
                    holder.hostname,
                    holder.source,
                    holder.operation,
                    holder.started_at,
                    holder.process_start_time,
                    info,
                ),
            )

    def check(self) -> bool:
        """True while this session still holds the lock (call before a write on a flaky network)."""
        c, o = _classid_objid(self.k)
        try:
            return bool(
                self._scalar(
                    "SELECT count(*) > 0 FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND locktype = 'advisory' AND granted AND classid = %s::oid "
                    "AND objid = %s::oid AND objsubid = 1",
                    c,
                    o,
                )
            )
        except psycopg2.Error:
            return False

    def release(self) -> None:
        """Unlock, forget our row, close. A forked child only forgets (the hold is the parent's)."""
        if os.getpid() != self._owner_pid:
            return
        try:
            with self.conn.cursor() as cur:
                # Unlock first: the next holder wakes one round trip sooner. The delete matches
                # our own backend only, so it can never remove the next holder's row.
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.k,))
                cur.execute(
                    f"DELETE FROM {TABLE} WHERE lock_key = %s AND backend_pid = pg_backend_pid()",
                    (self.k,),
                )
        except psycopg2.Error:
            pass  # the session is gone, and with it the lock
        finally:
            self.close()

    def close(self) -> None:
        """End the session (which frees the lock if it came meanwhile)."""
        if os.getpid() != self._owner_pid:
            return
        _LIVE.discard(self.conn)
        with contextlib.suppress(Exception):
            self.conn.close()
