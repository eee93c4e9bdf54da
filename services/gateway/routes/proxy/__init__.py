"""The OpenAI-compatible proxy: OpenAI and Azure OpenAI routes in front of a proxy deployment's
upstream (docs/proxy.md). The key decides the deployment; every call is recorded like a flow run.

Routes: ``POST /v1/{operation}``, ``/openai/v1/{operation}`` (Azure's v1 API), ``/openai/{operation}``
for the Responses API as ``AsyncAzureOpenAI`` sends it, and
``/openai/deployments/{name}/{operation}`` (Azure's deployment routes, ``{name}`` the model
deployment), for each of ``responses``, ``chat/completions``, ``completions``, ``embeddings``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from services.gateway.appkeys import (
    METRICS,
    PLAUSIBILITY,
    PUBLISHER,
    REQUEST_ID,
    SERVER_SPAN,
    SETTINGS,
)
from services.gateway.routes.common import CLIENT_REQUEST_ID_HEADER, CLIENT_REQUEST_ID_PATTERN
from services.gateway.routes.errors import ApiError
from services.gateway.routes.outcomes import run_crashed
from services.gateway.routes.proxy.call import accept_call
from services.gateway.routes.proxy.mapping import recorded_inputs
from services.gateway.routes.proxy.relay import Exchange
from services.gateway.routes.recording import InferenceRecorder
from services.gateway.routes.score import publish_request, reserve_room
from services.gateway.tracing import trace_header
from shared.events.errors import InvalidEventError
from shared.upstream import CHAT, COMPLETIONS, EMBEDDINGS, OPERATIONS, RESPONSES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AZURE_DEPLOYMENT_OPERATIONS = (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)
log = logging.getLogger(__name__)


def add_proxy_routes(app: web.Application) -> None:
    for operation in OPERATIONS:
        handler = _handler(operation)
        app.router.add_post(f"/v1/{operation}", handler)
        app.router.add_post(f"/openai/v1/{operation}", handler)
        app.router.add_post(f"/openai/deployments/{{model_deployment}}/{operation}", handler)
    app.router.add_post("/openai/responses", _handler(RESPONSES))


def _handler(operation: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await proxy_call(request, operation)

    handle.__name__ = f"proxy_{operation.replace('/', '_')}"
    return handle


async def proxy_call(request: web.Request, operation: str) -> web.StreamResponse:
    started = time.perf_counter()
    start_time = datetime.now(UTC)
    request_id = request[REQUEST_ID]  # made by the server span's middleware (tracing.py)
    call = await accept_call(request, operation, request.match_info.get("model_deployment"))
    runtime, proxy = call.runtime, call.runtime.deployment.proxy
    assert proxy is not None
    span = request.get(SERVER_SPAN)
    traceparent = ""
    if span is not None:
        traceparent = trace_header(span) or ""
        span.set_attributes({"promptpulse.request_id": request_id, "promptpulse.deployment": runtime.name,
                             "promptpulse.variant": call.variant.id, "promptpulse.streamed": call.streaming})
    settings = request.app[SETTINGS]
    publisher = request.app[PUBLISHER]
    recorder = InferenceRecorder(
        publisher, runtime, request.app[METRICS], settings.gateway.publisher, request_id=request_id,
        start_time=start_time, started=started, variant=call.variant.id, run_id="", traceparent=traceparent,
        plausibility=request.app[PLAUSIBILITY],
    )
    # Recorded inputs stay within the score routes' body limit, which always fits one event.
    inputs = recorded_inputs(operation, call.model, call.client_body, proxy, settings.gateway.max_body_bytes)
    client_id = request.headers.get(CLIENT_REQUEST_ID_HEADER, "")
    client_id = client_id if CLIENT_REQUEST_ID_PATTERN.match(client_id) else ""  # an app's own ids are not ours to refuse
    try:
        event = recorder.request_event(inputs, client_request_id=client_id, streaming=call.streaming)
    except InvalidEventError as exc:  # e.g. an integer beyond 2**53 somewhere in the body
        inputs.pop("request", None)
        inputs["request_not_recorded"] = f"the request body cannot be recorded: {exc}"
        event = recorder.request_event(inputs, client_request_id=client_id, streaming=call.streaming)
    reservation = reserve_room(publisher, event.ByteSize())
    with reservation:
        publish_request(recorder, event, reservation)
        metrics = request.app[METRICS]
        metrics.in_flight += 1
        try:
            return await Exchange(request, call, recorder).run()
        except asyncio.CancelledError:
            recorder.respond("cancelled")  # a no-op when the exchange recorded its outcome
            raise
        except ApiError:
            raise
        except Exception as exc:
            if recorder.responded:
                raise
            log.exception("proxy request failed", extra={"request_id": request_id})
            raise run_crashed(recorder, exc) from None
        finally:
            metrics.in_flight -= 1
