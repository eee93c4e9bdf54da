"""Who may call the query API: a read key, an admin key, or a browser's session cookie.

- ``Authorization: Bearer <key>``: the read key may read every ``/v1`` route, the admin key may
  also change monitors (any method other than GET/HEAD). Both keys are compared every time,
  as SHA-256 digests with ``hmac.compare_digest``, so timing tells nothing about either.
- ``POST /v1/session`` exchanges the read key once for an HttpOnly, SameSite=Strict cookie,
  because a browser's ``EventSource`` cannot send headers. The cookie is stateless (expiry and
  an HMAC of it keyed by the read key), so any replica accepts it and changing the read key
  ends every session. It only ever grants reading: a cookie never changes monitors, so a
  forged cross-site request cannot either.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import SecretStr

from services.aggregator.api.body import read_json
from services.aggregator.api.errors import ApiError, json_response

SESSION_COOKIE = "pp_session"
READ, ADMIN = "read", "admin"
MAX_PRESENTED = 512
SESSION_BODY_BYTES = 4096  # {"key": "..."} and no more
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def presented_key(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.strip().partition(" ")
    key = credentials.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_PRESENTED:
        return None
    return key


def role_of_key(key: str | None, read: SecretStr | None, admin: SecretStr | None) -> str | None:
    """READ, ADMIN or None; both comparisons always run."""
    presented = _digest(key or "")
    is_read = read is not None and hmac.compare_digest(presented, _digest(read.get_secret_value()))
    is_admin = admin is not None and hmac.compare_digest(presented, _digest(admin.get_secret_value()))
    if key is None:
        return None
    return ADMIN if is_admin else READ if is_read else None


def _signature(read: SecretStr, expires: int) -> str:
    return hmac.new(read.get_secret_value().encode(), f"promptpulse-session:{expires}".encode(),
                    hashlib.sha256).hexdigest()


def session_token(read: SecretStr, expires: int) -> str:
    return f"{expires}.{_signature(read, expires)}"


def session_valid(token: str | None, read: SecretStr, now: float) -> bool:
    if not token or len(token) > 200:
        return False
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit():
        return False
    expires = int(expires_text)
    return hmac.compare_digest(signature, _signature(read, expires)) and expires > now


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Authenticator:
    """The middleware and the session routes, for one pair of keys."""

    def __init__(self, read: SecretStr | None, admin: SecretStr | None, *, ttl_seconds: int, secure: bool) -> None:
        self.read = read
        self.admin = admin
        self.ttl_seconds = ttl_seconds
        self.secure = secure

    def _role(self, request: web.Request) -> str | None:
        role = role_of_key(presented_key(request), self.read, self.admin)
        if role is None and self.read is not None:
            if session_valid(request.cookies.get(SESSION_COOKIE), self.read, time.time()):
                role = READ
        return role

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/") or request.path == "/v1/session":
            return await handler(request)
        if self.read is None:
            raise ApiError(503, "not_configured", "the query API has no read key (set PROMPTPULSE_API_READ_KEY)")
        role = self._role(request)
        if role is None:
            raise ApiError(401, "unauthorized", "a valid read or admin key is required (Authorization: Bearer)",
                           headers={"WWW-Authenticate": 'Bearer realm="promptpulse"'})
        if request.method not in _SAFE_METHODS and role != ADMIN:
            message = ("changing monitors needs the admin key" if self.admin is not None
                       else "changing monitors needs an admin key, and none is set (PROMPTPULSE_API_ADMIN_KEY)")
            raise ApiError(403, "forbidden", message)
        return await handler(request)

    async def create_session(self, request: web.Request) -> web.Response:
        """``POST /v1/session`` with the read (or admin) key as bearer, or ``{"key": "..."}``."""
        if self.read is None:
            raise ApiError(503, "not_configured", "the query API has no read key (set PROMPTPULSE_API_READ_KEY)")
        key = presented_key(request)
        if request.can_read_body:  # a body is optional, but one that is sent must be {"key": "..."}
            body = await read_json(request, field="key", shape='{"key": "..."}', limit=SESSION_BODY_BYTES)
            candidate = body.get("key") if isinstance(body, dict) else None
            if not isinstance(body, dict) or ("key" in body and not isinstance(candidate, str)):
                raise ApiError(400, "invalid_body", 'the body must be a JSON object: {"key": "..."}', field="key")
            if key is None and candidate and len(candidate) <= MAX_PRESENTED:
                key = candidate
        if role_of_key(key, self.read, self.admin) is None:
            raise ApiError(401, "unauthorized", "a valid read key is required")
        expires = int(time.time()) + self.ttl_seconds
        response = json_response({"expires_at": expires, "role": READ})
        response.set_cookie(
            SESSION_COOKIE,
            session_token(self.read, expires),
            max_age=self.ttl_seconds,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure,
        )
        return response

    async def delete_session(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
