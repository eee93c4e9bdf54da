"""The standard OpenTelemetry sampler settings end to end through the gateway (docs/proxy.md,
"Throughput and tracing"): with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at 0 or
``parentbased_always_off``, the telemetry set-up the gateway runs (shared.telemetry) samples
requests out, yet every request is still recorded once (its request and response events, with
its trace id), counted in the metrics, and chosen for judging as before (by its request id, never by its
trace flags); only its spans are gone. A request
whose application sent a sampled ``traceparent`` keeps its spans (parent-based), which the
proxy+OTLP link needs (docs/otlp.md). PromptPulse's own ``promptpulse_request_ratio`` samples by
request id with the processor's hash (shared/telemetry/sampling.py): the judged requests keep
their traces.

Real Kafka: events on the inference topic, spans through the Kafka span exporter on the spans topic.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.gateway.appkeys import METRICS, PUBLISHER
from shared.events.messages import InferenceRequest, InferenceResponse, InferenceStatus
from shared.sampling import is_sampled
from shared.settings import ServiceSettings
from shared.telemetry import Telemetry, setup_telemetry, shutdown_telemetry
from shared.telemetry.sampling import SAMPLING_KEY
from tests.support.gateway_stack import (
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
    write_proxy_deployment,
)

pytestmark = pytest.mark.integration

APP_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN_ID = "00f067aa0ba902b7"
MESSAGES = [{"role": "system", "content": "Sampling is a hash of the request id."},
            {"role": "user", "content": "How are requests sampled?"}]


@dataclass
class SampledGateway:
    url: str
    key: str
    flow_key: str
    telemetry: Telemetry
    memory: InMemorySpanExporter


@pytest.fixture(params=[("parentbased_traceidratio", "0"), ("parentbased_always_off", None),
                        ("promptpulse_request_ratio", "0")],
                ids=["ratio_0", "always_off", "request_ratio_0"])
def sampler_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name, argument = request.param
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    if argument is None:
        monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    else:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    return name


@pytest.fixture
async def sampled_gateway(settings: ServiceSettings, tmp_path: Path, sampler_env: str) -> AsyncIterator[
        tuple[SampledGateway, Any]]:
    async with _gateway(settings, tmp_path) as found:
        yield found


@asynccontextmanager
async def _gateway(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[SampledGateway, Any]]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        folder = tmp_path / "deployments"
        flow_keys = write_deployments(folder, tap.url)
        key = write_proxy_deployment(folder, "proxy", evaluation={
            "metrics": ["relevance"], "sampling_rate": 1.0, "judge": {"connection": "llmsim", "model": "llmsim-judge"}})
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        # The gateway's own telemetry set-up, spans to the real spans topic: what honours the sampler.
        async with running_gateway(folder, kafka, tmp_path / "spool", spans_to_kafka=True) as gateway:
            assert gateway.telemetry is not None
            yield (SampledGateway(gateway.url, key, flow_keys["demo"], gateway.telemetry, gateway.spans),
                   (gateway.app, kafka, gateway.topics))


def _headers(raw: Any) -> Any:
    # A stream's raw response is wrapped by the openai instrumentation the flow runtime installs.
    headers = getattr(raw, "headers", None)
    return headers if headers is not None else raw.response.headers


def _sampled(traceparent: str) -> bool:
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)  # W3C trace-flags' sampled bit


def _trace_id(traceparent: str) -> str:
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and len(trace_id) == 32 and int(trace_id, 16) and len(span_id) == 16
    return trace_id


async def test_sampled_out_requests_are_recorded_counted_and_judged_without_spans(
        sampled_gateway: tuple[SampledGateway, Any]) -> None:
    gateway, (app, kafka, topics) = sampled_gateway
    assert os.environ["OTEL_TRACES_SAMPLER"] in ("parentbased_traceidratio", "parentbased_always_off",
                                                 "promptpulse_request_ratio")
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0) as client:
        plain = await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=MESSAGES)
        streamed = await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=MESSAGES,
                                                                          stream=True)
        [chunk async for chunk in streamed.parse()]
        # The app's HTTP span sent a sampled trace context: parent-based sampling keeps this one.
        linked = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat", messages=MESSAGES,
            extra_headers={"traceparent": f"00-{APP_TRACE_ID}-{APP_SPAN_ID}-01"})
    async with aiohttp.ClientSession() as session:  # a flow's request: the same rule
        flow = await session.post(f"{gateway.url}/v1/deployments/demo/score",
                                  json={"question": "How are requests sampled?", "context": "By request id."},
                                  headers={"Authorization": f"Bearer {gateway.flow_key}"})
        assert flow.status == 200, await flow.text()
    answers = {"plain": plain.headers, "streamed": _headers(streamed), "linked": linked.headers, "flow": flow.headers}
    ids = {name: headers["x-request-id"] for name, headers in answers.items()}

    await app[PUBLISHER].wait_delivered()
    records = await read_topic(kafka, topics.inference, 8)
    by_request = events_by_request(records)
    assert set(by_request) == set(ids.values())  # nothing else, nothing twice
    for name, request_id in ids.items():
        request, reply = by_request[request_id]  # exactly one request and one response event each
        assert isinstance(request, InferenceRequest) and isinstance(reply, InferenceResponse)
        assert reply.status == InferenceStatus.INFERENCE_STATUS_OK and reply.usage
        # The trace id is there whether or not the trace was sampled: the request detail names it.
        assert _trace_id(request.meta.traceparent) == _trace_id(reply.meta.traceparent)
        assert _trace_id(answers[name]["traceresponse"]) == _trace_id(request.meta.traceparent)
    sampled_out = {by_request[ids[n]][0].meta.traceparent for n in ("plain", "streamed", "flow")}
    assert not any(_sampled(tp) for tp in sampled_out), sampled_out  # the judges' spans follow it: none
    linked_request = by_request[ids["linked"]][0]
    assert _trace_id(linked_request.meta.traceparent) == APP_TRACE_ID and _sampled(linked_request.meta.traceparent)

    runs = app[METRICS].flow_runs
    assert sum(n for (deployment, _, status), n in runs.items() if deployment == "proxy" and status == "ok") == 3
    assert sum(n for (deployment, _, status), n in runs.items() if deployment == "demo" and status == "ok") == 1

    # Spans: only the linked request's, under the app's span, and on the spans topic as one trace.
    spans = gateway.memory.get_finished_spans()
    assert spans and {f"{s.context.trace_id:032x}" for s in spans} == {APP_TRACE_ID}
    server = [s for s in spans if s.attributes.get("promptpulse.request_id") == ids["linked"]]
    assert len(server) == 1 and server[0].parent is not None and f"{server[0].parent.span_id:016x}" == APP_SPAN_ID
    await asyncio.to_thread(shutdown_telemetry, gateway.telemetry)
    exported = await read_topic(kafka, topics.spans, 1)
    traces = set()
    for record in exported:
        message = ExportTraceServiceRequest.FromString(record.value)
        traces |= {span.trace_id.hex() for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans}
    assert traces == {APP_TRACE_ID}


def test_the_sampler_is_the_environments(sampler_env: str, settings: ServiceSettings) -> None:
    # No setting of ours replaces OTEL_TRACES_SAMPLER: the provider the gateway builds uses it.
    telemetry = setup_telemetry("gateway", settings, spans_to_kafka=False, set_global=False)
    try:
        description = telemetry.provider.sampler.get_description()
    finally:
        shutdown_telemetry(telemetry)
    if sampler_env == "promptpulse_request_ratio":
        assert description == "PromptPulseRequestRatio{0.0}"
        return
    expected = "AlwaysOffSampler" if sampler_env == "parentbased_always_off" else "TraceIdRatioBased{0.0}"
    assert description.startswith("ParentBased{root:" + expected)


async def test_by_request_id_every_judged_request_keeps_its_trace(
        settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "promptpulse_request_ratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    async with _gateway(settings, tmp_path) as (gateway, (app, kafka, topics)):
        async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0) as client:
            answers = [await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=MESSAGES)
                       for _ in range(16)]
        ids = [answer.headers["x-request-id"] for answer in answers]
        await app[PUBLISHER].wait_delivered()
        by_request = events_by_request(await read_topic(kafka, topics.inference, 2 * len(ids)))
        assert set(by_request) == set(ids)  # every request recorded, traced or not
        spans = gateway.memory.get_finished_spans()
    in_sample = {i for i in ids if is_sampled(i, 0.5)}
    assert in_sample and in_sample != set(ids), "16 ids should fall on both sides of 0.5"
    servers = {s.attributes["promptpulse.request_id"]: s for s in spans if s.kind is SpanKind.SERVER}
    assert set(servers) == in_sample  # traced exactly when the request id is in the ratio
    # Whatever a deployment judges at a rate up to the ratio is among them (the sample only grows with the rate).
    assert {i for i in ids if is_sampled(i, 0.25)} <= set(servers)
    for request_id, server in servers.items():
        assert SAMPLING_KEY not in server.attributes  # the sampler's input, never stored
        children = [s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id]
        assert [c.kind for c in children] == [SpanKind.CLIENT]  # the upstream call followed its parent
        assert _sampled(by_request[request_id][0].meta.traceparent)  # what the processor's judge span follows
    for request_id in set(ids) - in_sample:
        assert not _sampled(by_request[request_id][0].meta.traceparent)
    assert len(spans) == 2 * len(in_sample)
