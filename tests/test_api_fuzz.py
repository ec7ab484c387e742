"""Fuzz the real server from its own OpenAPI schema: no 500s, and every answer matches the schema.

schemathesis generates valid and invalid requests for every operation (random SQL texts, odd
limits, malformed bodies, missing auth) and checks status codes, content types, headers and
bodies against what the schema declares.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_support import ApiServer, served_project
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    root = tmp_path_factory.mktemp("api-fuzz") / "project"
    with served_project(root, "fuzz", query_timeout_seconds=3, max_sql_bytes=2000) as env:
        yield env


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_server_errors_and_schema_holds(
    fuzz_server: tuple[ApiServer, str], mode: schemathesis.GenerationMode
) -> None:
    """Valid requests (positive) and schema-violating ones (negative), for every operation.

    The strategy is built at test time from the schema the running server serves (the
    schemathesis pytest plugin's lazy fixture loader does not work with this pytest version).
    """
    server, key = fuzz_server
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"POST /api/query", "GET /api/health"}
    if mode == schemathesis.GenerationMode.NEGATIVE:
        # Health takes no input, so there is nothing to send it that violates its schema.
        operations = [op for op in operations if op.label == "POST /api/query"]
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=80,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, checks=CHECKS
            )

        run()


_TOKENS = [
    "select",
    "from",
    "where",
    "with",
    "as",
    "union",
    "all",
    "(",
    ")",
    ",",
    ";",
    "*",
    "1",
    "'x'",
    "null",
    "marts.fct_daily_sales",
    "raw_shop.orders",
    "day",
    "revenue",
    "count(*)",
    "sum(",
    "over",
    "partition by",
    "order by",
    "limit",
    "group by",
    "having",
    "insert",
    "into",
    "values",
    "delete",
    "update",
    "set",
    "copy",
    "to",
    "attach",
    "pragma",
    "read_csv(",
    "'/etc/passwd'",
    "range(",
    "unnest(",
    "[1,2]",
    "{'a':1}",
    "::",
    "blob",
    "uuid",
    "interval",
    "--",
    "/*",
    "*/",
    "returning",
    "duckdb_tables()",
    "information_schema.tables",
    "describe",
    "summarize",
    "pivot",
    "on",
    "using",
    "exists",
    "cast(",
    "as",
    "varchar",
    "double",
    "/",
    "0",
    "'nan'",
    "hugeint",
    "99999999999999999999",
    "map(",
    "struct_pack(",
    "list(",
    "explain",
]


@pytest.mark.slow
@given(tokens=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=14))
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_sql_token_soup_never_500(fuzz_server: tuple[ApiServer, str], tokens: list[str]) -> None:
    """Near-SQL built from real keywords reaches the parser, binder and executor paths that
    random text never does; every outcome must be a declared status with the error shape."""
    server, key = fuzz_server
    response = server.query(" ".join(tokens), key)
    assert response.status_code in (200, 400, 403, 408), response.text
    body = response.json()
    if response.status_code == 200:
        assert body["row_count"] == len(body["rows"])
    else:
        assert set(body) == {"error", "detail", "request_id"} and body["detail"]
