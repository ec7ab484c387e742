"""dlt sources for ``type: dlt`` tests, referenced as ``dlt_fixture_sources:<name>``.

Not a test module (no ``test_`` prefix): pytest puts ``tests/`` on ``sys.path``, so a project.yml
``ref`` can name this module exactly as a user names an installed dlt verified source.
"""

from __future__ import annotations

from collections.abc import Iterator

import dlt

NOT_CALLABLE = 42


@dlt.source(name="numbers_origin")
def numbers_source(count: int = 3) -> list:
    """Two tables: ``numbers`` (``count`` rows) and ``letters`` (3 rows)."""

    @dlt.resource(name="numbers", write_disposition="replace")
    def numbers() -> Iterator[dict]:
        yield [{"n": i, "square": i * i} for i in range(count)]

    @dlt.resource(name="letters", write_disposition="replace")
    def letters() -> Iterator[dict]:
        yield [{"letter": c} for c in "abc"]

    return [numbers, letters]


@dlt.resource(name="events", write_disposition="replace")
def bare_resource(count: int = 2) -> Iterator[dict]:
    yield [{"event_id": i} for i in range(count)]


def not_a_source() -> list[int]:
    return [1, 2, 3]
