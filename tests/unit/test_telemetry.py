"""Trace context in Kafka headers, messaging spans, span encoding and redaction (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.settings import ServiceSettings
from shared.telemetry import (
    consumer_span,
    encode_traces,
    extract_context,
    inject_headers,
    make_resource,
    producer_span,
    redact_span,
    setup_telemetry,
    trace_key,
)


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(memory: InMemorySpanExporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("test")


@dataclass
class Record:
    topic: str = "promptpulse.inference"
    partition: int = 2
    offset: int = 41
    key: Any = b"request-1"
    value: Any = b"body"
    headers: Any = ()


def _ids(span) -> tuple[int, int]:
    return span.get_span_context().trace_id, span.get_span_context().span_id


def test_inject_then_extract_gives_the_same_span_context(tracer) -> None:
    with tracer.start_as_current_span("send") as span:
        headers = inject_headers([("pp-event-type", b"inference.request")])
    names = [name for name, _ in headers]
    assert names == ["pp-event-type", "traceparent"]
    trace_id, span_id = _ids(span)
    version_ids, flags = dict(headers)["traceparent"].decode().rsplit("-", 1)
    assert version_ids == f"00-{trace_id:032x}-{span_id:016x}"
    assert int(flags, 16) & 0x01  # sampled

    extracted = trace.get_current_span(extract_context(headers)).get_span_context()
    assert (extracted.trace_id, extracted.span_id) == (trace_id, span_id)
    assert extracted.is_remote


def test_inject_replaces_an_old_trace_context_and_adds_none_without_a_span(tracer) -> None:
    stale = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("k", b"v")]
    assert inject_headers(stale) == stale  # no active span: the record keeps what it had
    with tracer.start_as_current_span("send") as span:
        headers = inject_headers(stale)
    assert [n for n, _ in headers].count("traceparent") == 1
    assert f"{_ids(span)[0]:032x}".encode() in dict(headers)["traceparent"]
    assert ("k", b"v") in headers


def test_extract_reads_mapping_headers_as_faust_hands_them_over(tracer) -> None:
    with tracer.start_as_current_span("send") as span:
        headers = dict(inject_headers())
    assert trace.get_current_span(extract_context(headers)).get_span_context().trace_id == _ids(span)[0]


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("traceparent", b"garbage")],
        [("traceparent", b"\xff\xfe")],
        [("traceparent", None)],
        [("traceparent", "00-not-bytes")],
        "not headers at all",
        [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],  # all-zero ids are invalid
    ],
)
def test_malformed_headers_give_no_parent_and_never_raise(headers) -> None:
    assert not trace.get_current_span(extract_context(headers)).get_span_context().is_valid


def test_consumer_span_is_child_of_producer_span(tracer, memory) -> None:
    with producer_span("promptpulse.inference", key=b"request-1", tracer=tracer) as outgoing:
        pass
    with consumer_span(Record(headers=outgoing.headers), group_id="processor", tracer=tracer) as span:
        assert trace.get_current_span() is span  # work done here nests under it
    send, process = memory.get_finished_spans()

    assert (send.name, send.kind) == ("send promptpulse.inference", SpanKind.PRODUCER)
    assert (process.name, process.kind) == ("process promptpulse.inference", SpanKind.CONSUMER)
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert process.attributes == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "promptpulse.inference",
        "messaging.destination.partition.id": "2",
        "messaging.kafka.offset": 41,
        "messaging.kafka.message.key": "request-1",
        "messaging.message.body.size": 4,
        "messaging.consumer.group.name": "processor",
    }
    assert send.attributes["messaging.kafka.message.key"] == "request-1"


def test_consumer_span_without_trace_headers_joins_the_current_trace(tracer, memory) -> None:
    with tracer.start_as_current_span("poll") as outer:
        with consumer_span(Record(key=b"\xff\x00"), operation="receive", tracer=tracer):
            pass
    receive = memory.get_finished_spans()[0]
    assert receive.name == "receive promptpulse.inference"
    assert receive.parent.span_id == outer.get_span_context().span_id
    assert receive.attributes["messaging.kafka.message.key"] == "ff00"  # not UTF-8: hex


def test_consumer_span_records_a_failure(tracer, memory) -> None:
    with pytest.raises(ValueError):
        with consumer_span(Record(), tracer=tracer):
            raise ValueError("judge answer unparseable")
    (span,) = memory.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"


def _two_traces(tracer, memory, children: int = 2):
    with tracer.start_as_current_span("root"):
        for i in range(children):
            with tracer.start_as_current_span(f"child-{i}") as child:
                child.set_attribute("payload", "x" * 2000)
    with tracer.start_as_current_span("other"):
        pass
    return memory.get_finished_spans()


def test_encode_traces_makes_one_message_per_trace_keyed_by_trace_id(tracer, memory) -> None:
    spans = _two_traces(tracer, memory)
    messages, dropped = encode_traces(spans)
    assert dropped == 0 and len(messages) == 2
    for key, value in messages:
        request = ExportTraceServiceRequest.FromString(value)
        decoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert {s.trace_id.hex() for s in decoded} == {key.decode()}
    by_key = {key: value for key, value in messages}
    root_trace = next(s for s in spans if s.name == "root").context.trace_id
    root_request = ExportTraceServiceRequest.FromString(by_key[trace_key(root_trace)])
    assert {s.name for s in root_request.resource_spans[0].scope_spans[0].spans} == {
        "root", "child-0", "child-1"
    }


def test_encode_traces_splits_an_oversized_trace_and_drops_only_unfittable_spans(tracer, memory) -> None:
    spans = _two_traces(tracer, memory, children=4)
    messages, dropped = encode_traces(spans, max_message_bytes=4500)
    root_key = trace_key(next(s for s in spans if s.name == "root").context.trace_id)
    parts = [v for k, v in messages if k == root_key]
    assert len(parts) > 1 and all(len(v) <= 4500 for v in parts)
    names = [s.name for v in parts for rs in ExportTraceServiceRequest.FromString(v).resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == ["child-0", "child-1", "child-2", "child-3", "root"]
    assert dropped == 0
    _, dropped = encode_traces(spans, max_message_bytes=1000)
    assert dropped == 4  # each child alone is > 2000 bytes; root and other still fit


def test_redact_span_masks_secrets_and_keeps_clean_spans_as_they_are(tracer, memory) -> None:
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attribute("gen_ai.usage.input_tokens", 12)
        span.set_attribute("error.detail", "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwx")
        span.add_event("exception", {"exception.message": "401 for Bearer pp_abcdefghijklmnopqrstuvwxyz"})
        span.set_status(StatusCode.ERROR, "auth failed with api_key=hunter2hunter2")
    with tracer.start_as_current_span("clean") as clean:
        clean.set_attribute("gen_ai.request.model", "gpt-4o")
    dirty, clean_span = memory.get_finished_spans()

    masked = redact_span(dirty)
    assert masked.attributes["error.detail"] == "Incorrect API key provided: [REDACTED]"
    assert masked.attributes["gen_ai.usage.input_tokens"] == 12
    assert masked.events[0].attributes["exception.message"] == "401 for Bearer [REDACTED]"
    assert masked.status.description == "auth failed with api_key=[REDACTED]"
    assert masked.context == dirty.context and masked.parent == dirty.parent
    assert redact_span(clean_span) is clean_span


def test_resource_names_the_service() -> None:
    attributes = make_resource("processor", "1.2.3").attributes
    assert attributes["service.name"] == "processor"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["service.namespace"] == "promptpulse"


def test_setup_without_kafka_or_otlp_builds_a_working_local_provider(memory, monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    telemetry = setup_telemetry(
        "aggregator", ServiceSettings(), spans_to_kafka=False,
        span_processors=[SimpleSpanProcessor(memory)], set_global=False,
    )
    assert telemetry.kafka_exporter is None and not telemetry.otlp_enabled
    with telemetry.tracer().start_as_current_span("ingest"):
        pass
    telemetry.shutdown()
    telemetry.shutdown()  # idempotent
    (span,) = memory.get_finished_spans()
    assert span.resource.attributes["service.name"] == "aggregator"
