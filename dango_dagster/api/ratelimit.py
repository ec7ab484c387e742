"""Rate limits per API key, and per client address for requests without a valid key.

Built on the maintained ``limits`` library (moving window, in-memory storage). The anonymous
limit is what throttles key guessing: a client that keeps presenting bad keys gets 429 instead
of 401 once it is used up.

Limits are per server process. ``limits`` offers shared storage only through Redis, Memcached,
MongoDB or etcd, none of which this embedded, single-file stack runs; with ``--workers N`` a
client can therefore get up to N times the configured rate (docs/API.md says so). One worker is
the default and serves the expected load (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from dango_dagster.api.errors import ApiError


class RateLimiter:
    def __init__(self, per_key: str, anonymous: str) -> None:
        self._strategy = MovingWindowRateLimiter(MemoryStorage())
        self._per_key = parse_many(per_key)
        self._anonymous = parse_many(anonymous)
        self.per_key_text = per_key
        self.anonymous_text = anonymous

    def check_key(self, key_id: str) -> None:
        self._check(self._per_key, "key", key_id, self.per_key_text, "this API key")

    def check_anonymous(self, address: str) -> None:
        self._check(
            self._anonymous, "anon", address, self.anonymous_text, "requests without a valid key"
        )

    def _check(
        self, items: list[RateLimitItem], namespace: str, ident: str, text: str, who: str
    ) -> None:
        """Count the request against every window, or refuse it without counting it at all."""
        for item in items:
            if not self._strategy.test(item, namespace, ident):
                stats = self._strategy.get_window_stats(item, namespace, ident)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Rate limit {text} reached for {who}; retry in {retry} s.",
                    headers={"Retry-After": str(retry)},
                )
        for item in items:
            self._strategy.hit(item, namespace, ident)
