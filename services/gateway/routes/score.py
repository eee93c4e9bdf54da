"""``POST /v1/deployments/{deployment}/score``: run the deployment's flow on the body's inputs.

Checks, in order (nothing is published for a refused request): deployment (404), key (401),
rate limit (429), streaming choice (400), body (413, 400), variant header (403, 400), batch-run
and client id headers (400), inputs against the flow (400 naming the field), room for the
request's events (503). Then the request event is published, the flow runs, and the response
event follows whatever happens: ok, error (502 for the LLM, 500 for another node, 504 past the
timeout) or cancelled (the client went away). A successful answer is written before its
response event is built (so are a stream's last event and end): recording it, the spans' end
and the middlewares' work are off the client's wait.

The reply is the flow's outputs plus ``request_id`` and ``variant`` (which win over outputs of
the same name); streaming is in services/gateway/routes/stream.py. Everything after the
route's own checks is :func:`run_accepted`, which ``POST /score`` (routes/pf_score.py) shares
with its own :class:`Reply`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.gateway.appkeys import (
    METRICS,
    PLAUSIBILITY,
    PUBLISHER,
    REQUEST_ID,
    SERVER_SPAN,
    SETTINGS,
)
from services.gateway.events import (
    EventPublisher,
    EventTooLarge,
    PublisherClosed,
    PublisherError,
    PublisherFull,
    Reservation,
)
from services.gateway.registry import DeploymentRuntime
from services.gateway.routes.common import (
    CLIENT_REQUEST_ID_HEADER,
    CLIENT_REQUEST_ID_PATTERN,
    RUN_HEADER,
    RUN_ID_PATTERN,
    VARIANT_HEADER,
    accepted_media_types,
    authorize,
    find_deployment,
    keeps_texts,
    optional_header,
    read_json,
    send_whole,
)
from services.gateway.routes.errors import ApiError, json_response
from services.gateway.routes.outcomes import run_crashed, run_failed, run_timed_out
from services.gateway.routes.recording import InferenceRecorder
from services.gateway.routes.stream import NATIVE_STREAM, StreamFormat, stream_run
from services.gateway.routes.variants import choose_variant
from services.gateway.tracing import trace_header
from shared import sse
from shared.deployments import Variant
from shared.events.errors import InvalidEventError
from shared.events.messages import InferenceRequest
from shared.flow import FlowInputError, FlowResult, NodeExecutionError
from shared.flow.inputs import bind_inputs

log = logging.getLogger(__name__)

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def wants_stream(request: web.Request) -> bool:
    """``?stream=true`` (or false), else whether the client accepts ``text/event-stream``."""
    value = request.query.get("stream")
    if value is not None:
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ApiError(400, "invalid_parameter", "stream must be true or false", field="stream")
    return sse.MEDIA_TYPE in accepted_media_types(request)


async def score(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    start_time = datetime.now(UTC)
    runtime = find_deployment(request)
    authorize(request, runtime)
    streaming = wants_stream(request)
    body, size = await read_json(request)
    variant = choose_variant(request, runtime, (VARIANT_HEADER,))
    client_request_id = optional_header(request, CLIENT_REQUEST_ID_HEADER, CLIENT_REQUEST_ID_PATTERN,
                                        "1-128 visible ASCII characters")
    accepted = AcceptedRequest(runtime, variant, body, size, streaming, client_request_id, started, start_time)
    return await run_accepted(request, accepted, NATIVE_REPLY)


@dataclass(frozen=True)
class AcceptedRequest:
    """A request past the checks that differ by route: its deployment, variant and body."""

    runtime: DeploymentRuntime
    variant: Variant
    body: Any
    size: int
    streaming: bool
    client_request_id: str
    started: float  # perf_counter at arrival
    start_time: datetime


@dataclass(frozen=True)
class Reply:
    """How a route answers a finished run: the JSON body of its outputs, and its stream format."""

    body: Callable[[FlowResult, str, Variant], Any]  # (the run's result, request id, variant)
    stream: StreamFormat
    headers: Callable[[AcceptedRequest], Mapping[str, str]] = lambda _accepted: {}  # on every success


NATIVE_REPLY = Reply(
    # request_id and variant win over outputs of the same name.
    body=lambda result, request_id, variant: {**result.outputs, "request_id": request_id, "variant": variant.id},
    stream=NATIVE_STREAM,
)


async def run_accepted(request: web.Request, accepted: AcceptedRequest, reply: Reply) -> web.StreamResponse:
    """The checks every route shares after its own (run header, inputs, room), then the run."""
    request_id = request[REQUEST_ID]
    runtime, variant, streaming = accepted.runtime, accepted.variant, accepted.streaming
    run_id = optional_header(request, RUN_HEADER, RUN_ID_PATTERN,
                             "1-128 letters, digits or _.:- starting with a letter or digit")
    try:
        inputs = bind_inputs(runtime.flow, accepted.body)
    except FlowInputError as exc:
        raise ApiError(400, "invalid_input", str(exc), field=exc.field or None) from None

    span = request.get(SERVER_SPAN)
    traceparent = ""
    if span is not None:
        traceparent = trace_header(span) or ""
        span.set_attributes({"promptpulse.request_id": request_id, "promptpulse.deployment": runtime.name,
                             "promptpulse.variant": variant.id, "promptpulse.streamed": streaming})
        if run_id:
            span.set_attribute("promptpulse.run_id", run_id)
    settings = request.app[SETTINGS]
    publisher = request.app[PUBLISHER]
    recorder = InferenceRecorder(
        publisher, runtime, request.app[METRICS], settings.gateway.publisher, request_id=request_id,
        start_time=accepted.start_time, started=accepted.started, variant=variant.id, run_id=run_id,
        traceparent=traceparent,
        plausibility=request.app[PLAUSIBILITY],
    )
    try:
        event = recorder.request_event(inputs, client_request_id=accepted.client_request_id, streaming=streaming)
    except InvalidEventError as exc:
        raise ApiError(400, "invalid_input", f"the inputs cannot be recorded: {exc}") from None
    reservation = reserve_room(publisher, accepted.size)
    with reservation:
        publish_request(recorder, event, reservation)
        metrics = request.app[METRICS]
        metrics.in_flight += 1
        llm_headers = {VARIANT_HEADER: variant.id} if settings.gateway.forward_variant_header else None
        try:
            if streaming:
                return await stream_run(request, runtime, variant, inputs, recorder, llm_headers, reply.stream,
                                        headers=reply.headers(accepted))
            return await _run_whole(request, runtime, variant, inputs, recorder, llm_headers, reply,
                                    reply.headers(accepted))
        except asyncio.CancelledError:
            recorder.respond("cancelled")  # a no-op when the run already recorded its outcome
            raise
        except ApiError:
            raise
        except Exception as exc:
            if recorder.responded:
                raise
            log.exception("score request failed", extra={"request_id": request_id})
            raise run_crashed(recorder, exc) from None
        finally:
            metrics.in_flight -= 1


def reserve_room(publisher: EventPublisher, size: int) -> Reservation:
    """Room for a request's events in the publisher; 503 when there is none (nothing published)."""
    try:
        return publisher.reserve(size)
    except PublisherFull:
        raise ApiError(503, "overloaded", "the gateway cannot record more requests right now; retry later",
                       headers={"Retry-After": "5"}) from None
    except PublisherClosed:
        raise ApiError(503, "shutting_down", "the gateway is shutting down", headers={"Retry-After": "1"}) from None


