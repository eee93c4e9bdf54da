"""shared.telemetry.otlp_wire writes what opentelemetry's reference encoder (encode_spans) builds.

Compared message by message after parsing (and byte for byte: both write fields in number
order), over spans with every attribute type, events, links, statuses, remote parents, trace
state, several resources and scopes, and attributes the reference drops.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from shared.telemetry.otlp_wire import TraceEncoder

pytestmark = pytest.mark.timeout(120)


def _reference(spans: list[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def _same(spans: list[ReadableSpan]) -> None:
    ours = TraceEncoder().request(spans)
    assert ExportTraceServiceRequest.FromString(ours) == encode_spans(spans)
    assert ours == _reference(spans)


@pytest.fixture
def recorded():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def test_gateway_like_spans_encode_the_same(recorded) -> None:
    provider, memory = recorded
    tracer = provider.get_tracer("promptpulse.gateway", "1.2", schema_url="https://opentelemetry.io/schemas/1.26.0")
    flow = provider.get_tracer("promptpulse.gateway.flow")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("vendor", "v1"), ("other", "x")]))
    with tracer.start_as_current_span("POST /v1/deployments/{deployment}/score", kind=SpanKind.SERVER,
                                      context=set_span_in_context(NonRecordingSpan(remote)),
                                      attributes={"http.request.method": "POST", "server.port": 8080}):
        with flow.start_as_current_span("invoke_workflow demo", attributes={"promptpulse.llm.streamed": False}):
            with flow.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as chat:
                chat.set_attributes({"gen_ai.request.temperature": 0.2, "gen_ai.response.finish_reasons": ["stop"],
                                     "gen_ai.usage.input_tokens": 0, "empty": "", "flags": [True, False],
                                     "sizes": [1, -2, 2**62], "ratios": [0.5, -1e300], "none_yet": []})
                chat.add_event("exception", {"exception.type": "RateLimitError", "exception.message": "é ✓"})
                chat.add_event("", {})
                chat.set_status(Status(StatusCode.ERROR, "RateLimitError"))
        with tracer.start_as_current_span("linked", links=[Link(remote, {"why": "batch"}), Link(remote)]) as s:
            s.set_status(StatusCode.OK)
    spans = list(memory.get_finished_spans())
    assert len(spans) == 4
    _same(spans)
    for one in spans:
        _same([one])


def _span(name: str, resource: Resource, scope: InstrumentationScope | None, attributes: dict, **extra) -> ReadableSpan:
    context = SpanContext(extra.pop("trace_id", 7), extra.pop("span_id", 9), is_remote=False)
    return ReadableSpan(name=name, context=context, resource=resource, attributes=attributes,
                        instrumentation_scope=scope, start_time=extra.pop("start", 0), end_time=extra.pop("end", None),
                        **extra)


def test_resources_scopes_and_odd_spans_group_and_encode_the_same() -> None:
    first, equal_copy, other = (Resource({"service.name": "a"}), Resource({"service.name": "a"}),
                                Resource({"service.name": "b"}, schema_url="https://example.com/schema"))
    scope = InstrumentationScope("lib", None, None, None)
    scoped = InstrumentationScope("lib2", "0.1", "https://example.com/s", None)
    spans = [
        _span("", first, None, {}),
        _span("x", equal_copy, scope, {"k": "v"}, start=1, end=2),  # equal resources share one group
        _span("y", other, scoped, {"k": 1}, kind=SpanKind.PRODUCER,
              events=[Event("e", {"a": 1}, timestamp=5)], status=Status(StatusCode.UNSET)),
        _span("z", first, scoped, {"nested": {"a": [1, "b"]}}, kind=SpanKind.CONSUMER),  # a Mapping value
        _span("w", first, scope, {"big": 2**70, "fine": True, "bad": object(), "bytes": b"\x00\x01"}),
    ]
    _same(spans)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.text(max_size=8),
    st.one_of(
        st.text(max_size=20), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
        st.floats(allow_nan=False), st.binary(max_size=8),
        st.lists(st.text(max_size=5), max_size=4), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
        st.lists(st.booleans(), max_size=3), st.lists(st.floats(allow_nan=False), max_size=3),
    ),
    max_size=6,
), st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=1, max_value=2**128 - 1))
def test_any_attributes_encode_the_same(attributes, start, trace_id) -> None:
    resource = Resource({"service.name": "gateway"})
    spans = [_span("s", resource, InstrumentationScope("t", "1"), attributes, start=start, trace_id=trace_id,
                   status=Status(StatusCode.ERROR, "failed"))]
    _same(spans)


def test_repeated_attributes_encode_the_same_as_their_first_time() -> None:
    # Repeated attribute fields are kept once encoded (otlp_wire._KNOWN): equal values of other
    # types (True == 1 == 1.0, 0.0 == -0.0) must still encode as themselves.
    resource = Resource({"service.name": "gateway"})
    scope = InstrumentationScope("t", "1")
    values = [True, 1, "1", 1.0, False, 0, 0.0, -0.0, True, 1, "x" * 300, "x" * 300]
    for round_ in range(2):
        spans = [_span(f"s{round_}-{n}", resource, scope, {"promptpulse.value": value, "same": "route"})
                 for n, value in enumerate(values)]
        _same(spans)
