"""Rate limits: per key, per address without a valid key; 429 with Retry-After, all audited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import ApiServer, audit_for, create_key, publish_snapshot, run_cli, write_project


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = write_project(
        tmp_path_factory.mktemp("api-limits") / "project",
        rate_limit="5/minute",
        anonymous_rate_limit="3/minute",
    )
    publish_snapshot(root)
    api = ApiServer(root)
    try:
        yield api
    finally:
        api.stop()


def test_burst_over_the_key_limit_gets_429_with_retry_after(server: ApiServer) -> None:
    key, other = create_key(server.project, "bursty"), create_key(server.project, "calm")
    # Refused SQL counts too: spamming hostile queries is throttled like any other request.
    statuses = [server.query("select 1", key).status_code for _ in range(4)]
    statuses.append(server.query("drop table marts.fct_daily_sales", key).status_code)
    assert statuses == [200, 200, 200, 200, 403]
    limited = server.query("select 1", key)
    assert limited.status_code == 429, limited.text
    retry = int(limited.headers["Retry-After"])
    assert 1 <= retry <= 60
    line = audit_for(server.project, limited.json()["request_id"])
    assert line["outcome"] == "rate_limited" and line["key_name"] == "bursty"
    assert server.query("select 1", other).status_code == 200, "limits are per key"

    out = run_cli("query", "select 1", "--url", server.url, env={"DANGO_API_KEY": key})
    assert out.returncode == 3
    assert "429" in out.stderr and "retry in" in out.stderr.lower()


def test_requests_without_a_valid_key_are_limited_per_address(server: ApiServer) -> None:
    statuses = [server.query("select 1", "dango_ak_guess" + str(i)).status_code for i in range(3)]
    assert statuses == [401, 401, 401]
    limited = server.query("select 1", None)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    line = audit_for(server.project, limited.json()["request_id"])
    assert line["outcome"] == "rate_limited" and line["key_id"] is None
