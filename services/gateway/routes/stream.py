"""Streamed score requests: the chat output's token deltas as server-sent events.

::

    event: delta
    data: {"delta":"Sampling"}

    event: done
    data: {"outputs":{...},"request_id":"...","variant":"variant_0","usage":[...],"time_to_first_token_ms":212.4}

The headers go out with the first delta, so a run that fails before producing any text is
answered like a non-streamed one (502, 500, 504 with the JSON error). A failure after that ends
the stream with ``event: error`` (same JSON error shape). A client that disconnects cancels the
run, and with it the LLM call in flight; its response event says ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from services.gateway.appkeys import REQUEST_ID, SETTINGS
from services.gateway.registry import DeploymentRuntime
from services.gateway.routes.errors import ApiError, error_body
from services.gateway.routes.outcomes import run_crashed, run_failed, run_timed_out
from services.gateway.routes.recording import InferenceRecorder, usage_records
from shared import sse
from shared.deployments import Variant
from shared.flow import FlowStream, NodeExecutionError

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": f"{sse.MEDIA_TYPE}; charset=utf-8", **sse.NO_BUFFERING}


def sse_event(name: str, data: Any) -> bytes:
    """One server-sent event; its data is one line of compact JSON."""
    return sse.json_frame(data, event=name)


async def stream_run(
    request: web.Request, runtime: DeploymentRuntime, variant: Variant, inputs: dict[str, Any],
    recorder: InferenceRecorder, llm_headers: dict[str, str] | None,
) -> web.StreamResponse:
    timeout = request.app[SETTINGS].gateway.request_timeout_seconds
    stream = runtime.executor.stream(inputs, variant=variant.id, node_variants=variant.nodes, llm_headers=llm_headers)
    recorder.start_stream(stream.streamed_output)
    response: web.StreamResponse | None = None
    try:
        async with stream:
            async with asyncio.timeout(timeout):
                async for delta in stream:
                    recorder.on_delta(delta)
                    if response is None:
                        response = web.StreamResponse(headers=SSE_HEADERS)
                        await response.prepare(request)
                    await response.write(sse_event("delta", {"delta": delta}))
                result = await stream.result()
    except (asyncio.CancelledError, ConnectionResetError) as exc:
        # The client went away (aiohttp cancels the handler, or a write finds the socket closed);
        # leaving the ``async with`` already cancelled the run and closed the LLM response.
        recorder.end_stream()
        recorder.respond("cancelled", llm_calls=stream.llm_calls,
                         time_to_first_token_ms=stream.time_to_first_token_ms)
        if isinstance(exc, asyncio.CancelledError):
            raise
        assert response is not None  # only a write can find the socket closed
        return response
    except NodeExecutionError as exc:
        recorder.end_stream()
        error = run_failed(recorder, exc, time_to_first_token_ms=stream.time_to_first_token_ms)
        return await _fail(request, response, error)
    except TimeoutError:
        recorder.end_stream()
        error = run_timed_out(recorder, timeout, stream.llm_calls, stream.time_to_first_token_ms)
        return await _fail(request, response, error)
    except Exception as exc:
        log.exception("streamed score request failed", extra={"request_id": recorder.meta.request_id})
        recorder.end_stream()
        return await _fail(request, response, run_crashed(recorder, exc, stream.llm_calls))
    recorder.end_stream()
    return await _finish(request, response, stream, result, variant, recorder)


async def _finish(
    request: web.Request, response: web.StreamResponse | None, stream: FlowStream, result: Any,
    variant: Variant, recorder: InferenceRecorder,
) -> web.StreamResponse:
    done = {
        "outputs": result.outputs,
        "request_id": recorder.meta.request_id,
        "variant": variant.id,
        "usage": usage_records(result.llm_calls),
        "time_to_first_token_ms": result.time_to_first_token_ms,
    }
    try:
        payload = sse_event("done", done)
    except (TypeError, ValueError) as exc:
        recorder.respond("error", llm_calls=result.llm_calls, error_type="invalid_output",
                         error_message=f"the flow's outputs are not JSON: {exc}",
                         time_to_first_token_ms=result.time_to_first_token_ms)
        return await _fail(request, response, ApiError(500, "invalid_output", "the flow's outputs cannot be sent as JSON"))
    # Recorded before the last write: the client's success implies the event is on its way.
    recorder.respond("ok", llm_calls=result.llm_calls, outputs=result.outputs,
                     time_to_first_token_ms=result.time_to_first_token_ms)
    fresh = response is None  # nothing was streamed (an empty answer, or no streamable output)
    if response is None:
        response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        if fresh:
            await response.prepare(request)
        await response.write(payload)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left after the run completed: the outcome stands
    return response


async def _fail(request: web.Request, response: web.StreamResponse | None, error: ApiError) -> web.StreamResponse:
    if response is None:
        raise error  # nothing sent yet: an ordinary JSON error with the right status
    body = error_body(error.error_type, error.message, request_id=request.get(REQUEST_ID), extra=error.extra)
    try:
        await response.write(sse_event("error", body))
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
