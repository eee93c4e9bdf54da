"""Trace sampling that keeps the trace of every judged request.

OpenTelemetry's ``parentbased_traceidratio`` samples by trace id, the processor judges by
request id (shared/sampling.py), so with both at 10% only about one judged request in ten kept
its trace: the request an on-call engineer opens from a low score was usually the one without
a trace. ``OTEL_TRACES_SAMPLER=promptpulse_request_ratio`` with ``OTEL_TRACES_SAMPLER_ARG=R``
samples a request's trace by its request id instead, with the processor's hash: because a
request sampled at a rate is sampled at every higher rate, every request a deployment judges at
``sampling_rate <= R`` keeps its whole trace (gateway, flow nodes, LLM call, judge calls), and R
of the other requests too.

The decision is made when the gateway's server span starts: the gateway passes the request id
in the start attributes as ``promptpulse.sampling.request_id`` (only when this sampler is the
tracer's), and the sampler takes it out again, so no span stores it (the span's own
``promptpulse.request_id`` is set by the route once the request is accepted, as before: the OTLP
assembler reads a server span with one as a call the gateway counted). Otherwise the sampler is parent-based: a span follows its parent in
the same process; a caller's sampled ``traceparent`` is honoured (the proxy+OTLP link reads the
gateway's server span of the caller's trace, docs/otlp.md); a caller's unsampled one does not
stop a judged request's trace. A root span without a request id (a service's own work) is
sampled by trace id at R, and a span under an unsampled remote parent without one (the
processor's judge call of an untraced request) is dropped, so no trace is left in pieces.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from shared.sampling import sampler as request_sampler

log = logging.getLogger(__name__)

REQUEST_RATIO = "promptpulse_request_ratio"
SAMPLING_KEY = "promptpulse.sampling.request_id"  # a start attribute, never stored


class _ByRequestId(Sampler):
    """Sampled when the span's start attributes carry a request id in the ratio; ``fallback``
    decides spans without one."""

    def __init__(self, rate: float, fallback: Sampler) -> None:
        self._rate = rate
        self._in_sample = request_sampler(rate)
        self._fallback = fallback

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        request_id = attributes.get(SAMPLING_KEY) if attributes else None
        if not isinstance(request_id, str):
            return self._fallback.should_sample(parent_context, trace_id, name, kind, attributes, links)
        parent = get_current_span(parent_context).get_span_context()
        state = parent.trace_state if parent.is_valid else None
        if self._in_sample(request_id.encode("utf-8", "surrogatepass")):
            kept = {key: value for key, value in attributes.items() if key != SAMPLING_KEY}  # type: ignore[union-attr]
            return SamplingResult(Decision.RECORD_AND_SAMPLE, kept, state)
        return SamplingResult(Decision.DROP, None, state)

    def get_description(self) -> str:
        return f"ByRequestId{{{self._rate}}}"


class RequestRatioSampler(ParentBased):
    """``promptpulse_request_ratio`` at ``rate`` (see the module's docstring)."""

    def __init__(self, rate: float) -> None:
        super().__init__(
            root=_ByRequestId(rate, TraceIdRatioBased(rate)),
            remote_parent_not_sampled=_ByRequestId(rate, ALWAYS_OFF),
        )
        self.rate = rate

    def get_description(self) -> str:
        return f"PromptPulseRequestRatio{{{self.rate}}}"


def sampler_from_env() -> Sampler | None:
    """Our sampler when ``OTEL_TRACES_SAMPLER`` names it; None leaves the choice to the SDK,
    which reads the same variables for its own samplers."""
    if os.environ.get(OTEL_TRACES_SAMPLER, "").strip().lower() != REQUEST_RATIO:
        return None
    raw = os.environ.get(OTEL_TRACES_SAMPLER_ARG, "")
    try:
        rate = float(raw)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(raw)
    except ValueError:
        # As the SDK does for its ratio samplers: a bad argument is not a reason not to start.
        log.warning("%s=%r is not a rate in [0, 1]; tracing every request", OTEL_TRACES_SAMPLER_ARG, raw)
        rate = 1.0
    return RequestRatioSampler(rate)


__all__ = ["REQUEST_RATIO", "SAMPLING_KEY", "RequestRatioSampler", "sampler_from_env"]
