"""LLM calls a Python node makes itself with the ``openai`` package: seen and counted.

A flow's Python node may call a model directly (``OpenAI().chat.completions.create(...)``, sync or
async, streamed or not) instead of through an llm node. OpenTelemetry's maintained
instrumentation of the openai package (``opentelemetry-instrumentation-openai-v2``) gives each
such call a ``chat {model}`` span with the ``gen_ai.*`` attributes; this module

- routes those spans to the tracer provider of the flow run that made the call (the
  instrumentation binds one provider per process; tests and several executors use their own), so
  the span is a child of the node's ``execute_tool`` span in the request's trace; a call made
  outside a Python node (a judge, say) gets no span from here, so nothing else in the process
  changes when a flow with Python nodes is loaded;
- turns each finished span into an :class:`LlmCall` of the node, so its usage reaches the response
  event like an llm node's (``usage_reported`` False when the endpoint sent none, e.g. a stream
  without ``stream_options.include_usage``). A call whose span the sampler drops
  (``OTEL_TRACES_SAMPLER``) still counts: it gets a span that records but is never exported.

Message contents are never captured in these spans: texts are governed by the deployment's
redaction and the sampled-only rule of the events, and a span must not hold what an event may not.
The flow's own llm nodes call ``client.post`` (shared/flow/llm.py), which the instrumentation does
not wrap, so their calls are not counted twice.

The instrumentation does not cover the legacy completions API (``client.completions.create``),
which prompt flow's examples still call; a small wrapper here gives those calls the same kind of
span (``text_completion {model}``) through the same routing. A streamed legacy completion is
counted as a call whose usage was not reported (its stream is read after the call returns).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.util.types import Attributes

from shared.flow.result import LlmCall

log = logging.getLogger(__name__)

CAPTURE_CONTENT_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_COUNTED_OPERATIONS = frozenset({"chat", "text_completion", "embeddings"})


@dataclass
class _NodeCalls:
    node: str
    provider: trace.TracerProvider
    spans: list[Any] = field(default_factory=list)


_current: ContextVar[_NodeCalls | None] = ContextVar("promptpulse_python_node_llm_calls", default=None)


class _NodeTracer(trace.Tracer):
    """Starts each span with the provider of the node run it belongs to; outside one, no span."""

    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        self._args = (name, version, schema_url)

    def _tracer(self) -> tuple[trace.Tracer, _NodeCalls | None]:
        calls = _current.get()
        if calls is None:
            return trace.NoOpTracer(), None
        return calls.provider.get_tracer(*self._args), calls

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        tracer, calls = self._tracer()
        span = tracer.start_span(name, *args, **kwargs)
        if calls is not None:
            if not span.is_recording():
                span = _counting_provider().get_tracer(*self._args).start_span(name, *args, **kwargs)
            calls.spans.append(span)
        return span

    # The API types this with its private context-manager wrapper; any context manager of a span
    # is what callers (the instrumentation) use.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        tracer, calls = self._tracer()
        with tracer.start_as_current_span(name, *args, **kwargs) as span:
            if calls is None or span.is_recording():
                if calls is not None:
                    calls.spans.append(span)
                yield span
                return
        # Sampled out (OTEL_TRACES_SAMPLER): a span that records, goes nowhere, still counts the call.
        with _counting_provider().get_tracer(*self._args).start_as_current_span(name, *args, **kwargs) as span:
            calls.spans.append(span)
            yield span


class _NodeTracerProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        return _NodeTracer(instrumenting_module_name, instrumenting_library_version, schema_url)


_instrumented = False
_instrument_lock = threading.Lock()


def observe_openai_calls() -> None:
    """Instrument the openai package once per process (idempotent)."""
    global _instrumented
    with _instrument_lock:
        if _instrumented:
            return
        if os.environ.get(CAPTURE_CONTENT_VARIABLE, "").strip().lower() not in ("", "false", "0", "no"):
            log.warning("%s is ignored: message contents never go into spans (docs/flows.md)", CAPTURE_CONTENT_VARIABLE)
        os.environ[CAPTURE_CONTENT_VARIABLE] = "false"
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=_NodeTracerProvider())
        _wrap_legacy_completions(_NodeTracer("promptpulse.flow.python_llm", None, None))
        _instrumented = True


def _wrap_legacy_completions(tracer: trace.Tracer) -> None:
    from wrapt import wrap_function_wrapper

    def start(kwargs: dict[str, Any]) -> Any:
        model = str(kwargs.get("model") or "")
        return tracer.start_as_current_span(
            f"text_completion {model}",
            kind=trace.SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "text_completion", "gen_ai.system": "openai",
                        "gen_ai.request.model": model, "gen_ai.request.stream": bool(kwargs.get("stream"))},
        )

    def finish(span: trace.Span, result: Any, streamed: bool) -> None:
        if streamed:
            return
        usage = getattr(result, "usage", None)
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.prompt_tokens or 0))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.completion_tokens or 0))
        if getattr(result, "model", None):
            span.set_attribute("gen_ai.response.model", str(result.model))
        reasons = [str(c.finish_reason) for c in getattr(result, "choices", None) or [] if c.finish_reason]
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)

    def sync_create(wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        with start(kwargs) as span:
            result = wrapped(*args, **kwargs)
            finish(span, result, bool(kwargs.get("stream")))
            return result

    async def async_create(wrapped: Any, instance: Any, args: Any, kwargs: dict[str, Any]) -> Any:
        with start(kwargs) as span:
            result = await wrapped(*args, **kwargs)
            finish(span, result, bool(kwargs.get("stream")))
            return result

    wrap_function_wrapper("openai.resources.completions", "Completions.create", sync_create)
    wrap_function_wrapper("openai.resources.completions", "AsyncCompletions.create", async_create)


@contextmanager
def node_llm_calls(node: str, provider: trace.TracerProvider) -> Iterator[list[LlmCall]]:
    """While the block runs, openai calls are spans of ``provider``; on exit the list holds one
    :class:`LlmCall` per call that finished (a stream left unread has no usage to count)."""
    if not isinstance(provider, SdkTracerProvider):
        # No SDK configured (tracing off, a bench): the calls still count. Spans of a provider
        # without processors hold the attributes the count is read from, and go nowhere.
        provider = _counting_provider()
    calls = _NodeCalls(node, provider)
    token = _current.set(calls)
    found: list[LlmCall] = []
    try:
        yield found
    finally:
        _current.reset(token)
        found.extend(_llm_calls(node, calls.spans))


_counting: SdkTracerProvider | None = None


class _RecordOnly(Sampler):
    """Record every span and sample none: its attributes are read here, it is never exported."""

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: trace.SpanKind | None = None, attributes: Attributes = None,
                      *args: Any, **kwargs: Any) -> SamplingResult:
        # The span starts with the attributes a sampler passes on: all of them.
        return SamplingResult(Decision.RECORD_ONLY, attributes)

    def get_description(self) -> str:
        return "RecordOnly"


def _counting_provider() -> SdkTracerProvider:
    # Its own sampler: the environment's (OTEL_TRACES_SAMPLER) may drop spans the count needs.
    global _counting
    if _counting is None:
        _counting = SdkTracerProvider(sampler=_RecordOnly())
    return _counting


def _llm_calls(node: str, spans: Sequence[Any]) -> list[LlmCall]:
    result = []
    for span in spans:
        attributes = getattr(span, "attributes", None) or {}
        end, start = getattr(span, "end_time", None), getattr(span, "start_time", None)
        if end is None or start is None or attributes.get("gen_ai.operation.name") not in _COUNTED_OPERATIONS:
            continue
        prompt = attributes.get("gen_ai.usage.input_tokens")
        completion = attributes.get("gen_ai.usage.output_tokens")
        requested = str(attributes.get("gen_ai.request.model") or "")
        reasons = attributes.get("gen_ai.response.finish_reasons") or ()
        result.append(
            LlmCall(
                node=node,
                model=str(attributes.get("gen_ai.response.model") or requested),
                request_model=requested,
                prompt_tokens=int(prompt or 0),
                completion_tokens=int(completion or 0),
                total_tokens=int(prompt or 0) + int(completion or 0),
                usage_reported=prompt is not None or completion is not None,
                duration_ms=(end - start) / 1e6,
                time_to_first_chunk_ms=None,
                finish_reason=str(reasons[0]) if reasons else None,
                streamed=bool(attributes.get("gen_ai.request.stream", False)),
            )
        )
    return result