def publish_request(recorder: InferenceRecorder, event: InferenceRequest, reservation: Reservation) -> None:
    """Publish the request event within its reservation; 413 or 503 when it cannot be."""
    try:
        recorder.publish_request(event, reservation)
    except EventTooLarge:
        raise ApiError(413, "body_too_large", "the inputs are too large to record as one event") from None
    except PublisherError:
        raise ApiError(503, "shutting_down", "the gateway is shutting down", headers={"Retry-After": "1"}) from None


USAGE_HEADER = "x-promptpulse-usage"


def usage_header(calls: list[Any]) -> str:
    """``prompt=61, completion=40, total=101, calls=1``: the request's LLM usage, all calls summed."""
    prompt = sum(c.prompt_tokens or 0 for c in calls)
    completion = sum(c.completion_tokens or 0 for c in calls)
    total = sum(c.total_tokens or 0 for c in calls)
    return f"prompt={prompt}, completion={completion}, total={total}, calls={len(calls)}"


async def _run_whole(
    request: web.Request, runtime: DeploymentRuntime, variant: Variant, inputs: dict[str, Any],
    recorder: InferenceRecorder, llm_headers: dict[str, str] | None, reply: Reply, headers: Mapping[str, str],
) -> web.Response:
    timeout = request.app[SETTINGS].gateway.request_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            result = await runtime.executor.run(
                inputs, variant=variant.id, node_variants=variant.nodes, llm_headers=llm_headers,
                request_id=recorder.meta.request_id,
                capture_output=keeps_texts(runtime, recorder.meta.request_id, recorder.meta.run_id),
            )
    except NodeExecutionError as exc:
        raise run_failed(recorder, exc) from None
    except TimeoutError:
        raise run_timed_out(recorder, timeout) from None
    payload = reply.body(result, recorder.meta.request_id, variant)
    try:
        response = json_response(payload)
    except (TypeError, ValueError) as exc:
        recorder.respond("error", llm_calls=result.llm_calls, error_type="invalid_output",
                         error_message=f"the flow's outputs are not JSON: {exc}")
        raise ApiError(500, "invalid_output", "the flow's outputs cannot be sent as JSON") from None
    response.headers.update(headers)
    # Token usage rides in a header: the body's fields are the flow's outputs (any name).
    response.headers[USAGE_HEADER] = usage_header(result.llm_calls)
    try:
        await send_whole(response, request)  # the client has its answer before it is recorded
    finally:  # even if cancelled mid-write: the run completed, so its outcome is ok, not cancelled
        recorder.respond("ok", llm_calls=result.llm_calls, outputs=result.outputs)
    return response
