"""The gateway exports its spans from its own event loop (shared/telemetry/loop_exporter.py):
no exporter thread runs beside the request loop, every span reaches the spans topic, secrets
are masked, spans ended on another thread are exported too, and shutdown flushes.

Real Kafka (events and spans topics), llmsim as the upstream of a proxy deployment.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import Any
from unittest.mock import patch

import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.gateway import app as gateway_app
from services.gateway.app import create_app, start_gateway
from services.gateway.appkeys import TRACER_PROVIDER
from shared.settings import ServiceSettings, TelemetrySettings
from shared.telemetry import LoopKafkaSpanExporter, make_resource, setup_telemetry
from shared.telemetry import setup as telemetry_setup
from shared.topics import Topics, delete_topics, ensure_topics
from tests.support.gateway_stack import (
    LlmTap,
    create_topics,
    gateway_settings,
    kafka_for,
    llmsim_server,
    read_topic,
    write_deployments,
    write_proxy_deployment,
)

pytestmark = pytest.mark.integration

SECRET = "sk-proj-abcdefghijklmnop1234"
MESSAGES = [{"role": "user", "content": "Where do the spans go?"}]


def _exported(records: list[Any]) -> list[tuple[str, str]]:
    """(trace id, span id) of every span in the spans topic's records, duplicates kept."""
    found = []
    for record in records:
        message = ExportTraceServiceRequest.FromString(record.value)
        found += [(s.trace_id.hex(), s.span_id.hex()) for rs in message.resource_spans
                  for ss in rs.scope_spans for s in ss.spans]
    return found


def _ids(spans: Any) -> list[tuple[str, str]]:
    return [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans]


def _exporter_threads() -> list[str]:
    # BatchSpanProcessor's worker and KafkaSpanExporter's private loop; asyncio's executor threads
    # (the spool's file work) are not exporters.
    return [t.name for t in threading.enumerate()
            if t.name.startswith("OtelBatch") or t.name.endswith("-spans-loop")]


@pytest.mark.timeout(120)
async def test_the_gateway_exports_every_span_from_its_loop_and_flushes_at_shutdown(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    topics = await create_topics(kafka)
    await ensure_topics(kafka, [topics.spans])
    # The gateway's own telemetry set-up, only not made the process's global provider (other tests).
    monkeypatch.setattr(gateway_app, "setup_telemetry", functools.partial(setup_telemetry, set_global=False))
    try:
        async with llmsim_server() as sim, LlmTap(sim.url) as tap:
            folder = tmp_path / "deployments"
            write_deployments(folder, tap.url)
            key = write_proxy_deployment(folder, "proxy")
            gateway = gateway_settings(folder, kafka, tmp_path / "spool").model_copy(
                update={"telemetry": TelemetrySettings(spans_to_kafka=True)})
            app = create_app(gateway, handle_sighup=False)
            runner = await start_gateway(app, "127.0.0.1", 0)
            memory = InMemorySpanExporter()  # what the provider ended, to compare with the topic
            app[TRACER_PROVIDER].add_span_processor(SimpleSpanProcessor(memory))
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {key}"}
            try:
                async with aiohttp.ClientSession() as session:
                    async def call(index: int) -> None:
                        body: dict[str, Any] = {"model": "llmsim-chat", "messages": MESSAGES}
                        if index % 2:
                            body["stream"] = True
                        async with session.post(url, json=body, headers=headers) as resp:
                            assert resp.status == 200, await resp.text()
                            await resp.read()

                    for start in range(0, 60, 6):  # a few at a time, several drains' worth
                        await asyncio.gather(*(call(i) for i in range(start, start + 6)))
                    # A span ended on another thread (a flow's Python tool runs in one), holding a secret.
                    tracer = app[TRACER_PROVIDER].get_tracer("it")

                    def in_a_thread() -> None:
                        with tracer.start_as_current_span("execute_tool lookup") as span:
                            span.set_attribute("error.detail", f"Incorrect API key provided: {SECRET}")

                    await asyncio.to_thread(in_a_thread)
                    await asyncio.sleep(0.3)  # several drain intervals: spans are on their way now
                    assert _exporter_threads() == []
            finally:
                await runner.cleanup()  # telemetry last: its flush must publish what is still queued
        ended = _ids(memory.get_finished_spans())
        assert len(ended) >= 60 * 2 + 1  # a server and a client span per request, and the thread's
        records = await read_topic(kafka, topics.spans, 1)
    finally:
        await delete_topics(kafka, [topics.inference, topics.tokens, topics.feedback, topics.spans])
    exported = _exported(records)
    assert sorted(exported) == sorted(ended)  # every span, once
    assert not any(SECRET.encode() in r.value for r in records)
    assert any(b"[REDACTED]" in r.value for r in records)
    assert all(dict(r.headers)["pp-event-type"] == b"otlp.traces" for r in records)


async def test_the_loop_exporter_drops_and_counts_past_its_queue_bound_and_breeds_no_spans(
    settings: ServiceSettings, unique_name: str,
) -> None:
    isolated = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"topic_prefix": f"{unique_name}."})})
    spans_topic = Topics.from_settings(isolated).spans
    await ensure_topics(isolated, [spans_topic], partitions=2)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=make_resource("it-loop"))
    exporter = LoopKafkaSpanExporter(isolated, spans_topic, asyncio.get_running_loop(), client_id="it-loop-spans",
                                     max_queue=100, interval=0.05)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # Any tracer the export path asks the API for records into this provider: a span made while
    # publishing spans would show up in ``memory``.
    tracer = provider.get_tracer("it")
    with patch.object(trace, "get_tracer", lambda *args, **kwargs: tracer):
        try:
            for number in range(60):  # no await in between: nothing drains, 120 spans meet a bound of 100
                with tracer.start_as_current_span(f"invoke_workflow {number}"), tracer.start_as_current_span("chat"):
                    pass
            await asyncio.sleep(0.3)  # drained now, and more fit
            for number in range(30):
                with tracer.start_as_current_span(f"later {number}"):
                    pass
            await asyncio.to_thread(provider.shutdown)  # flushes what is queued
            records = await read_topic(isolated, spans_topic, 1)
        finally:
            await delete_topics(isolated, [spans_topic])
    ended = _ids(memory.get_finished_spans())
    assert len(ended) == 150  # the exporter's producer made no spans of its own
    exported = _exported(records)
    assert len(exported) == 130 and set(exported) <= set(ended)  # 100 of the first 120, the later 30
    assert set(ended[-30:]) <= set(exported)  # the later ones: every one, flushed at shutdown
    assert exporter.dropped_spans == 20
    assert exporter.exported_messages == len(records)


