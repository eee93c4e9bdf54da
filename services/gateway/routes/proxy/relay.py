"""Passing one accepted call to the upstream and its answer back, recording it on the way.

The upstream is called with the gateway's one aiohttp client session (no openai client: the
pass-through only moves bytes), the connection's auth headers, the ``traceparent`` of the
call's ``{operation} {model}`` span (so the upstream, or an application exporting its own spans,
joins the request's trace) and, unless turned off, ``x-promptpulse-variant``.

- A whole answer is read, sent back with the upstream's status, body and rate-limit headers,
  and then recorded (a successful one is written before its response event is built). An upstream error (4xx, 5xx) reaches the client the same way: status and body
  untouched; the response event says ``error`` with a stable type (``llm_rate_limited``,
  ``llm_server_error``, ``llm_request_rejected``).
- A stream is relayed event by event as each network read completes (streams.py), the judged
  choice's text deltas published as token chunks on the way. An upstream that breaks mid-stream
  ends the client's stream with an ``error`` event; a client that leaves cancels the upstream
  call (aiohttp's handler cancellation) and the response event says ``cancelled``.
- The gateway's own failures answer in its error shape: 502 ``llm_unreachable`` (no connection),
  504 ``llm_timeout`` (``llm_timeout_seconds`` between bytes, ``request_timeout_seconds`` in all).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from opentelemetry.trace import Span, SpanKind

from services.gateway.appkeys import LLM_SESSION, SETTINGS, TRACER
from services.gateway.routes.common import VARIANT_HEADER, send_whole
from services.gateway.routes.errors import ApiError, error_body
from services.gateway.routes.proxy.call import ProxyCall
from services.gateway.routes.proxy.mapping import Choice, Usage, read_answer, recorded_outputs
from services.gateway.routes.proxy.streams import EventSplitter, StreamAccumulator
from services.gateway.routes.recording import InferenceRecorder
from services.gateway.tracing import trace_header
from shared import sse
from shared.flow import LlmCall
from shared.flow import telemetry as otel

_FORWARDED_PREFIXES = ("x-ratelimit-", "openai-", "retry-after", "x-ms-")
UPSTREAM_REQUEST_ID = "x-upstream-request-id"
_ERROR_BODY_LIMIT = 1024 * 1024


def forwarded_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The upstream headers a client acts on: its content type, retry and rate-limit hints."""
    kept = {k: v for k, v in headers.items() if k.lower().startswith(_FORWARDED_PREFIXES)}
    if "Content-Type" in headers:
        kept["Content-Type"] = headers["Content-Type"]
    if "x-request-id" in headers:
        kept[UPSTREAM_REQUEST_ID] = headers["x-request-id"]
    return kept


def answer_headers(call: ProxyCall, upstream: CIMultiDictProxy[str]) -> dict[str, str]:
    """What the client gets: the upstream's headers it acts on, and the variant that answered."""
    return {**forwarded_headers(upstream), VARIANT_HEADER: call.variant.id}


def upstream_error_kind(status: int) -> str:
    if status == 429:
        return "llm_rate_limited"
    return "llm_server_error" if status >= 500 else "llm_request_rejected"


def upstream_error_message(status: int, body: bytes) -> str:
    """``HTTP 429: <the upstream's error.message>``, redacted (it may echo part of a key)."""
    detail = body[:500].decode("utf-8", errors="replace")
    try:
        parsed = json.loads(body)
        message = parsed["error"]["message"] if isinstance(parsed.get("error"), dict) else parsed.get("message")
        if isinstance(message, str):
            detail = message
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    return otel.redact(f"HTTP {status}: {detail}")


