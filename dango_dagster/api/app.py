"""The FastAPI app: ``POST /api/query`` and ``GET /api/health`` over the published snapshot.

Order of checks for a query, each failure audited with its own outcome:
body size cap (413, before the body is even read in full) -> request shape (422) -> API key
(401; 429 once a client without a valid key exceeds the anonymous limit) -> per-key rate limit
(429) -> SQL size (413) -> SQL guard (400/403) -> snapshot (503) -> execution under the deadline
(400/403/408). Queries run in a bounded thread pool, so the event loop keeps serving health
checks, refusals and other queries while DuckDB works.

``create_app(config)`` builds everything from the project config; ``app_from_env`` is the factory
uvicorn imports (also in worker processes), reading the project from ``DANGO_PROJECT_DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from dango_dagster.api.audit import AuditLog, sql_fields
from dango_dagster.api.errors import ApiError
from dango_dagster.api.keys import ApiKey, KeyStore, KeyStoreError
from dango_dagster.api.middleware import AuditMiddleware
from dango_dagster.api.models import (
    ErrorResponse,
    HealthResult,
    QueryRequest,
    QueryResult,
    error_responses,
)
from dango_dagster.api.pool import SnapshotPool
from dango_dagster.api.ratelimit import RateLimiter
from dango_dagster.api.result_cache import ResultCache
from dango_dagster.api.runner import QueryRunner
from dango_dagster.config import ProjectConfig, load_config

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
KEY_FLUSH_INTERVAL_S = 5.0

try:
    VERSION = version("dango-dagster")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    VERSION = "0+unknown"


def _pool_for(config: ProjectConfig) -> SnapshotPool:
    """The published snapshot file, or on DuckLake the pinned snapshot (docs/SCALING.md)."""
    if config.settings.warehouse.kind == "ducklake":
        from dango_dagster.api.pool import lake_opener
        from dango_dagster.lake.catalog import published_file

        return SnapshotPool(published_file(config), config.api, lake_opener(config))
    return SnapshotPool(config.published_snapshot_path, config.api)


class ApiServices:
    """Everything a request needs, built once per server process."""

    def __init__(self, config: ProjectConfig, pool: SnapshotPool | None = None) -> None:
        self.config = config
        self.settings = config.api
        self.pool = pool or _pool_for(config)
        self.cache = ResultCache(self.settings.result_cache_mb)
        self.runner = QueryRunner(self.pool, self.settings.memory_limit, self.cache)
        self.keys = KeyStore(config.api_keys_path)
        self.audit = AuditLog(config.audit_log_path)
        self.limiter = RateLimiter(self.settings.rate_limit, self.settings.anonymous_rate_limit)
        self.executor = ThreadPoolExecutor(
            max_workers=self.settings.pool_size, thread_name_prefix="dango-api-query"
        )
        self._stop = threading.Event()

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None, client: str) -> ApiKey:
        token = credentials.credentials if credentials is not None else None
        try:
            key = self.keys.verify(token)
        except KeyStoreError as exc:
            raise ApiError(503, "key_store_unavailable", str(exc)) from exc
        if key is None:
            self.limiter.check_anonymous(client)
            what = "missing" if token is None else "unknown or revoked"
            raise ApiError(
                401,
                "unauthorized",
                f"API key {what}. Send 'Authorization: Bearer dango_ak_...'; create a key with "
                "`dango-dagster api key create --name NAME`.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key

    def start(self) -> None:
        threading.Thread(target=self._flush_loop, name="dango-api-keys", daemon=True).start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(KEY_FLUSH_INTERVAL_S):
            self.keys.flush_usage()

    def stop(self) -> None:
        self._stop.set()
        self.keys.flush_usage()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()
        self.audit.close()


_bearer = HTTPBearer(auto_error=False, description="An API key: `Bearer dango_ak_...`")


def create_app(config: ProjectConfig, *, pool: SnapshotPool | None = None) -> FastAPI:
    services = ApiServices(config, pool)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()

    app = FastAPI(
        title="dango-dagster query API",
        version=VERSION,
        description=(
            "Read-only SQL over the published warehouse snapshot: authenticated, audited, "
            "rate-limited. See docs/API.md."
        ),
        lifespan=lifespan,
    )
    app.state.services = services
    app.add_middleware(AuditMiddleware, audit=services.audit, settings=services.settings)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.audit.update(outcome=exc.code, detail=exc.detail[:500])
        body = ErrorResponse(error=exc.code, detail=exc.detail, request_id=request.state.request_id)
        return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (an undecodable body, 404, 405) in the same error shape."""
        code = _HTTP_CODES.get(exc.status_code, "invalid_request")
        request.state.audit.update(outcome=code, detail=str(exc.detail)[:500])
        body = ErrorResponse(
            error=code, detail=str(exc.detail), request_id=request.state.request_id
        )
        return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    @app.post(
        "/api/query",
        response_model=QueryResult,
        responses=error_responses(400, 401, 403, 408, 413, 429, 503),
        summary="Run one read-only SQL query on the published snapshot",
    )
    async def query(
        body: QueryRequest,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Response:
        audit: dict = request.state.audit
        audit.update(sql_fields(body.sql))
        client = request.client.host if request.client else "unknown"
        key = services.authenticate(credentials, client)
        audit.update(key_id=key.id, key_name=key.name)
        services.limiter.check_key(key.id)
        settings = services.settings
        size = len(body.sql.encode("utf-8", "surrogatepass"))
        if size > settings.max_sql_bytes:
            raise ApiError(
                413,
                "sql_too_large",
                f"The SQL text is {size} bytes; the limit is {settings.max_sql_bytes} "
                "(api.max_sql_bytes).",
            )
        max_rows = min(body.max_rows or settings.query_max_rows, settings.query_max_rows)
        timeout = min(
            body.timeout_seconds or settings.query_timeout_seconds, settings.query_timeout_seconds
        )
        future = services.executor.submit(
            services.runner.run,
            body.sql,
            max_rows=max_rows,
            timeout=timeout,
            started=request.state.started,
            request_id=request.state.request_id,
        )
        outcome = await asyncio.wrap_future(future)
        audit.update(
            outcome="ok",
            rows=outcome.row_count,
            truncated=outcome.truncated,
            snapshot_at=outcome.snapshot_at,
            cached=outcome.cached,
        )
        return Response(outcome.body, media_type="application/json")

    @app.get("/api/health", response_model=HealthResult, summary="Liveness and snapshot status")
    async def health() -> HealthResult:
        present, at = services.pool.status()
        return HealthResult(
            status="ok" if present else "no_snapshot",
            snapshot_present=present,
            snapshot_at=at,
            version=VERSION,
        )

    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory: the project comes from ``DANGO_PROJECT_DIR`` (set by `api serve`)."""
    return create_app(load_config())
