"""``ApiError``: a refusal with a status, a stable code and a message, raised anywhere in the API.

The app turns it into an ``ErrorResponse`` body and records ``code`` as the audit outcome, so one
exception type carries everything a client and an auditor need.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


class SqlRejected(ApiError):
    """The SQL guard refused the statement before it reached a connection."""