class Exchange:
    """One upstream call of an accepted request: timing, the span, and the call record."""

    def __init__(self, request: web.Request, call: ProxyCall, recorder: InferenceRecorder) -> None:
        self.request = request
        self.call = call
        self.recorder = recorder
        self.started = time.perf_counter()
        self.first_chunk: float | None = None

    def llm_calls(self, usage: Usage | None, model: str | None, finish_reason: str | None) -> list[LlmCall]:
        """The call's usage record; none when the upstream reported no usage (nothing to count)."""
        if usage is None:
            return []
        return [LlmCall(
            node=self.call.operation_name, model=model or self.call.model, request_model=self.call.model,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens, usage_reported=True,
            duration_ms=(time.perf_counter() - self.started) * 1000, time_to_first_chunk_ms=self.ttft_ms,
            finish_reason=finish_reason, streamed=self.call.streaming,
        )]

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_chunk is None else (self.first_chunk - self.recorder.started) * 1000

    def note_span(self, span: Span, usage: Usage | None, model: str | None, choices: list[Choice]) -> None:
        attributes: dict[str, Any] = {}  # set at once: the SDK takes its lock once, not per value
        if model:
            attributes[otel.RESPONSE_MODEL] = model
        if usage is not None:
            attributes[otel.INPUT_TOKENS] = usage.prompt_tokens
            attributes[otel.OUTPUT_TOKENS] = usage.completion_tokens
        reasons = [c.finish_reason for c in choices if c.finish_reason]
        if reasons:
            attributes[otel.FINISH_REASONS] = reasons
        if self.ttft_ms is not None:
            attributes[otel.TIME_TO_FIRST_CHUNK] = self.ttft_ms
        if attributes:
            span.set_attributes(attributes)

    async def run(self) -> web.StreamResponse:
        call, request = self.call, self.request
        upstream = call.runtime.upstream
        settings = request.app[SETTINGS].gateway
        host, port = upstream.server
        attributes: dict[str, Any] = {
            otel.OPERATION: call.operation_name, otel.PROVIDER: "azure.ai.openai" if upstream.is_azure else "openai",
            otel.SYSTEM: "openai", otel.REQUEST_MODEL: call.model, otel.STREAMED: call.streaming,
            otel.SERVER_ADDRESS: host, **otel.request_attributes(call.client_body),
        }
        if port is not None:
            attributes[otel.SERVER_PORT] = port
        tracer = request.app[TRACER]
        with tracer.start_as_current_span(f"{call.operation_name} {call.model}", kind=SpanKind.CLIENT,
                                          attributes=attributes, record_exception=False,
                                          set_status_on_exception=False) as span:
            headers = {"Content-Type": "application/json", **upstream.auth_headers}
            traceparent = trace_header(span)
            if traceparent:
                headers["traceparent"] = traceparent
            if settings.forward_variant_header:
                headers[VARIANT_HEADER] = call.variant.id
            timeout = _timeout(settings.request_timeout_seconds, settings.llm_timeout_seconds)
            try:
                async with request.app[LLM_SESSION].post(upstream.url(call.operation, call.model), data=call.payload,
                                                           headers=headers, timeout=timeout) as answer:
                    if answer.status < 400 and call.streaming and answer.content_type == sse.MEDIA_TYPE:
                        return await self._relay_stream(span, answer)
                    return await self._relay_whole(span, answer)
            except asyncio.CancelledError:
                span.set_attribute(otel.CANCELLED, True)
                raise
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise self._unreachable(span, exc) from None

    def _unreachable(self, span: Span, exc: BaseException) -> ApiError:
        timed_out = isinstance(exc, TimeoutError)
        kind = "llm_timeout" if timed_out else "llm_unreachable"
        message = (f"the upstream did not answer in time ({type(exc).__name__})" if timed_out
                   else otel.redact(f"the upstream cannot be reached: {type(exc).__name__}: {exc}"))
        otel.record_error(span, kind, message)
        self.recorder.respond("error", error_type=kind, error_message=message)
        return ApiError(504 if timed_out else 502, kind, message)

    async def _relay_whole(self, span: Span, answer: aiohttp.ClientResponse) -> web.Response:
        recorder, call = self.recorder, self.call
        body = await _bounded_body(answer) if answer.status >= 400 else await answer.read()
        self.first_chunk = time.perf_counter() if call.streaming else None
        headers = answer_headers(call, answer.headers)
        span.set_attribute("http.response.status_code", answer.status)
        if answer.status >= 400:
            kind, message = upstream_error_kind(answer.status), upstream_error_message(answer.status, body)
            otel.record_error(span, kind, message)
            recorder.respond("error", error_type=kind, error_message=message)
            return web.Response(status=answer.status, body=body, headers=headers)
        try:
            parsed = json.loads(body)
        except ValueError:
            message = "the upstream's answer is not JSON"
            otel.record_error(span, "llm_bad_response", message)
            recorder.respond("error", error_type="llm_bad_response", error_message=message)
            return web.Response(status=answer.status, body=body, headers=headers)
        reading = read_answer(call.operation, parsed)
        self.note_span(span, reading.usage, reading.model, reading.choices)
        response = web.Response(status=answer.status, body=body, headers=headers)
        try:
            await send_whole(response, self.request)  # the client has its answer before it is recorded
        finally:  # even if cancelled mid-write: the answer was complete, so its outcome is ok
            limit = _text_limit(call)
            finish = reading.choices[0].finish_reason if reading.choices else None
            recorder.respond("ok", llm_calls=self.llm_calls(reading.usage, reading.model, finish),
                             outputs=recorded_outputs(call.operation, reading.choices, limit, reading.embeddings))
        return response

    async def _relay_stream(self, span: Span, answer: aiohttp.ClientResponse) -> web.StreamResponse:
        recorder, call, request = self.recorder, self.call, self.request
        accumulator = StreamAccumulator(call.operation, drop_usage_chunk=call.drop_usage_chunk)
        splitter = EventSplitter()
        recorder.start_stream("answer")
        response = web.StreamResponse(status=answer.status, headers={**answer_headers(call, answer.headers),
                                                                     **sse.NO_BUFFERING})
        await response.prepare(request)
        try:
            async for data in answer.content.iter_any():
                out: list[bytes] = []
                for event in splitter.feed(data):
                    delta, forward = accumulator.feed(event)
                    if delta:
                        if self.first_chunk is None:
                            self.first_chunk = time.perf_counter()
                        recorder.on_delta(delta)
                    if forward:
                        out.append(event)
                if out:
                    await response.write(b"".join(out))
            rest = splitter.rest()
            if rest:
                await response.write(rest)
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            self._finish_stream(span, accumulator, "cancelled")
            span.set_attribute(otel.CANCELLED, True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return response
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "llm_timeout" if isinstance(exc, TimeoutError) else "llm_unreachable"
            message = otel.redact(f"the upstream's stream broke off: {type(exc).__name__}")
            otel.record_error(span, kind, message)
            self._finish_stream(span, accumulator, "error", kind, message)
            body = error_body(kind, message, request_id=recorder.meta.request_id)
            try:
                await response.write(sse.json_frame(body, event="error"))
                await response.write_eof()
            except ConnectionResetError:
                pass
            return response
        try:  # the stream's end reaches the client before the answer is recorded
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left after the answer was complete: the outcome stands
        finally:  # even if cancelled mid-write: the upstream's answer was complete
            failed = accumulator.final is not None and accumulator.final.get("status") == "failed"
            if failed:
                self._finish_stream(span, accumulator, "error", "llm_server_error", "the upstream's response failed")
            else:
                self._finish_stream(span, accumulator, "ok")
        return response

    def _finish_stream(self, span: Span, accumulator: StreamAccumulator, status: Any, error_type: str = "",
                       message: str = "") -> None:
        self.recorder.end_stream()
        choices = accumulator.result()
        self.note_span(span, accumulator.usage, accumulator.model, choices)
        finish = choices[0].finish_reason if choices else None
        outputs = recorded_outputs(self.call.operation, choices, _text_limit(self.call))
        self.recorder.respond(status, llm_calls=self.llm_calls(accumulator.usage, accumulator.model, finish),
                              outputs=outputs, error_type=error_type, error_message=message,
                              time_to_first_token_ms=self.ttft_ms)


@functools.lru_cache(maxsize=16)
def _timeout(total: float, between_bytes: float) -> aiohttp.ClientTimeout:
    # ClientTimeout is frozen: one per pair of settings serves every call.
    return aiohttp.ClientTimeout(total=total, sock_connect=between_bytes, sock_read=between_bytes)


async def _bounded_body(answer: aiohttp.ClientResponse) -> bytes:
    """An error body, whole up to _ERROR_BODY_LIMIT (``content.read(n)`` may stop at any chunk)."""
    body = bytearray()
    async for chunk in answer.content.iter_any():
        body += chunk
        if len(body) >= _ERROR_BODY_LIMIT:
            del body[_ERROR_BODY_LIMIT:]
            break
    return bytes(body)


def _text_limit(call: ProxyCall) -> int:
    proxy = call.runtime.deployment.proxy
    assert proxy is not None
    return proxy.recorded_text_max_chars
