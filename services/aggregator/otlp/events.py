"""A derived request as the request and response events a gateway would have published.

The ids are derived (shared/otlp_ingest/ids.py), so deriving the same request again, after a
crash or from a re-sent export, writes the same events: consumers drop the repeat by event id.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events.builders import dict_to_struct, timestamp
from shared.events.messages import (
    EventMeta,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    LlmUsage,
)
from shared.otlp_ingest.genai import DerivedRequest
from shared.otlp_ingest.ids import derived_event_id


def _moment(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)


def _meta(request: DerivedRequest, deployment: str, variant: str, kind: str, at_ns: int) -> EventMeta:
    meta = EventMeta(
        event_id=derived_event_id(request.request_id, kind, at_ns),
        request_id=request.request_id,
        deployment=deployment,
        variant=variant,
        traceparent=f"00-{request.trace_id}-{request.root_span_id}-01",
    )
    meta.event_time.CopyFrom(timestamp(_moment(at_ns)))
    meta.request_start_time.CopyFrom(timestamp(_moment(request.start_ns)))
    return meta


def request_events(
    request: DerivedRequest, deployment: str, variant: str
) -> tuple[InferenceRequest, InferenceResponse]:
    first = InferenceRequest(
        meta=_meta(request, deployment, variant, "request", request.start_ns),
        inputs=dict_to_struct(request.inputs),
    )
    response = InferenceResponse(
        meta=_meta(request, deployment, variant, "response", request.end_ns),
        status=InferenceStatus.INFERENCE_STATUS_OK if request.ok else InferenceStatus.INFERENCE_STATUS_ERROR,
        error_type=request.error_type[:100],
        error_message=request.error_message[:1000],
        latency_ms=request.latency_ms,
        usage=[
            LlmUsage(
                node=call.name[:200],
                model=call.model[:200],
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                total_tokens=call.prompt_tokens + call.completion_tokens,
            )
            for call in request.calls
        ],
        outputs=dict_to_struct(request.outputs),
    )
    return first, response
