"""The query API's wire format: request, answers and the one error shape every failure uses.

These models are what FastAPI publishes as the OpenAPI schema, so they are the contract clients
(and the schemathesis fuzz test) hold the service to. Every error status the service can return
is declared here with the same ``ErrorResponse`` body, so a client can handle all of them alike.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QueryRequest(BaseModel):
    """One read-only SQL statement; optional tighter limits than the server's own."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(description="Exactly one SELECT statement (WITH, FROM-first, DESCRIBE, ...).")
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Ask for a shorter timeout; never more than api.query_timeout_seconds.",
    )
    max_rows: int | None = Field(
        default=None,
        gt=0,
        le=100_000_000,
        description="Ask for fewer rows; the server never exceeds api.query_max_rows.",
    )


class QueryResult(BaseModel):
    """A successful answer: the rows as JSON values, and which snapshot they came from."""

    columns: list[str]
    column_types: list[str] = Field(description="DuckDB type of each column, e.g. DECIMAL(18,2).")
    rows: list[list[Any]] = Field(
        description=(
            "Rows as arrays. Dates and times are ISO 8601 strings, DECIMAL a JSON number, "
            "UUID and INTERVAL strings, BLOB base64, NaN and infinities null."
        )
    )
    row_count: int
    truncated: bool = Field(description="True when the query had more rows than were returned.")
    max_rows: int
    elapsed_ms: float
    snapshot_at: str = Field(description="When the published snapshot read was written (UTC).")
    cached: bool = Field(
        description="Answered from memory: the same deterministic query on the same snapshot."
    )
    request_id: str


class ErrorResponse(BaseModel):
    """Every failure: a stable machine ``error`` code and a message that says what to do."""

    error: str = Field(
        description=(
            "unauthorized, rate_limited, sql_too_large, invalid_sql, forbidden_sql, "
            "query_failed, timeout, no_snapshot, snapshot_unavailable, key_store_unavailable, "
            "audit_unavailable, invalid_request, not_found"
        )
    )
    detail: str
    request_id: str | None = None


class HealthResult(BaseModel):
    status: str = Field(description="ok, or no_snapshot before the pipeline has published one.")
    snapshot_present: bool
    snapshot_at: str | None
    version: str


_ERROR_DESCRIPTIONS = {
    400: "The SQL does not parse, names something that does not exist, or fails while running.",
    401: "Missing, unknown or revoked API key.",
    403: "The SQL is not a single read (writes, ATTACH, COPY, SET, PRAGMA, file readers...).",
    408: "The query ran past its timeout and was cancelled inside DuckDB (or the timeout ran out "
    "while it waited for a free connection).",
    413: "The SQL text is larger than api.max_sql_bytes.",
    429: "Rate limit reached; the Retry-After header says when to retry.",
    503: "No published snapshot yet (run the pipeline), or it, the key store or the audit log "
    "cannot be used.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` mapping for a route that can fail with ``codes``."""
    return {
        code: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[code]} for code in codes
    }
