"""``POST /score``: prompt flow's own client contract, as ``pf flow serve`` and Azure ML managed
online endpoints answer it, so a client written for them runs with only its base URL and key
changed.

- **Which deployment**: the one the key belongs to (``Authorization: Bearer <key>`` or
  ``api-key``), as an Azure endpoint is chosen by its URL and key. The key's hash is compared
  with every key of every deployment (services/gateway/auth.py); a wrong key is a 401.
- **Which variant**: by weight, or forced with ``azureml-model-deployment`` (which names one
  deployment behind an Azure endpoint) or ``x-promptpulse-variant``, by id or as prompt flow
  names a node variant (``${answer.variant_1}``); routes/variants.py has the rule.
- **Body and reply**: the flow's inputs in, the flow's outputs only out. The request id is in
  the ``x-request-id`` header, the variant that answered in ``azureml-model-deployment`` and
  ``x-promptpulse-variant``, the LLM usage in ``x-promptpulse-usage`` (non-streamed). A client id
  in ``x-ms-client-request-id`` (or ``x-request-id``) is recorded and echoed.
- **Streaming**, negotiated from ``Accept`` as prompt flow does: ``text/event-stream`` named
  explicitly and a flow with a streamed output get ``data: {"answer": "<delta>"}`` events, then
  one ``data:`` event with the other outputs (prompt flow sends those first; ours are known only
  when the run ends, and a client merging the events gets the same object either way). Else JSON
  when ``Accept`` allows it (absent, ``*/*``, ``application/json``, ``application/*``); else 406.
- **Errors**: the gateway's error shape plus prompt flow's ``code`` (``UserError`` for a 4xx,
  ``SystemError`` for a 5xx); an error after the stream started is ``event: error`` with
  ``data: {"error": {...}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.gateway.routes.common import (
    CLIENT_REQUEST_ID_HEADER,
    CLIENT_REQUEST_ID_PATTERN,
    VARIANT_HEADER,
    accepted_media_types,
    authorize_by_key,
    optional_header,
    read_json,
)
from services.gateway.routes.errors import ApiError
from services.gateway.routes.score import AcceptedRequest, Reply, run_accepted
from services.gateway.routes.stream import StreamFormat
from services.gateway.routes.variants import choose_variant
from shared import sse
from shared.deployments import Variant
from shared.flow import FlowResult
from shared.flow.streaming import streaming_target

AZUREML_DEPLOYMENT_HEADER = "azureml-model-deployment"
AZURE_CLIENT_REQUEST_ID_HEADER = "x-ms-client-request-id"
VARIANT_HEADERS = (AZUREML_DEPLOYMENT_HEADER, VARIANT_HEADER)
EVENT_STREAM = sse.MEDIA_TYPE
_JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})


def negotiate_stream(request: web.Request, streamed_output: str | None) -> bool:
    """Stream only when asked by name and the flow has an output to stream, as prompt flow does."""
    kinds = accepted_media_types(request)
    if EVENT_STREAM in kinds and streamed_output is not None:
        return True
    if kinds & _JSON_TYPES:
        return False
    supported = f"{EVENT_STREAM}, application/json" if streamed_output is not None else "application/json"
    shown = ", ".join(sorted(kinds))[:200]
    raise ApiError(406, "not_acceptable",
                   f"media type(s) {shown} in the Accept header are not acceptable; supported: {supported}",
                   field="Accept")


def _pf_event(data: Mapping[str, Any], event: str | None = None) -> bytes:
    # prompt flow's format: one JSON object per event, in its own JSON spelling (json.dumps).
    return sse.frame(json.dumps(data, allow_nan=False), event=event)


def _pf_done(result: FlowResult, streamed_output: str | None, sent_delta: bool, _variant: Variant,
             _request_id: str) -> bytes:
    rest = {k: v for k, v in result.outputs.items() if k != streamed_output or not sent_delta}
    return _pf_event(rest) if rest else b""


def error_code(status: int) -> str:
    """prompt flow's error category: the caller's mistake or the service's."""
    return "UserError" if status < 500 else "SystemError"


def _pf_error(error: ApiError, body: dict[str, Any]) -> bytes:
    body["error"]["code"] = error_code(error.status)
    return _pf_event(body, "error")


PF_STREAM = StreamFormat(delta=lambda output, text: _pf_event({output or "output": text}), done=_pf_done,
                         error=_pf_error)


def _headers(accepted: AcceptedRequest) -> dict[str, str]:
    headers = {AZUREML_DEPLOYMENT_HEADER: accepted.variant.id, VARIANT_HEADER: accepted.variant.id}
    if accepted.client_request_id:
        headers[AZURE_CLIENT_REQUEST_ID_HEADER] = accepted.client_request_id
    return headers


def _pf_body(result: FlowResult, _request_id: str, _variant: Variant) -> Any:
    # A flex flow that returned one value, not a mapping: prompt flow answers with the value itself.
    return result.outputs["output"] if result.single_output else dict(result.outputs)


PF_REPLY = Reply(body=_pf_body, stream=PF_STREAM, headers=_headers)


async def score(request: web.Request) -> web.StreamResponse:
    try:
        return await _score(request)
    except ApiError as exc:
        exc.extra.setdefault("code", error_code(exc.status))
        raise


async def _score(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    start_time = datetime.now(UTC)
    runtime, _ = authorize_by_key(request)
    body, size = await read_json(request)
    variant = choose_variant(request, runtime, VARIANT_HEADERS)
    streamed_output, _ = streaming_target(runtime.flow, runtime.executor.plan(variant.id, variant.nodes))
    streaming = negotiate_stream(request, streamed_output)
    # Each header sent is checked, the Azure one's id preferred: a valid one never lets an invalid other through.
    azure_id, own_id = (optional_header(request, name, CLIENT_REQUEST_ID_PATTERN, "1-128 visible ASCII characters")
                        for name in (AZURE_CLIENT_REQUEST_ID_HEADER, CLIENT_REQUEST_ID_HEADER))
    client_request_id = azure_id or own_id
    accepted = AcceptedRequest(runtime, variant, body, size, streaming, client_request_id, started, start_time)
    return await run_accepted(request, accepted, PF_REPLY)