@pytest.mark.timeout(180)
async def test_the_gateway_exports_every_span_under_concurrent_load(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """24 clients at once, 720 requests: every span reaches the topic, none dropped.

    With a fixed slice the drain fell behind under load (one slice per few loop iterations) and
    the queue grew until its bound dropped spans (~44% at 20 clients). The default bound (8,192)
    takes tens of thousands of requests to reach; a bound of 512 shows a drain that falls behind
    within a few hundred, while one that keeps up stays well under it.
    """
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    topics = await create_topics(kafka)
    await ensure_topics(kafka, [topics.spans])
    monkeypatch.setattr(gateway_app, "setup_telemetry", functools.partial(setup_telemetry, set_global=False))
    monkeypatch.setattr(telemetry_setup, "LoopKafkaSpanExporter",
                        functools.partial(LoopKafkaSpanExporter, max_queue=512))
    clients, each = 24, 30
    try:
        async with llmsim_server() as sim:
            folder = tmp_path / "deployments"
            write_deployments(folder, sim.url)
            key = write_proxy_deployment(folder, "proxy")
            gateway = gateway_settings(folder, kafka, tmp_path / "spool").model_copy(
                update={"telemetry": TelemetrySettings(spans_to_kafka=True)})
            app = create_app(gateway, handle_sighup=False)
            runner = await start_gateway(app, "127.0.0.1", 0)
            memory = InMemorySpanExporter()
            app[TRACER_PROVIDER].add_span_processor(SimpleSpanProcessor(memory))
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/v1/chat/completions"
            headers = {"Authorization": f"Bearer {key}"}
            try:
                connector = aiohttp.TCPConnector(limit=clients)
                async with aiohttp.ClientSession(connector=connector) as session:
                    async def client() -> None:
                        for _ in range(each):  # back to back, like wrk
                            async with session.post(url, json={"model": "llmsim-chat", "messages": MESSAGES},
                                                    headers=headers) as resp:
                                assert resp.status == 200, await resp.text()
                                await resp.read()

                    await asyncio.gather(*(client() for _ in range(clients)))
                    async with session.get(f"http://{host}:{port}/metrics") as resp:
                        scraped = await resp.text()
            finally:
                await runner.cleanup()
        ended = _ids(memory.get_finished_spans())
        assert len(ended) >= clients * each * 2  # a server and a client span per request
        records = await read_topic(kafka, topics.spans, 1)
    finally:
        await delete_topics(kafka, [topics.inference, topics.tokens, topics.feedback, topics.spans])
    exported = _exported(records)
    assert len(exported) == len(ended) and sorted(exported) == sorted(ended)  # every span, once
    assert "promptpulse_gateway_spans_dropped_total 0.0" in scraped
