"""``promptpulse_request_ratio`` (shared/telemetry/sampling.py): sampled by request id where the
gateway's server span gives one, parent-based otherwise."""

from __future__ import annotations

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from shared.sampling import is_sampled
from shared.telemetry.sampling import SAMPLING_KEY, RequestRatioSampler, sampler_from_env

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
IDS = [f"019a-{n:04d}" for n in range(400)]


def parent(*, remote: bool, sampled: bool) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=remote, trace_flags=flags)
    return set_span_in_context(NonRecordingSpan(context))


def decide(sampler: RequestRatioSampler, request_id: str | None, context: Context | None = None,
           trace_id: int = TRACE_ID) -> Decision:
    attributes = {"http.request.method": "POST", **({SAMPLING_KEY: request_id} if request_id else {})}
    return sampler.should_sample(context, trace_id, "POST /v1/chat/completions", attributes=attributes).decision


def test_a_root_span_is_sampled_by_its_request_id_as_the_processor_judges_it() -> None:
    sampler = RequestRatioSampler(0.3)
    traced = {i for i in IDS if decide(sampler, i) is Decision.RECORD_AND_SAMPLE}
    assert traced == {i for i in IDS if is_sampled(i, 0.3)}
    assert 60 < len(traced) < 180  # both sides: the test could fail
    # A deployment judging at 0.1 or 0.3 finds every judged request traced.
    assert {i for i in IDS if is_sampled(i, 0.1)} <= traced


def test_the_request_id_is_taken_out_of_the_span_attributes() -> None:
    request_id = next(i for i in IDS if is_sampled(i, 0.5))
    result = RequestRatioSampler(0.5).should_sample(
        None, TRACE_ID, "POST", attributes={SAMPLING_KEY: request_id, "url.path": "/v1/responses"})
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert dict(result.attributes) == {"url.path": "/v1/responses"}


def test_parents_decide_where_they_should() -> None:
    sampler = RequestRatioSampler(0.5)
    inside = next(i for i in IDS if is_sampled(i, 0.5))
    outside = next(i for i in IDS if not is_sampled(i, 0.5))
    # A caller's sampled trace keeps its spans (the proxy+OTLP link reads them).
    assert decide(sampler, outside, parent(remote=True, sampled=True)) is Decision.RECORD_AND_SAMPLE
    # A caller's unsampled trace does not take a judged request's trace away...
    assert decide(sampler, inside, parent(remote=True, sampled=False)) is Decision.RECORD_AND_SAMPLE
    assert decide(sampler, outside, parent(remote=True, sampled=False)) is Decision.DROP
    # ...and a span under it with no request id (a judge call of an untraced request) is dropped.
    assert decide(sampler, None, parent(remote=True, sampled=False)) is Decision.DROP
    # Spans inside the process follow their parent whatever they carry.
    assert decide(sampler, outside, parent(remote=False, sampled=True)) is Decision.RECORD_AND_SAMPLE
    assert decide(sampler, inside, parent(remote=False, sampled=False)) is Decision.DROP


def test_a_root_span_without_a_request_id_is_sampled_by_trace_id() -> None:
    sampler = RequestRatioSampler(0.5)
    assert decide(sampler, None, trace_id=1) is Decision.RECORD_AND_SAMPLE  # low trace ids are in
    assert decide(sampler, None, trace_id=2**64 - 1) is Decision.DROP  # the ratio reads the low 64 bits


@pytest.mark.parametrize(("name", "argument", "rate"), [
    ("promptpulse_request_ratio", "0.25", 0.25),
    ("PromptPulse_Request_Ratio", "1", 1.0),
    ("promptpulse_request_ratio", "lots", 1.0),  # as the SDK does with a bad argument: trace everything
    ("promptpulse_request_ratio", "1.5", 1.0),
    ("parentbased_traceidratio", "0.25", None),  # the SDK's own: left to the SDK
])
def test_the_environment_chooses_it(monkeypatch: pytest.MonkeyPatch, name: str, argument: str,
                                    rate: float | None) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    sampler = sampler_from_env()
    assert (sampler.rate if isinstance(sampler, RequestRatioSampler) else None) == rate
