"""Answers of deterministic queries, kept while the published snapshot stays the same.

A snapshot never changes once published, so a query whose result depends on the snapshot alone
(the SQL guard says so: no ``now()``, ``random()``, ``SAMPLE``, settings or memory lookups) has
exactly one right answer per snapshot. Dashboards and scripts ask the same few queries again
and again; answering them from memory costs microseconds instead of a DuckDB execution.

Entries are keyed by (snapshot identity, SQL text, row limit) and hold the encoded JSON of
columns, types and rows. A new snapshot empties the cache. Memory is bounded by
``api.result_cache_mb`` (least recently used entries go first; one entry may use at most an
eighth of it); 0 turns the cache off. Per process, like the connection pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

Key = tuple[object, str, int]


@dataclass(frozen=True)
class CachedAnswer:
    core: bytes  # '"columns":[...],"column_types":[...],"rows":[...]'
    row_count: int
    truncated: bool


class ResultCache:
    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._entries: OrderedDict[Key, CachedAnswer] = OrderedDict()
        self._size = 0
        self._generation: object = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def _switch(self, generation: object) -> None:
        if generation != self._generation:
            self._entries.clear()
            self._size = 0
            self._generation = generation

    def get(self, generation: object, sql: str, max_rows: int) -> CachedAnswer | None:
        if not self.enabled:
            return None
        with self._lock:
            self._switch(generation)
            key = (generation, sql, max_rows)
            answer = self._entries.get(key)
            if answer is not None:
                self._entries.move_to_end(key)
            return answer

    def put(self, generation: object, sql: str, max_rows: int, answer: CachedAnswer) -> None:
        cost = len(answer.core) + len(sql) + 200
        if not self.enabled or cost > self.max_bytes // 8:
            return
        with self._lock:
            self._switch(generation)
            key = (generation, sql, max_rows)
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old.core) + len(sql) + 200
            self._entries[key] = answer
            self._size += cost
            while self._size > self.max_bytes and self._entries:
                (_, old_sql, _), dropped = self._entries.popitem(last=False)
                self._size -= len(dropped.core) + len(old_sql) + 200
