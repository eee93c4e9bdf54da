"""POST /v1/traces with OpenTelemetry's own OTLP/HTTP exporter: spans reach the spans topic.

The exporter is opentelemetry-exporter-otlp-proto-http's OTLPSpanExporter, as an application
would configure it (endpoint and an authorization header), so the wire format is theirs.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult

from shared.otlp_ingest.decode import attributes
from shared.settings import ServiceSettings
from shared.topics import delete_topics, ensure_topics
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    kafka_for,
    read_topic,
    running_gateway,
    write_deployments,
)
from tests.support.otlp_apps import (
    ANSWER,
    QUESTION,
    App,
    agent_tree,
    current_chat,
    export_bytes,
    export_json,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys]]:
    # every trace sampled in "demo" (its texts kept), none in "chat"
    keys = write_deployments(
        tmp_path / "deployments",
        "http://127.0.0.1:9",
        demo={"evaluation": {"metrics": ["relevance"], "sampling_rate": 1.0,
                             "judge": {"connection": "llmsim", "model": "judge"}},
              "column_mapping": {"question": "inputs.question", "answer": "outputs.answer"}},
        # sampled too, and it redacts one input field: the spans' input texts
        redacted={"evaluation": {"metrics": ["fluency"], "sampling_rate": 1.0,
                                 "judge": {"connection": "llmsim", "model": "judge"}},
                  "column_mapping": {"answer": "outputs.answer"},
                  "redaction": {"inputs": ["context"], "outputs": []}},
    )
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
        await ensure_topics(kafka, [gateway.topics.spans])
        try:
            yield gateway, keys
        finally:
            await delete_topics(kafka, [gateway.topics.spans])


def exporter(gateway: Gateway, key: str, **options: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=f"{gateway.url}/v1/traces", headers={"authorization": f"Bearer {key}"},
                            timeout=10, **options)


def stored_spans(records: list[Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(trace id key, span attributes, event names -> attributes) of every span on the topic."""
    out = []
    for record in records:
        export = ExportTraceServiceRequest.FromString(record.value)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    assert record.key.decode() == span.trace_id.hex()
                    events = {event.name: attributes(event.attributes) for event in span.events}
                    out.append((span.name, attributes(span.attributes), events))
    return out


async def test_the_sdk_exporter_delivers_spans_stamped_with_the_key_s_deployment(stack):
    gateway, keys = stack
    app = App(service="variant_1")
    agent_tree(app)
    with app.tracer.start_as_current_span("chat forged") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "promptpulse.deployment": "chat",
                             "promptpulse.request_id": "forged"})
    for compression in (Compression.NoCompression, Compression.Gzip):
        result = await asyncio.to_thread(exporter(gateway, keys["demo"], compression=compression).export, app.spans())
        assert result is SpanExportResult.SUCCESS
    await gateway.publisher.wait_delivered()
    spans = stored_spans(await read_topic(gateway.settings.kafka, gateway.topics.spans, 2))
    assert len(spans) == 10  # five spans, sent twice (the assembler dedupes; the topic keeps both)
    for _name, attrs, _events in spans:
        assert attrs["promptpulse.deployment"] == "demo"  # never what the sender wrote
        assert attrs["promptpulse.variant"] == "variant_1"  # service.name names a variant
        assert attrs["promptpulse.ingest"] == "otlp"
        assert "promptpulse.request_id" not in attrs
    agent = next(attrs for name, attrs, _ in spans if name == "invoke_agent ParcelAgent")
    assert QUESTION in agent["gen_ai.input.messages"]  # sampled: texts kept
    assert gateway.spans.get_finished_spans() == ()  # the ingest route is not traced


