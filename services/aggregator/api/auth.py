"""Who may call the query API: a read key, an admin key, or a browser's session cookie.

- ``Authorization: Bearer <key>``: the read key may read every ``/v1`` route, the admin key may
  also change monitors (any method other than GET/HEAD). Both keys are compared every time,
  in constant time (``shared.apikeys.secret_matches``), so timing tells nothing about either.
- ``POST /v1/session`` exchanges the read key once for an HttpOnly, SameSite=Strict cookie,
  because a browser's ``EventSource`` cannot send headers. The cookie holds its expiry, a random
  session id and an HMAC of both keyed by the read key, so any replica can check it and changing
  the read key ends every session. ``DELETE /v1/session`` ends the session for good: its id goes
  into the ``revoked_sessions`` table (migration 0007), which every replica reads before it
  honours a cookie, so a copy of the cookie stops working everywhere at once. It only ever
  grants reading: a cookie never changes monitors, so a forged cross-site request cannot either.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from pydantic import SecretStr

from services.aggregator.api.body import read_json
from services.aggregator.api.errors import ApiError, json_response
from shared.apikeys import MAX_PRESENTED_LENGTH, bearer_token, secret_matches

SESSION_COOKIE = "pp_session"
READ, ADMIN = "read", "admin"
SESSION_BODY_BYTES = 4096  # {"key": "..."} and no more
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)

_IS_REVOKED_SQL = "SELECT EXISTS (SELECT 1 FROM revoked_sessions WHERE session_id = $1)"
# Rows past their cookie's expiry are no longer needed: each revocation clears them.
_REVOKE_SQL = """
WITH expired AS (DELETE FROM revoked_sessions WHERE expires_at < now())
INSERT INTO revoked_sessions (session_id, expires_at) VALUES ($1, $2) ON CONFLICT (session_id) DO NOTHING"""


def presented_key(request: web.Request) -> str | None:
    return bearer_token(request.headers.get("Authorization"))


def role_of_key(key: str | None, read: SecretStr | None, admin: SecretStr | None) -> str | None:
    """READ, ADMIN or None; both comparisons always run."""
    is_read = secret_matches(key, read)
    is_admin = secret_matches(key, admin)
    return ADMIN if is_admin else READ if is_read else None


@dataclass(frozen=True)
class Session:
    id: str
    expires: int  # Unix seconds


# The session a request was let in by (absent for a key): a live stream checks it again as it runs.
SESSION = web.RequestKey("promptpulse_session", Session)


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def _signature(read: SecretStr, session: Session) -> str:
    return hmac.new(read.get_secret_value().encode(), f"promptpulse-session:{session.expires}:{session.id}".encode(),
                    hashlib.sha256).hexdigest()


def session_token(read: SecretStr, session: Session) -> str:
    return f"{session.expires}.{session.id}.{_signature(read, session)}"


def signed_session(token: str | None, read: SecretStr, now: float) -> Session | None:
    """The session a cookie holds if this read key signed it and it has not expired (whether it
    was ended is the database's to say: ``Authenticator.is_revoked``)."""
    if not token or len(token) > 200:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12 or not _SESSION_ID.fullmatch(parts[1]):
        return None
    session = Session(parts[1], int(parts[0]))
    if not hmac.compare_digest(parts[2], _signature(read, session)) or session.expires <= now:
        return None
    return session


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Authenticator:
    """The middleware and the session routes, for one pair of keys."""

    def __init__(self, read: SecretStr | None, admin: SecretStr | None, *, ttl_seconds: int, secure: bool,
                 pool: asyncpg.Pool) -> None:
        self.read = read
        self.admin = admin
        self.ttl_seconds = ttl_seconds
        self.secure = secure
        self.pool = pool  # where ended sessions are kept, for every replica

    def _session(self, request: web.Request) -> Session | None:
        if self.read is None:
            return None
        return signed_session(request.cookies.get(SESSION_COOKIE), self.read, time.time())

    async def is_revoked(self, session: Session) -> bool:
        return bool(await self.pool.fetchval(_IS_REVOKED_SQL, session.id))

    async def still_valid(self, session: Session) -> bool:
        """For a request that outlives its check (a live stream): not expired, not ended since."""
        return session.expires > time.time() and not await self.is_revoked(session)

    async def _role(self, request: web.Request) -> str | None:
        role = role_of_key(presented_key(request), self.read, self.admin)
        if role is None:
            session = self._session(request)
            if session is not None and not await self.is_revoked(session):
                request[SESSION] = session
                role = READ
        return role

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/") or request.path == "/v1/session":
            return await handler(request)
        if self.read is None:
            raise ApiError(503, "not_configured", "the query API has no read key (set PROMPTPULSE_API_READ_KEY)")
        role = await self._role(request)
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
            if key is None and candidate and len(candidate) <= MAX_PRESENTED_LENGTH:
                key = candidate
        if role_of_key(key, self.read, self.admin) is None:
            raise ApiError(401, "unauthorized", "a valid read key is required")
        session = Session(new_session_id(), int(time.time()) + self.ttl_seconds)
        response = json_response({"expires_at": session.expires, "role": READ})
        response.set_cookie(
            SESSION_COOKIE,
            session_token(self.read, session),
            max_age=self.ttl_seconds,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure,
        )
        return response

    async def delete_session(self, request: web.Request) -> web.Response:
        """Ends the cookie's session on every replica (a copy of the cookie stops working too),
        and clears the cookie. Holding the cookie is the proof: no key is asked for."""
        session = self._session(request)
        if session is not None:
            await self.pool.execute(_REVOKE_SQL, session.id, datetime.fromtimestamp(session.expires, UTC))
        response = web.Response(status=204)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
