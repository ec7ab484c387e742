"""Run one guarded query on a pooled cursor with a row cap and a deadline that DuckDB obeys.

The deadline is enforced by a single watchdog thread that calls ``cursor.interrupt()``: DuckDB
stops the query itself (its worker threads stop burning CPU), the cursor stays usable, and the
client gets 408. Abandoning the thread instead would leave a runaway cross join eating the cores
and the connection. The row cap is ``fetchmany(max_rows + 1)`` on a streaming result (DuckDB
never produces more), and the extra row is how the answer knows it was truncated. Deterministic
queries are answered from ``ResultCache`` while the snapshot stays the same.

Everything here is blocking; the app runs it in a bounded thread pool so the event loop keeps
answering while queries run.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from dango_dagster.api.errors import ApiError
from dango_dagster.api.jsonvalues import rows_to_json
from dango_dagster.api.pool import Lease, SnapshotPool
from dango_dagster.api.result_cache import CachedAnswer, ResultCache
from dango_dagster.api.sql_guard import check_sql


class _Ticket:
    """One armed deadline; ``cancel`` and the firing exclude each other."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._done = False
        self.fired = False

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self.fired = True
            self._callback()

    def cancel(self) -> None:
        with self._lock:
            self._done = True


class Watchdog:
    """One daemon thread that fires deadlines in order (no thread per query)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Ticket]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="dango-api-watchdog", daemon=True).start()

    def arm(self, deadline: float, callback: Callable[[], None]) -> _Ticket:
        ticket = _Ticket(callback)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), ticket))
            self._cond.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                _, _, ticket = heapq.heappop(self._heap)
            ticket.fire()


@dataclass(frozen=True)
class QueryOutcome:
    body: bytes
    row_count: int
    truncated: bool
    snapshot_at: str
    elapsed_ms: float
    cached: bool


def _error_for(exc: duckdb.Error, settings_memory: str) -> ApiError:
    """DuckDB's own refusals are the client's problem (4xx), never a 500."""
    text = str(exc).strip()[:2000]
    if isinstance(exc, duckdb.PermissionException):
        return ApiError(403, "forbidden_sql", text)
    if isinstance(exc, duckdb.InvalidInputException) and (
        "read-only" in text or "configuration has been locked" in text
    ):
        return ApiError(403, "forbidden_sql", text)
    if isinstance(exc, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return ApiError(400, "invalid_sql", text)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ApiError(
            400,
            "query_failed",
            f"The query needs more memory than api.memory_limit ({settings_memory}) allows: "
            "aggregate or filter more, or select fewer columns. " + text.splitlines()[0],
        )
    return ApiError(400, "query_failed", text)


class QueryRunner:
    """Guard, lease, execute under a deadline, encode; raises ``ApiError`` for every refusal."""

    def __init__(self, pool: SnapshotPool, memory_limit: str, cache: ResultCache) -> None:
        self.pool = pool
        self.memory_limit = memory_limit
        self.cache = cache
        self.watchdog = Watchdog()

    def run(
        self, sql: str, *, max_rows: int, timeout: float, started: float, request_id: str
    ) -> QueryOutcome:
        deterministic = check_sql(sql)
        deadline = started + timeout
        waited = time.monotonic() - started
        if waited >= timeout:
            raise ApiError(
                408,
                "timeout",
                f"The query's {timeout:g} s ran out before it could start ({waited:.1f} s "
                f"waiting for one of the {self.pool.settings.pool_size} connections, all busy); "
                "retry shortly.",
            )
        lease = self.pool.lease()
        generation = lease.generation.ident
        answer = self.cache.get(generation, sql, max_rows) if deterministic else None
        if answer is not None:
            self.pool.release(lease)
            return self._outcome(answer, lease, max_rows, started, request_id, cached=True)
        answer = self._answer(lease, sql, max_rows, deadline, timeout)
        if deterministic:
            self.cache.put(generation, sql, max_rows, answer)
        return self._outcome(answer, lease, max_rows, started, request_id, cached=False)

    def _answer(
        self, lease: Lease, sql: str, max_rows: int, deadline: float, timeout: float
    ) -> CachedAnswer:
        """Run on the leased cursor (which it gives back) and encode columns and rows."""
        ticket = self.watchdog.arm(deadline, lease.cursor.interrupt)
        discard = False
        try:
            columns, types, rows = self._execute(lease, sql, max_rows)
            truncated = len(rows) > max_rows
            # The cursor still holds the rest of a truncated streaming result: free it.
            discard = truncated
        except duckdb.InterruptException as exc:
            if not ticket.fired:
                discard = True
                raise ApiError(400, "query_failed", str(exc)) from exc
            raise ApiError(
                408,
                "timeout",
                f"The query ran longer than {timeout:g} s and was cancelled. Filter or aggregate "
                "more, add a LIMIT, or ask the operator to raise api.query_timeout_seconds.",
            ) from exc
        except (duckdb.FatalException, duckdb.InternalException) as exc:
            # DuckDB invalidates an instance after these; later queries get a fresh one.
            discard = True
            self.pool.retire(lease.generation)
            raise ApiError(400, "query_failed", str(exc).strip()[:2000]) from exc
        except duckdb.Error as exc:
            raise _error_for(exc, self.memory_limit) from exc
        finally:
            ticket.cancel()
            self.pool.release(lease, discard=discard)
        rows = rows[:max_rows]
        core = _encode({"columns": columns, "column_types": types, "rows": rows_to_json(rows)})
        return CachedAnswer(core=core, row_count=len(rows), truncated=truncated)

    @staticmethod
    def _outcome(
        answer: CachedAnswer,
        lease: Lease,
        max_rows: int,
        started: float,
        request_id: str,
        *,
        cached: bool,
    ) -> QueryOutcome:
        elapsed_ms = round((time.monotonic() - started) * 1000, 3)
        tail = _encode(
            {
                "row_count": answer.row_count,
                "truncated": answer.truncated,
                "max_rows": max_rows,
                "elapsed_ms": elapsed_ms,
                "snapshot_at": lease.snapshot_at,
                "cached": cached,
                "request_id": request_id,
            }
        )
        body = b"{" + answer.core + b"," + tail + b"}"
        return QueryOutcome(
            body, answer.row_count, answer.truncated, lease.snapshot_at, elapsed_ms, cached
        )

    @staticmethod
    def _execute(
        lease: Lease, sql: str, max_rows: int
    ) -> tuple[list[str], list[str], list[tuple[object, ...]]]:
        """``execute`` streams: DuckDB produces rows only as ``fetchmany`` asks for them, so a
        huge result costs ``max_rows + 1`` rows, not the whole result."""
        cursor = lease.cursor
        cursor.execute(sql)
        description = cursor.description or []
        rows = cursor.fetchmany(max_rows + 1)
        return [d[0] for d in description], [str(d[1]) for d in description], rows


def _encode(fields: dict[str, object]) -> bytes:
    """The members of a JSON object without its braces, so parts can be joined into one."""
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode()[1:-1]