async def test_unsampled_traces_lose_their_texts_and_json_bodies_are_accepted(stack):
    gateway, keys = stack
    app = App()
    current_chat(app)
    async with gateway.session.post(f"{gateway.url}/v1/traces", data=export_json(app.spans()),
                                    headers={"api-key": keys["chat"], "content-type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}
    await gateway.publisher.wait_delivered()
    [(name, attrs, _)] = stored_spans(await read_topic(gateway.settings.kafka, gateway.topics.spans, 1))
    assert attrs["promptpulse.deployment"] == "chat"
    assert attrs["gen_ai.usage.input_tokens"] == 21  # counts stay
    for text in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"):
        assert text not in attrs


async def test_a_deployment_s_named_field_redaction_applies_to_the_spans_it_receives(stack):
    gateway, keys = stack
    app = App()
    current_chat(app)
    agent_tree(app)
    result = await asyncio.to_thread(exporter(gateway, keys["redacted"]).export, app.spans())
    assert result is SpanExportResult.SUCCESS
    await gateway.publisher.wait_delivered()
    spans = stored_spans(await read_topic(gateway.settings.kafka, gateway.topics.spans, 2))
    assert len(spans) == 5
    chat = next(attrs for name, attrs, _ in spans if name == "chat gpt-4o-mini" and "gen_ai.input.messages" in attrs)
    # the input side (where the context and the question are) is redacted, the answer is not
    assert chat["gen_ai.input.messages"] == "[REDACTED]"
    assert chat["gen_ai.system_instructions"] == "[REDACTED]"
    assert ANSWER in chat["gen_ai.output.messages"]
    assert chat["gen_ai.usage.input_tokens"] == 21
    assert QUESTION not in json.dumps([attrs for _, attrs, _ in spans])


async def test_a_bad_span_inside_well_formed_protobuf_is_a_400_and_nothing_is_published(stack):
    gateway, keys = stack
    app = App()
    agent_tree(app)
    export = ExportTraceServiceRequest.FromString(export_bytes(app.spans()))
    export.resource_spans[0].scope_spans[0].spans[-1].trace_id = bytes(16)  # the last span only
    async with gateway.session.post(f"{gateway.url}/v1/traces", data=export.SerializeToString(),
                                    headers={"api-key": keys["demo"], "content-type": "application/x-protobuf"}) as resp:
        assert resp.status == 400
        assert "traceId" in (await resp.json())["error"]["message"]
    current_chat(app)  # a good export after it: the only record on the topic
    result = await asyncio.to_thread(exporter(gateway, keys["demo"]).export, app.spans()[-1:])
    assert result is SpanExportResult.SUCCESS
    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.spans, 1)
    assert [name for name, _, _ in stored_spans(records)] == ["chat gpt-4o-mini"]


@pytest.mark.parametrize(
    "body, content_type, status, named",
    [
        (b"\x0a\xff\xff\xff\xff", "application/x-protobuf", 400, "protobuf"),
        (b"{nope", "application/json", 400, "not JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "application/json", 400, "traceId"),
        (b"hello", "text/plain", 415, "application/x-protobuf"),
    ],
)
async def test_garbage_gets_a_4xx_naming_the_problem(stack, body, content_type, status, named):
    gateway, keys = stack
    async with gateway.session.post(f"{gateway.url}/v1/traces", data=body,
                                    headers={"api-key": keys["demo"], "content-type": content_type}) as resp:
        assert resp.status == status
        assert named in (await resp.json())["error"]["message"]
    # and the gateway still serves
    app = App()
    current_chat(app)
    result = await asyncio.to_thread(exporter(gateway, keys["demo"]).export, app.spans())
    assert result is SpanExportResult.SUCCESS


async def test_without_a_valid_key_nothing_is_accepted(stack):
    gateway, _keys = stack
    app = App()
    current_chat(app)
    for headers in ({}, {"authorization": "Bearer not-a-key"}):
        async with gateway.session.post(f"{gateway.url}/v1/traces", data=export_bytes(app.spans()),
                                        headers={**headers, "content-type": "application/x-protobuf"}) as resp:
            assert resp.status == 401


async def test_an_export_over_the_limit_is_refused_even_when_gzip_hides_it(settings, tmp_path):
    keys = write_deployments(tmp_path / "deployments", "http://127.0.0.1:9")
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool",
                               otlp_max_body_bytes=64 * 1024) as gateway:
        big = json.dumps({"resourceSpans": [], "padding": "x" * 200_000}).encode()
        squeezed = gzip.compress(big)
        assert len(squeezed) < 64 * 1024
        async with gateway.session.post(
            f"{gateway.url}/v1/traces", data=squeezed,
            headers={"api-key": keys["demo"], "content-type": "application/json", "content-encoding": "gzip"},
        ) as resp:
            assert resp.status == 413
            assert "limit" in (await resp.json())["error"]["message"]
