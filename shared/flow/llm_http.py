"""Flows' LLM calls over plain aiohttp: one connection's endpoint, as the gateway's proxy calls it.

The gateway has one LLM call path: a proxy deployment's upstream and a flow's llm nodes both send
through one shared ``aiohttp.ClientSession`` to the URL and auth headers of shared/upstream.py.
This replaced ``client.post`` of the ``openai`` package for llm nodes (bench/llm_call_path.py
measures both); it speaks what that client spoke, so nothing recorded changes:

- Body: the request's JSON (``model`` in it, Azure too); ``Content-Type`` and ``Accept``
  ``application/json``; the connection's key as ``api-key`` (Azure) or ``Authorization: Bearer``.
- Retries (``max_retries`` more tries, the gateway's ``llm_max_retries``): after a 408, 409, 429
  or 5xx, a timeout or a broken connection, unless the answer says ``x-should-retry: false``
  (``true`` retries any status). The wait is the answer's ``retry-after-ms`` / ``Retry-After`` when
  it is over 0 and at most 120 s (longer: not retried at all), else 0.5 s doubling to 8 s,
  jittered (shared/retry.py). A stream is retried only until its answer's headers arrive.
- Timeouts: ``timeout`` seconds to connect and between two reads, as the client's float timeout.
- Errors: :class:`LlmHttpError`, named and worded as the openai exception was, which is what the
  gateway records and answers (services/gateway/routes/outcomes.py): ``RateLimitError`` (429),
  ``InternalServerError`` (5xx), ``BadRequestError``... with ``Error code: 429 - <the body's
  error message>``; ``APITimeoutError`` ``Request timed out.``; ``APIConnectionError``
  ``Connection error.``; an ``error`` object inside a stream, ``APIError`` with its message. A
  whole answer that is not JSON raises ``JSONDecodeError`` (a JSON content type) or is read as
  text (any other), as the client did.
- Streams: SSE read with shared/sse.py's parser, each event's JSON as a dict, ``[DONE]`` ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import aiohttp

from shared.flow.errors import LlmCallError
from shared.flow.telemetry import redact
from shared.retry import Backoff, Jitter, retry_after_seconds
from shared.sse import SseParser
from shared.upstream import Upstream, upstream_session

# The openai client's defaults, for callers that set none.
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
MAX_RETRY_AFTER = 120.0  # a server asking for a longer wait is not retried (as the openai client)
_RETRIED_STATUSES = frozenset({408, 409, 429})
_STATUS_ERRORS = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
    409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError",
}
TIMEOUT_ERROR = "APITimeoutError"
CONNECTION_ERROR = "APIConnectionError"
# Made once: json.dumps with options builds an encoder per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class LlmHttpError(LlmCallError):
    """A failed call: ``error_type`` the openai exception's name, ``headers`` the answer's (its
    ``Retry-After`` is read by the processor's circuit breaker), the message already redacted."""

    def __init__(self, error_type: str, message: str, *, status_code: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__("", error_type, redact(message), status_code=status_code)
        self.headers = headers


def status_error(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> LlmHttpError:
    """The error of a non-2xx answer: ``Error code: 429 - <message>`` when the body is JSON with an
    error message (``{"error": {"message": ...}}`` or ``{"message": ...}``)."""
    error_type = _STATUS_ERRORS.get(status) or ("InternalServerError" if status >= 500 else "APIStatusError")
    text = f"Error code: {status}"
    try:
        data = json.loads(body.decode("utf-8", errors="replace").strip())
    except ValueError:
        data = None
    error = data.get("error", data) if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message:
        text += f" - {message}"
    return LlmHttpError(error_type, text, status_code=status, headers=headers)


def _timed_out() -> LlmHttpError:
    return LlmHttpError(TIMEOUT_ERROR, "Request timed out.")


def _unreachable() -> LlmHttpError:
    return LlmHttpError(CONNECTION_ERROR, "Connection error.")


def retry_wait(failure: LlmHttpError, backoff: Backoff) -> float | None:
    """Seconds to wait before trying again after ``failure``, or None when it is not retried."""
    headers = failure.headers
    status = failure.status_code
    if status is None:
        return backoff.next()  # a timeout or a broken connection
    asked = retry_after_seconds(headers)
    if asked is not None and asked > MAX_RETRY_AFTER:
        return None
    should = headers.get("x-should-retry") if headers is not None else None
    if should == "false" or (should != "true" and status not in _RETRIED_STATUSES and status < 500):
        return None
    wait = backoff.next()
    return asked if asked is not None and asked > 0 else wait


class LlmEndpoint:
    """One connection's endpoint for llm nodes. ``post`` is the one place a request is sent (the
    processor's judge slot wraps it). The session is shared when given (the gateway's and the
    processor's one pool); otherwise the endpoint opens its own on first use and closes it in
    :meth:`close`. Keys live only in the request headers, never in a repr."""

    def __init__(self, upstream: Upstream, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries cannot be negative, not {max_retries}")
        self.upstream = upstream
        self.max_retries = max_retries
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **upstream.auth_headers}

    def __repr__(self) -> str:
        return f"LlmEndpoint(connection={self.upstream.connection!r}, kind={self.upstream.kind!r})"

    @property
    def is_azure(self) -> bool:
        return self.upstream.is_azure

    @property
    def server(self) -> tuple[str, int | None]:
        return self.upstream.server

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The pool calls go through (None: the endpoint's own, not opened yet)."""
        return self._session

    async def post(self, path: str, body: Mapping[str, Any], *, stream: bool = False,
                   headers: Mapping[str, str] | None = None) -> Any:
        """One call of ``path`` (``/chat/completions``, ``/completions``, ``/embeddings``) with its
        retries: the answer's JSON, or for ``stream`` an :class:`LlmStream` once its headers are in.
        Raises :class:`LlmHttpError` (``json.JSONDecodeError`` for a cut JSON answer)."""
        url = self.upstream.url(path.lstrip("/"), str(body.get("model") or ""))
        data = _JSON.encode(body).encode()
        sent = {**self._headers, **headers} if headers else self._headers
        session = self._session_now()
        backoff: Backoff | None = None
        while True:
            try:
                return await self._try(session, url, data, sent, stream)
            except LlmHttpError as failure:
                backoff = backoff or Backoff(initial=0.5, cap=8.0, jitter=Jitter.PROPORTIONAL)
                wait = retry_wait(failure, backoff) if backoff.failures < self.max_retries else None
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    async def _try(self, session: aiohttp.ClientSession, url: str, data: bytes, headers: Mapping[str, str],
                   stream: bool) -> Any:
        try:
            response = await session.post(url, data=data, headers=headers, timeout=self._timeout)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (before ClientError: some are both)
            raise _timed_out() from exc
        except aiohttp.ClientError as exc:
            raise _unreachable() from exc
        if response.status >= 300:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.release()
            raise status_error(response.status, raw, response.headers)
        if stream:
            return LlmStream(response)
        try:
            raw = await response.read()
        except TimeoutError as exc:
            raise _timed_out() from exc
        except aiohttp.ClientError as exc:
            raise _unreachable() from exc
        finally:
            response.release()
        if not response.content_type.endswith("json"):
            return raw.decode("utf-8", errors="replace")  # not an answer: read as "no choices"
        return json.loads(raw)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._closed:  # retired by a reload or shut down: as a closed openai client, no connection
            raise _unreachable()
        if self._session is None:
            self._session = upstream_session()
        return self._session

    def is_closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """No more calls; closes the endpoint's own session (a shared one is its owner's to close)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()


class LlmStream:
    """A streamed answer: ``async with`` it, then ``async for`` its events' JSON. Leaving the block
    before the end (a cancelled run) closes the connection, which ends the call upstream."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._finished = False

    async def __aenter__(self) -> LlmStream:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._finished:
            self._response.release()
        else:
            self._response.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        parser = SseParser()
        content = self._response.content
        try:
            async for chunk in content.iter_any():
                for event in parser.feed(chunk):
                    if event.data.startswith("[DONE]"):
                        await self._drain()
                        return
                    value = json.loads(event.data)
                    if isinstance(value, dict) and value.get("error"):
                        raise _stream_error(value["error"])
                    yield value
        except TimeoutError as exc:
            raise _timed_out() from exc
        except aiohttp.ClientError as exc:
            raise _unreachable() from exc
        self._finished = True

    async def _drain(self) -> None:
        # The rest of the body, so the connection goes back to the pool; failing that, the
        # answer is complete all the same and the connection is closed on exit.
        try:
            await self._response.content.read()
        except (TimeoutError, aiohttp.ClientError):
            return
        self._finished = True


def _stream_error(error: Any) -> LlmHttpError:
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    return LlmHttpError("APIError", message)


__all__ = ["LlmEndpoint", "LlmHttpError", "LlmStream", "status_error"]
