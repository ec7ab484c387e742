"""A small client for ``POST /api/query`` (what `dango-dagster query` and scripts use).

Every failure becomes ``QueryError`` with the HTTP status, the server's error code and a message
that says what to do, so callers never see a raw traceback for a 401 or a refused connection.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from dango_dagster.errors import QueryError

DEFAULT_URL = "http://127.0.0.1:8800"
URL_ENV_VAR = "DANGO_API_URL"
KEY_ENV_VAR = "DANGO_API_KEY"

_HINTS = {
    401: "Check the key: pass --key or set DANGO_API_KEY. A key that was revoked no longer works; "
    "create one on the server with `dango-dagster api key create --name NAME`.",
    408: "The server cancelled the query at its time limit. Filter or aggregate more, add a "
    "LIMIT, or ask the operator to raise api.query_timeout_seconds.",
    413: "Shorten the SQL or ask the operator to raise api.max_sql_bytes.",
    429: "Too many requests with this key; wait and retry.",
    503: "The server cannot answer yet.",
}


def _describe(response: httpx.Response) -> QueryError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or f"http_{response.status_code}")
    detail = body.get("detail")
    if not isinstance(detail, str):
        detail = _HINTS.get(response.status_code) or response.text[:500] or response.reason_phrase
    message = f"{response.status_code} {code}: {detail}"
    if response.status_code == 401:
        message += "\nPass a valid key with --key or the DANGO_API_KEY variable."
    retry = response.headers.get("Retry-After")
    if response.status_code in (429, 503) and retry:
        message += f"\nRetry in {retry} s."
    return QueryError(response.status_code, code, message)


def run_query(
    sql: str,
    *,
    url: str | None = None,
    key: str | None = None,
    timeout: float | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Run ``sql`` through the API; the decoded JSON answer, or ``QueryError``.

    ``timeout`` is sent as the query's own timeout (the server caps it at its configured limit)
    and the HTTP request waits a little longer, so a slow query ends with the server's clean 408
    rather than a client-side abort.
    """
    base = (url or os.environ.get(URL_ENV_VAR) or DEFAULT_URL).rstrip("/")
    key = key or os.environ.get(KEY_ENV_VAR)
    if not key:
        raise QueryError(
            None,
            "no_key",
            "No API key: pass --key or set DANGO_API_KEY (create one on the server with "
            "`dango-dagster api key create --name NAME`).",
        )
    payload: dict[str, Any] = {"sql": sql}
    if timeout is not None:
        payload["timeout_seconds"] = timeout
    if max_rows is not None:
        payload["max_rows"] = max_rows
    http_timeout = httpx.Timeout(connect=10.0, read=(timeout or 300.0) + 10.0, write=30, pool=10)
    try:
        response = httpx.post(
            f"{base}/api/query",
            json=payload,
            headers={"Authorization": f"Bearer {key}"},
            timeout=http_timeout,
        )
    except httpx.ConnectError as exc:
        raise QueryError(
            None,
            "unreachable",
            f"Cannot reach the query API at {base} ({exc}). Is `dango-dagster api serve` "
            "running there? Set --url or DANGO_API_URL.",
        ) from exc
    except httpx.TimeoutException as exc:
        raise QueryError(None, "client_timeout", f"No answer from {base} in time ({exc}).") from exc
    except httpx.HTTPError as exc:
        raise QueryError(None, "http_error", f"Request to {base} failed: {exc}") from exc
    if response.status_code != 200:
        raise _describe(response)
    try:
        return response.json()
    except ValueError as exc:
        raise QueryError(200, "bad_response", f"{base} did not answer with JSON.") from exc
