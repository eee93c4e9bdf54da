"""The HTTP server span of every request, and the ``traceresponse`` / ``x-request-id`` headers.

The span continues the caller's trace when it sends a W3C ``traceparent``; everything the
request does (``invoke_workflow``, node spans, the events' trace context) is its child. Names
and attributes follow the OpenTelemetry HTTP server conventions (``POST /v1/deployments/
{deployment}/score``, ``http.route``, ``http.response.status_code``). Health and metrics scrapes
are not traced: they would be most of the spans and say nothing.

``traceresponse`` (W3C Trace Context Level 2) tells the caller which trace its request got, even
when it sent no ``traceparent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.gateway.appkeys import REQUEST_ID, SERVER_SPAN, TRACER
from shared.events.builders import new_event_id
from shared.telemetry.sampling import SAMPLING_KEY, RequestRatioSampler

# /v1/traces: OTLP ingest; tracing it would add our spans to every span an application sends.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/worker", "/v1/traces"})
_PROPAGATOR = TraceContextTextMapPropagator()


def trace_header(span: Span) -> str | None:
    """``00-<trace id>-<span id>-<flags>`` of ``span``: its traceparent (and traceresponse)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def incoming_context(request: web.Request) -> Context:
    # Only W3C trace context is read from clients; their baggage is not ours to carry.
    return _PROPAGATOR.extract(request.headers)


def _route(request: web.Request) -> str | None:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    return resource.canonical if resource is not None and info.http_exception is None else None


@web.middleware
async def server_span(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
    if request.path in UNTRACED_PATHS:
        return await handler(request)
    tracer: Tracer = request.app[TRACER]
    route = _route(request)
    # The request id is made before the span starts, so that a sampler can decide by it
    # (shared/telemetry/sampling.py: the judged requests keep their traces).
    request_id = request[REQUEST_ID] = new_event_id()
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if route is not None:
        attributes["http.route"] = route
    host = request.url.host
    if host:
        attributes["server.address"] = host
    if request.url.port:
        attributes["server.port"] = request.url.port
    agent = request.headers.get("User-Agent")
    if agent:
        attributes["user_agent.original"] = agent[:256]
    if isinstance(getattr(tracer, "sampler", None), RequestRatioSampler):
        attributes[SAMPLING_KEY] = request_id  # read and removed by the sampler
    name = f"{request.method} {route}" if route else request.method
    with tracer.start_as_current_span(
        name, context=incoming_context(request), kind=SpanKind.SERVER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:
        request[SERVER_SPAN] = span
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            span.set_attribute("promptpulse.cancelled", True)  # the client went away
            raise
        except web.HTTPException as exc:
            _set_status(span, exc.status)
            raise
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        _set_status(span, response.status)
        return response


def _set_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        # Server spans mark only 5xx as errors: a 4xx is the client's mistake, not ours.
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before the headers of any response (JSON or stream) are sent."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["x-request-id"] = request_id
    span = request.get(SERVER_SPAN)
    if span is not None:
        value = trace_header(span)
        if value is not None:
            response.headers["traceresponse"] = value
