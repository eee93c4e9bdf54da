"""Traces across the real broker: a consumer span is the producer span's child, and spans
published to the spans topic are one OTLP message per trace, keyed by trace id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.kafka import make_consumer, make_producer
from shared.settings import ServiceSettings
from shared.telemetry import (
    KafkaSpanExporter,
    consumer_span,
    producer_span,
    setup_telemetry,
    shutdown_telemetry,
)
from shared.topics import Topics, delete_topics, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(memory: InMemorySpanExporter):
    provider = TracerProvider(resource=Resource.create({"service.name": "it"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider.get_tracer("it")
    provider.shutdown()


@pytest.fixture
async def topic(settings: ServiceSettings, unique_name: str) -> AsyncIterator[str]:
    await ensure_topics(settings, [unique_name], partitions=2)
    yield unique_name
    await delete_topics(settings, [unique_name])


async def _read_all(settings, topic: str, count: int) -> list:
    consumer = make_consumer(settings, topic, group_id=None, client_id="it-reader")
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(20):
            while len(records) < count:
                for part in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(part)
        for part in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(part)  # anything beyond ``count`` is a failure the caller sees
    finally:
        await consumer.stop()
    return records


async def test_consumer_span_is_a_child_of_the_producer_span(
    settings: ServiceSettings, topic: str, tracer, memory: InMemorySpanExporter
) -> None:
    producer = make_producer(settings, "it-gateway")
    await producer.start()
    try:
        with producer_span(topic, key=b"request-1", tracer=tracer) as outgoing:
            metadata = await producer.send_and_wait(
                topic, b"traced", key=b"request-1", headers=outgoing.headers
            )
            outgoing.record_metadata(metadata)
        # Its positive twin's opposite: a record sent without trace headers.
        await producer.send_and_wait(topic, b"untraced", key=b"request-2")
    finally:
        await producer.stop()

    for record in await _read_all(settings, topic, 2):
        with consumer_span(record, group_id="it-processor", tracer=tracer):
            pass

    names = sorted(s.name for s in memory.get_finished_spans())
    assert names == [f"process {topic}", f"process {topic}", f"send {topic}"]
    sent = next(s for s in memory.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    processed = [s for s in memory.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    traced = next(s for s in processed if s.attributes["messaging.kafka.message.key"] == "request-1")
    untraced = next(s for s in processed if s.attributes["messaging.kafka.message.key"] == "request-2")

    assert traced.context.trace_id == sent.context.trace_id
    assert traced.parent is not None and traced.parent.span_id == sent.context.span_id
    assert traced.parent.is_remote
    assert traced.attributes["messaging.system"] == "kafka"
    assert traced.attributes["messaging.destination.name"] == topic
    assert traced.attributes["messaging.kafka.offset"] == metadata.offset
    assert traced.attributes["messaging.destination.partition.id"] == str(metadata.partition)
    assert traced.attributes["messaging.consumer.group.name"] == "it-processor"
    assert sent.attributes["messaging.kafka.offset"] == metadata.offset

    assert untraced.parent is None
    assert untraced.context.trace_id != sent.context.trace_id


# Spans that bred spans would flush forever: fail in a minute rather than at the suite limit.
@pytest.mark.timeout(60)
async def test_span_exporter_publishes_one_message_per_trace(
    settings: ServiceSettings, unique_name: str, memory: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Export only on flush, so the batch holds both traces whole, whatever the machine's speed.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    isolated = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"{unique_name}."})}
    )
    spans_topic = Topics.from_settings(isolated).spans
    await ensure_topics(isolated, [spans_topic], partitions=2)
    try:
        telemetry = setup_telemetry(
            "it-service", isolated, spans_to_kafka=True,
            span_processors=[SimpleSpanProcessor(memory)], set_global=False,
        )
        tracer = telemetry.tracer("it")
        # Any tracer the export path asks the API for records into this same provider, so a
        # span created while publishing spans would show up in ``memory`` below.
        monkeypatch.setattr(trace, "get_tracer", lambda *args, **kwargs: tracer)
        with tracer.start_as_current_span("invoke_workflow chat"):
            with tracer.start_as_current_span("chat gpt-4o") as chat:
                chat.set_attribute("error.detail", "Incorrect API key provided: sk-proj-abcdefghijklmnop1234")
            with tracer.start_as_current_span("execute_tool lookup"):
                pass
        with tracer.start_as_current_span("process promptpulse.inference"):
            pass
        await asyncio.to_thread(shutdown_telemetry, telemetry)

        created = memory.get_finished_spans()
        # Publishing spans created no spans of its own: only the four above exist.
        assert len(created) == 4
        assert telemetry.kafka_exporter.exported_messages == 2

        records = await _read_all(isolated, spans_topic, 2)
    finally:
        await delete_topics(isolated, [spans_topic])

    assert len(records) == 2
    assert any(b"[REDACTED]" in r.value for r in records)
    expected = {}
    for span in created:
        expected.setdefault(format(span.context.trace_id, "032x"), set()).add(span.name)
    for record in records:
        request = ExportTraceServiceRequest.FromString(record.value)
        (resource_spans,) = request.resource_spans
        service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        assert service["service.name"] == "it-service"
        spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
        assert {s.trace_id.hex() for s in spans} == {record.key.decode()}
        assert {s.name for s in spans} == expected.pop(record.key.decode())
        assert b"sk-proj-abcdefghijklmnop" not in record.value
        assert dict(record.headers)["pp-event-type"] == b"otlp.traces"
    assert expected == {}, "a trace was not published"


async def test_spans_also_go_to_an_otlp_endpoint_when_one_is_set(
    settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        telemetry = setup_telemetry("it-otlp", settings, spans_to_kafka=False, set_global=False)
        assert telemetry.otlp_enabled and telemetry.kafka_exporter is None
        with telemetry.tracer("it").start_as_current_span("chat model") as span:
            span.set_attribute("http.request.header.authorization", "Bearer pp_secretsecretsecret123")
        await asyncio.to_thread(shutdown_telemetry, telemetry)
    finally:
        await runner.cleanup()

    assert len(received) == 1
    request = ExportTraceServiceRequest.FromString(received[0])
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert span.name == "chat model"
    assert {a.key: a.value.string_value for a in span.attributes} == {
        "http.request.header.authorization": "Bearer [REDACTED]"
    }


async def test_span_exporter_fails_softly_when_the_broker_is_away(memory) -> None:
    unreachable = ServiceSettings().kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    exporter = KafkaSpanExporter(
        unreachable, "nowhere.spans", client_id="it-spans", send_timeout=5, request_timeout_ms=2000
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("it").start_as_current_span("lost"):
        pass
    try:
        result = await asyncio.to_thread(exporter.export, memory.get_finished_spans())
        assert result is SpanExportResult.FAILURE
        assert exporter.dropped_spans == 1
    finally:
        await asyncio.to_thread(exporter.shutdown)
    assert await asyncio.to_thread(exporter.export, memory.get_finished_spans()) is SpanExportResult.FAILURE
