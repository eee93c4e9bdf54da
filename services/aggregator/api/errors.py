"""One JSON shape for every refusal of the query API, and the middleware that produces it.

``{"error": {"type": "invalid_parameter", "message": "...", "field": "step"}}``: ``type`` is
stable, ``message`` is for people and never holds a secret, ``field`` names the query
parameter, path part or body field at fault. An unexpected exception is logged and answered
with a plain 500, never with its text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems
        self.status = status
        self.error_type = error_type
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def bad_parameter(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{field}: {message}", field=field)


def not_found(what: str, field: str) -> ApiError:
    return ApiError(404, "not_found", what, field=field)


def _default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(payload: Any) -> str:
    # allow_nan=False: NaN is not JSON, and a client's parser would choke on it.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default)


def json_response(payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(payload).encode(), status=status, content_type="application/json",
                        headers=headers)


def error_response(error: ApiError) -> web.Response:
    body: dict[str, Any] = {"type": error.error_type, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    if error.problems:
        body["problems"] = error.problems
    return json_response({"error": body}, status=error.status, headers=error.headers)


# Postgres away, restarting or the pool exhausted: a retry later can succeed.
DATABASE_AWAY = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ApiError -> its JSON answer; aiohttp's own 404/405 keep their status in the same shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/v1/"):
            raise
        kind = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(ApiError(exc.status, kind, exc.reason, headers=allow))
    except DATABASE_AWAY as exc:
        if not request.path.startswith("/v1/"):
            raise
        log.warning("query API: database unavailable for %s: %r", request.path, exc)
        return error_response(ApiError(503, "database_unavailable", "the database is unavailable; retry shortly",
                                       headers={"Retry-After": "5"}))
    except Exception:
        if not request.path.startswith("/v1/"):
            raise
        log.exception("query API handler failed: %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal", "internal error (logged)"))
