"""Span names and attributes of flow runs (OpenTelemetry API only; the service configures the SDK).

Names follow the GenAI semantic conventions: ``invoke_workflow {flow}`` around a run,
``chat {model}`` per LLM call, ``execute_tool {node}`` per Python node; prompt nodes get
``render_prompt {node}``. Our own attributes are namespaced ``promptpulse.*``. Nothing here ever
receives a client's configuration, so no key can reach a span.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from functools import lru_cache
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

TRACER_NAME = "promptpulse.gateway.flow"

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # older name of gen_ai.provider.name, still read by many backends
WORKFLOW_NAME = "gen_ai.workflow.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
TIME_TO_FIRST_CHUNK = "promptpulse.time_to_first_chunk_ms"
NODE_NAME = "promptpulse.flow.node"
NODE_VARIANT = "promptpulse.flow.node_variant"
FLOW_VARIANT = "promptpulse.flow.variant"
STREAMED = "promptpulse.llm.streamed"
CANCELLED = "promptpulse.cancelled"

REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}


def get_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


# What a span skipped by ``unrecorded_child`` is to the code inside it: every call a no-op.
UNRECORDED: nullcontext[trace.Span] = nullcontext(trace.INVALID_SPAN)


def unrecorded_child(tracer: trace.Tracer) -> bool:
    """Whether a span ``tracer`` would start now is certain not to record: the current span is a
    valid span that its trace does not sample, and the tracer's sampler follows the parent's
    decision (the SDK's ``ParentBased``: the default, and every ``OTEL_TRACES_SAMPLER=parentbased_*``).

    Such a span is a NonRecordingSpan that nothing reads (flows send no traceparent upstream; the
    events carry the server span's), so the callers skip it and the attributes they would build
    for it: at one client each skipped span was ~35-60 us of the request's path (docs/gateway.md,
    "Session 10"). Any other sampler (a custom one may record a child of an unsampled span), or no
    current span (the processor, library use), and the span is started as before.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or context.trace_flags.sampled:
        return False
    return _drops_unsampled_children(getattr(tracer, "sampler", None))


_UNSAMPLED_PARENT = trace.set_span_in_context(NonRecordingSpan(SpanContext(
    trace_id=1, span_id=1, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))))


@lru_cache(maxsize=16)
def _drops_unsampled_children(sampler: Any) -> bool:
    """Asked once per sampler: a ParentBased sampler whose delegate for unsampled local parents
    drops the span (ALWAYS_OFF unless built otherwise in code)."""
    try:
        from opentelemetry.sdk.trace.sampling import Decision, ParentBased
    except ImportError:  # pragma: no cover - the SDK is a dependency; without it, no skipping
        return False
    if not isinstance(sampler, ParentBased):
        return False
    return sampler.should_sample(_UNSAMPLED_PARENT, 1, "probe").decision is Decision.DROP


def request_attributes(params: dict[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, name in REQUEST_PARAMS.items():
        value = params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    stop = params.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop
    return attributes


def server_attributes(client: Any) -> dict[str, Any]:
    server = getattr(client, "server", None)  # an LlmEndpoint's (host, port)
    if isinstance(server, tuple):
        host, port = server
    else:  # an openai client's base URL
        url = getattr(client, "base_url", None)
        host, port = getattr(url, "host", None), getattr(url, "port", None)
    if not host:
        return {}
    attributes: dict[str, Any] = {SERVER_ADDRESS: host}
    if isinstance(port, int):
        attributes[SERVER_PORT] = port
    return attributes


# Anything that looks like a credential: OpenAI-style keys (even masked ones, "sk-proj-****abcd")
# and long unbroken tokens. Provider error messages sometimes echo part of the key they refused.
_SECRET_LIKE = re.compile(r"sk-[^\s'\",}]+|[A-Za-z0-9_\-]{32,}")


def redact(message: str, limit: int = 500) -> str:
    """An error message fit for spans, logs and events: no key-like tokens, bounded length."""
    cleaned = _SECRET_LIKE.sub("[redacted]", message)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def record_error(span: trace.Span, error_type: str, message: str) -> None:
    """Mark the span failed. Only the redacted message is recorded, never the exception's repr."""
    span.set_attribute(ERROR_TYPE, error_type)
    span.add_event("exception", {"exception.type": error_type, "exception.message": redact(message)})
    span.set_status(Status(StatusCode.ERROR, error_type))
