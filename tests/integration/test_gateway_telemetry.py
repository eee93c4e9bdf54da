"""One trace per request: the caller's trace, the server span, invoke_workflow, the node spans,
and the same trace context on the request's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    Llmsim,
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys, Llmsim]]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield gateway, keys, sim


@pytest.mark.parametrize("stream", [False, True])
async def test_server_span_is_the_parent_of_the_flow_and_of_the_events(
    stack: tuple[Gateway, Keys, Llmsim], stream: bool,
) -> None:
    gateway, keys, _ = stack
    headers = {"api-key": keys["standard"], "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    url = gateway.score_url("standard") + ("?stream=true" if stream else "")
    async with gateway.session.post(url, json={"context": "One fact.\n"}, headers=headers) as resp:
        assert resp.status == 200
        await resp.read()
        request_id = resp.headers["x-request-id"]
        traceresponse = resp.headers["traceresponse"]
    spans = {s.name: s for s in gateway.spans.get_finished_spans()}
    server = spans["POST /v1/deployments/{deployment}/score"]
    assert server.kind == SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert f"{server.parent.span_id:016x}" == CALLER_SPAN
    assert server.attributes["http.route"] == "/v1/deployments/{deployment}/score"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["promptpulse.request_id"] == request_id
    assert traceresponse == f"00-{CALLER_TRACE}-{server.context.span_id:016x}-01"

    workflow = spans["invoke_workflow standard"]
    assert workflow.parent.span_id == server.context.span_id
    nodes = [s for s in spans.values() if s.parent is not None and s.parent.span_id == workflow.context.span_id]
    assert {"execute_tool select_facts", "render_prompt format_facts", "chat gpt-3.5-turbo"} <= {s.name for s in nodes}
    chat = spans["chat gpt-3.5-turbo"]
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    # A streaming chat span ends when its stream does, so it cannot end after the server span.
    assert chat.end_time <= server.end_time

    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 2)
    for event in events_by_request(records)[request_id]:
        assert event.meta.traceparent == traceresponse
    for record in records:
        assert dict(record.headers)["traceparent"].decode() == traceresponse


async def test_failed_llm_call_marks_the_server_span_and_the_chat_span(stack: tuple[Gateway, Keys, Llmsim]) -> None:
    gateway, keys, sim = stack
    await sim.control("faults", {"fault": "500", "count": 1})
    async with gateway.session.post(gateway.score_url("demo"), json={}, headers={"api-key": keys["demo"]}) as resp:
        assert resp.status == 502
    spans = {s.name: s for s in gateway.spans.get_finished_spans()}
    server = spans["POST /v1/deployments/{deployment}/score"]
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 502
    assert spans["chat llmsim-chat"].attributes["error.type"] == "InternalServerError"


async def test_health_probes_are_not_traced(stack: tuple[Gateway, Keys, Llmsim]) -> None:
    gateway, _, _ = stack
    for path in ("/healthz", "/readyz", "/metrics"):
        async with gateway.session.get(gateway.url + path) as resp:
            assert resp.status == 200
    assert gateway.spans.get_finished_spans() == ()
