"""HTTP for the CLI: one aiohttp session per service, every failure turned into a CliError.

The mapping is the same for the gateway and the query API: a refused connection or a timeout
is "cannot reach <service> at <url>" (exit 3, with the `make up` hint); 401 says which key to
set; 403 says the key may not do this; 404 names what was not found; anything else quotes the
service's own error message. Server-sent events are split by ``shared.sse``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from services.cli.config import (
    EXIT_NOT_FOUND,
    EXIT_SERVICE_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    START_HINT,
    CliError,
)
from shared.sse import SseEvent, read_events

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 60.0


def error_text(body: str) -> tuple[str | None, str]:
    """(type, message) from a PromptPulse error body ``{"error": {"type", "message"}}``, or the
    body itself (shortened) when it is not one."""
    try:
        error = json.loads(body)["error"]
        return error.get("type"), str(error.get("message") or error.get("type") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        text = " ".join(body.split())
        return None, text[:200] or "(no body)"


@dataclass
class Service:
    """How to talk to one service and how to explain its refusals."""

    name: str  # "gateway" | "query API"
    url: str
    headers: dict[str, str]
    key_hint: str  # what to do after a 401, e.g. "set PROMPTPULSE_API_READ_KEY"
    key_source: str = ""  # where the key came from, for the 401 message
    forbidden_hint: str = ""  # what to do after a 403

    def fail(self, status: int, body: str, not_found: str | None = None) -> CliError:
        error = self._explain(status, body, not_found)
        error.status = status
        return error

    def _explain(self, status: int, body: str, not_found: str | None) -> CliError:
        kind, message = error_text(body)
        if status == 401:
            source = f" from {self.key_source}" if self.key_source else ""
            return CliError(f"the {self.name} at {self.url} refused the key{source} ({message}): {self.key_hint}",
                            EXIT_USAGE)
        if status == 403:
            hint = f": {self.forbidden_hint}" if self.forbidden_hint else ""
            return CliError(f"the {self.name} at {self.url} forbids this ({message}){hint}", EXIT_USAGE)
        if status == 404:
            if not_found and kind in (None, "not_found", "unknown_deployment"):
                return CliError(f"{not_found} (the {self.name} at {self.url} says: {message})", EXIT_NOT_FOUND)
            return CliError(f"not found at the {self.name} {self.url}: {message}", EXIT_NOT_FOUND)
        if status in (400, 413, 422):
            return CliError(f"the {self.name} refused the request ({status}): {message}", EXIT_USAGE)
        return CliError(f"the {self.name} at {self.url} answered {status}: {message}", EXIT_SERVICE_ERROR)

    def unreachable(self, exc: BaseException) -> CliError:
        reason = type(exc).__name__ if isinstance(exc, TimeoutError) else _reason(exc)
        return CliError(f"cannot reach the {self.name} at {self.url} ({reason}); {START_HINT}", EXIT_UNREACHABLE)


def _reason(exc: BaseException) -> str:
    import os

    inner = getattr(exc, "os_error", None)
    if isinstance(inner, OSError) and inner.errno:
        return os.strerror(inner.errno).lower()
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    text = str(exc).split(" [")[-1].rstrip("]") if "[" in str(exc) else type(exc).__name__
    return text or type(exc).__name__


_UNREACHABLE = (aiohttp.ClientConnectionError, TimeoutError, OSError)


class Client:
    """An aiohttp session bound to one :class:`Service`."""

    def __init__(self, service: Service, *, total_timeout: float | None = REQUEST_TIMEOUT) -> None:
        self.service = service
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, sock_connect=CONNECT_TIMEOUT)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(headers=self.service.headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    @asynccontextmanager
    async def open(
        self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, not_found: str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response, once its status is a success (else the CliError for it)."""
        assert self._session is not None
        try:
            async with self._session.request(
                method, self.service.url + path, json=json_body, params=params, headers=headers,
                timeout=client_timeout or self._timeout,
            ) as response:
                if response.status >= 300:
                    raise self.service.fail(response.status, await response.text(), not_found)
                yield response
        except aiohttp.ClientPayloadError as exc:  # the connection broke off mid-answer
            raise CliError(f"the connection to the {self.service.name} at {self.service.url} broke off "
                           f"({type(exc).__name__}); {START_HINT}", EXIT_UNREACHABLE) from None
        except _UNREACHABLE as exc:
            raise self.service.unreachable(exc) from None

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.open(method, path, **kwargs) as response:
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise CliError(f"the {self.service.name} at {self.service.url} sent a reply that is not JSON",
                               EXIT_SERVICE_ERROR) from None

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.json("GET", path, **kwargs)


# -- server-sent events ---------------------------------------------------------------------


def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Events of a streamed response, as they arrive (no line length limit)."""
    return read_events(response.content.iter_any())


def bearer(key_value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key_value}"}


def query_api(url: str, *, admin: bool = False) -> Service:
    """The query API with the read key (or the admin key, for changes)."""
    from services.cli.config import api_key, api_key_hint

    key = api_key(admin=admin)
    return Service("query API", url, bearer(key.value), api_key_hint(admin), key.source,
                   forbidden_hint="changing monitors needs the admin key: " + api_key_hint(True))


def gateway(url: str, key_value: str, key_source: str, key_hint: str) -> Service:
    return Service("gateway", url, {"api-key": key_value}, key_hint, key_source)



def part(value: str) -> str:
    """A value made safe as one URL path segment."""
    from urllib.parse import quote

    return quote(value, safe="")
