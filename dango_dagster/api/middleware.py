"""ASGI middleware: audit every request, and refuse oversized bodies before reading them whole.

It wraps the whole app, so requests FastAPI answers by itself (422 for a malformed body, 404,
405) are audited like the rest. The audit line is written when the response starts, before any
byte of it leaves: if the audit log cannot be written, the client gets 503 instead of an
unaudited answer (fail closed).

The body cap protects memory: uvicorn reads any body size, and a JSON string can spend up to six
bytes per byte of SQL (``\\u0001``), so anything over ``6 * api.max_sql_bytes`` plus some slack
cannot hold an acceptable SQL text and is refused with 413 without being buffered.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dango_dagster.api.audit import AuditLog
from dango_dagster.config import ApiSettings

log = logging.getLogger(__name__)
_BODY_SLACK = 16_384
_QUERY_PATH = "/api/query"
_DEFAULT_OUTCOMES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def _default_outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 422:
        return "invalid_request"
    return _DEFAULT_OUTCOMES.get(status, "error")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json_error(send: Send, status: int, code: str, detail: str, request_id: str) -> None:
    body = json.dumps({"error": code, "detail": detail, "request_id": request_id}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit: AuditLog, settings: ApiSettings) -> None:
        self.app = app
        self.audit = audit
        self.body_cap = 6 * settings.max_sql_bytes + _BODY_SLACK
        self.max_sql_bytes = settings.max_sql_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        request_id = uuid.uuid4().hex[:16]
        fields: dict[str, Any] = {}
        state = scope.setdefault("state", {})
        state.update(audit=fields, request_id=request_id, started=started)
        client = scope.get("client")
        base = {
            "request_id": request_id,
            "client": client[0] if client else None,
            "method": scope.get("method"),
            "path": scope.get("path"),
        }
        if scope.get("method") == "POST" and scope.get("path") == _QUERY_PATH:
            buffered, size = await self._buffer_body(scope, receive)
            if buffered is None:
                record = self._record(base, fields, 413, started)
                record.update(outcome="sql_too_large", body_bytes=size)
                detail = (
                    f"The request body ({size} bytes or more) cannot hold an SQL text within "
                    f"api.max_sql_bytes ({self.max_sql_bytes})."
                )
                await self._respond_audited(send, record, 413, "sql_too_large", detail)
                return
            receive = buffered

        started_response = False
        failed = False

        async def audited_send(message: Message) -> None:
            nonlocal started_response, failed
            if message["type"] == "http.response.start":
                started_response = True
                try:
                    self.audit.write(self._record(base, fields, message["status"], started))
                except OSError as exc:
                    failed = True
                    log.error("audit log %s not writable: %s", self.audit.path, exc)
                    detail = "The audit log cannot be written."
                    await send_json_error(send, 503, "audit_unavailable", detail, request_id)
                    return
            elif failed:
                return
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception:
            if not started_response:
                record = self._record(base, fields, 500, started)
                record["outcome"] = "error"
                try:
                    self.audit.write(record)
                except OSError as exc:  # pragma: no cover - both the app and the disk failed
                    log.error("audit log %s not writable: %s", self.audit.path, exc)
            raise

    @staticmethod
    def _record(
        base: dict[str, Any], fields: dict[str, Any], status: int, started: float
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            **base,
            "key_id": None,
            "key_name": None,
            "outcome": _default_outcome(status),
            "status": status,
            "rows": None,
            "truncated": None,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
            "sql": None,
            "sql_sha256": None,
        }
        record.update({k: v for k, v in fields.items() if v is not None})
        return record

    async def _respond_audited(
        self, send: Send, record: dict[str, Any], status: int, code: str, detail: str
    ) -> None:
        try:
            self.audit.write(record)
        except OSError as exc:
            log.error("audit log %s not writable: %s", self.audit.path, exc)
            status, code, detail = 503, "audit_unavailable", "The audit log cannot be written."
        await send_json_error(send, status, code, detail, record["request_id"])

    async def _buffer_body(self, scope: Scope, receive: Receive) -> tuple[Receive | None, int]:
        """The body, replayable; (None, size) as soon as it exceeds the cap."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_cap:
            return None, int(declared)
        chunks: list[bytes] = []
        size = 0
        tail: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                tail.append(message)  # a disconnect: let the app see it after the body
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_cap:
                return None, size
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False},
            *tail,
        ]

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay, size
