"""The audit trail: one JSON line per API request in ``.dango/logs/audit.jsonl``, whatever happened.

Appends must never interleave or go missing, with many requests in flight and several server
workers (processes) writing the same file. ``O_APPEND`` makes each ``write`` land at the end, but
POSIX promises no atomicity for regular files (``PIPE_BUF`` is about pipes) and a long line (a
100 kB SQL text) can be written in parts. So every append holds an exclusive ``flock`` on the
file for the duration of its writes; readers never need the lock because a line is complete
before the next writer may start.

The line never holds the key itself, only its id and name; the SQL is recorded with its SHA-256
so identical queries can be grouped without comparing long texts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from dango_dagster.lock.info import now_iso

if sys.platform != "win32":
    import fcntl

SQL_LOG_LIMIT = 20_000  # characters of SQL kept in a line; the hash always covers all of it


def sql_fields(sql: str | None) -> dict[str, Any]:
    if sql is None:
        return {"sql": None, "sql_sha256": None}
    fields: dict[str, Any] = {
        "sql": sql[:SQL_LOG_LIMIT],
        "sql_sha256": hashlib.sha256(sql.encode("utf-8", "surrogatepass")).hexdigest(),
    }
    if len(sql) > SQL_LOG_LIMIT:
        fields["sql_truncated"] = True
    return fields


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._mutex = threading.Lock()

    def _open(self) -> int:
        """The append descriptor, reopened if the file was rotated or removed meanwhile."""
        try:
            st = os.stat(self.path)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._ident:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        return fd

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line; raises OSError if the disk refuses."""
        record = {"time": now_iso(), **record}
        try:
            line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates in a hostile SQL text: escape everything
            line = (json.dumps(record, default=str) + "\n").encode("ascii")
        with self._mutex:
            fd = self._open()
            if sys.platform != "win32":
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                if sys.platform != "win32":
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
