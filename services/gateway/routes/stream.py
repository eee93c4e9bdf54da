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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.gateway.appkeys import REQUEST_ID, SETTINGS
from services.gateway.registry import DeploymentRuntime
from services.gateway.routes.common import keeps_texts
from services.gateway.routes.errors import ApiError, error_body
from services.gateway.routes.outcomes import run_crashed, run_failed, run_timed_out
from services.gateway.routes.recording import InferenceRecorder, usage_records
from shared import sse
from shared.deployments import Variant
from shared.flow import FlowResult, FlowStream, NodeExecutionError

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": f"{sse.MEDIA_TYPE}; charset=utf-8", **sse.NO_BUFFERING}


def sse_event(name: str, data: Any) -> bytes:
    """One server-sent event; its data is one line of compact JSON."""
    return sse.json_frame(data, event=name)


@dataclass(frozen=True)
class StreamFormat:
    """The bytes of a streamed reply: each delta, the end of a run that succeeded, an error."""

    delta: Callable[[str | None, str], bytes]  # (streamed output's name, text)
    # (result, streamed output's name, whether any delta was sent, variant, request id); may raise
    # TypeError or ValueError for outputs that are not JSON.
    done: Callable[[FlowResult, str | None, bool, Variant, str], bytes]
    error: Callable[[ApiError, dict[str, Any]], bytes]  # (the error, its JSON body)


def _native_done(result: FlowResult, streamed_output: str | None, sent_delta: bool, variant: Variant,
                 request_id: str) -> bytes:
    return sse_event("done", {
        "outputs": result.outputs,
        "request_id": request_id,
        "variant": variant.id,
        "usage": usage_records(result.llm_calls),
        "time_to_first_token_ms": result.time_to_first_token_ms,
    })


NATIVE_STREAM = StreamFormat(
    delta=lambda _output, text: sse_event("delta", {"delta": text}),
    done=_native_done,
    error=lambda _error, body: sse_event("error", body),
)


async def stream_run(
    request: web.Request, runtime: DeploymentRuntime, variant: Variant, inputs: dict[str, Any],
    recorder: InferenceRecorder, llm_headers: dict[str, str] | None, form: StreamFormat = NATIVE_STREAM,
    *, headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    timeout = request.app[SETTINGS].gateway.request_timeout_seconds
    stream = runtime.executor.stream(
        inputs, variant=variant.id, node_variants=variant.nodes, llm_headers=llm_headers,
        request_id=recorder.meta.request_id,
        capture_output=keeps_texts(runtime, recorder.meta.request_id, recorder.meta.run_id),
    )
    recorder.start_stream(stream.streamed_output)
    response: web.StreamResponse | None = None
    try:
        async with stream:
            async with asyncio.timeout(timeout):
                async for delta in stream:
                    recorder.on_delta(delta)
                    if response is None:
                        response = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
                        await response.prepare(request)
                    await response.write(form.delta(stream.streamed_output, delta))
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
        return await _fail(request, response, error, form)
    except TimeoutError:
        recorder.end_stream()
        error = run_timed_out(recorder, timeout, stream.llm_calls, stream.time_to_first_token_ms)
        return await _fail(request, response, error, form)
    except Exception as exc:
        log.exception("streamed score request failed", extra={"request_id": recorder.meta.request_id})
        recorder.end_stream()
        return await _fail(request, response, run_crashed(recorder, exc, stream.llm_calls), form)
    recorder.end_stream()
    return await _finish(request, response, stream, result, variant, recorder, form, headers or {})


async def _finish(
    request: web.Request, response: web.StreamResponse | None, stream: FlowStream, result: Any,
    variant: Variant, recorder: InferenceRecorder, form: StreamFormat, headers: Mapping[str, str],
) -> web.StreamResponse:
    try:
        payload = form.done(result, stream.streamed_output, response is not None, variant, recorder.meta.request_id)
    except (TypeError, ValueError) as exc:
        recorder.respond("error", llm_calls=result.llm_calls, error_type="invalid_output",
                         error_message=f"the flow's outputs are not JSON: {exc}",
                         time_to_first_token_ms=result.time_to_first_token_ms)
        error = ApiError(500, "invalid_output", "the flow's outputs cannot be sent as JSON")
        return await _fail(request, response, error, form)
    fresh = response is None  # nothing was streamed (an empty answer, or no streamable output)
    if response is None:
        response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
    try:
        if fresh:
            await response.prepare(request)
        if payload:
            await response.write(payload)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left after the run completed: the outcome stands
    finally:
        # Recorded after the last write, as a whole answer is (routes/score.py): off the client's
        # wait; and recorded even if cancelled mid-write, since the run completed.
        recorder.respond("ok", llm_calls=result.llm_calls, outputs=result.outputs,
                         time_to_first_token_ms=result.time_to_first_token_ms)
    return response


async def _fail(request: web.Request, response: web.StreamResponse | None, error: ApiError,
                form: StreamFormat) -> web.StreamResponse:
    if response is None:
        raise error  # nothing sent yet: an ordinary JSON error with the right status
    body = error_body(error.error_type, error.message, request_id=request.get(REQUEST_ID), extra=error.extra)
    try:
        await response.write(form.error(error, body))
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
