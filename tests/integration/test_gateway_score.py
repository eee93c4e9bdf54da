"""The score endpoint end to end: real HTTP, real llmsim behind a recording tap, real Kafka.

Every assertion reads real state: the reply, the topics, what llmsim sent over the wire.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.gateway.routes.common import VARIANT_HEADER
from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceRequest, InferenceResponse, InferenceStatus
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration

QUESTION = {"question": "How are requests sampled?", "context": "Sampling is a hash of the request id.\nIt is 10 percent."}


@dataclass
class Stack:
    gateway: Gateway
    keys: Keys
    tap: LlmTap

    def headers(self, deployment: str = "demo", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[deployment]}", **extra}


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url,
                                 demo={"variants": [{"id": "variant_0", "weight": 80}, {"id": "variant_1", "weight": 20}],
                                       "allow_forced_variant": True})
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield Stack(gateway, keys, tap)


async def test_non_streaming_reply_headers_and_events(stack: Stack) -> None:
    gateway = stack.gateway
    headers = stack.headers(**{"x-request-id": "client-42", "x-promptpulse-run": "run-7"})
    async with gateway.session.post(gateway.score_url("demo"), json=QUESTION, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        reply = await resp.json()
        response_headers = resp.headers
    request_id = reply["request_id"]
    assert response_headers["x-request-id"] == request_id != "client-42"
    assert uuid.UUID(request_id).version == 7
    assert reply["variant"] in ("variant_0", "variant_1")
    assert isinstance(reply["answer"], str) and reply["answer"]
    version, trace_id, span_id, flags = response_headers["traceresponse"].split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)

    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 2)
    events = events_by_request(records)[request_id]
    assert [type(e) for e in events] == [InferenceRequest, InferenceResponse]
    request, response = events
    assert request.client_request_id == "client-42"
    assert struct_to_dict(request.inputs) == QUESTION
    assert not request.streaming
    for event in events:
        assert event.meta.request_id == request_id
        assert event.meta.deployment == "demo"
        assert event.meta.variant == reply["variant"]
        assert event.meta.run_id == "run-7"
        assert event.meta.traceparent.split("-")[1] == trace_id
    assert response.status == InferenceStatus.INFERENCE_STATUS_OK
    assert struct_to_dict(response.outputs) == {"answer": reply["answer"]}
    assert response.latency_ms > 0 and not response.HasField("time_to_first_token_ms")
    # Usage is what llmsim sent, token for token, and the variant went along to the LLM.
    [exchange] = stack.tap.exchanges
    [usage] = response.usage
    sent = exchange.usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        sent["prompt_tokens"], sent["completion_tokens"], sent["total_tokens"])
    assert usage.completion_tokens > 0 and usage.node == "answer" and usage.model == "llmsim-chat"
    assert response_headers["x-promptpulse-usage"] == (
        f"prompt={sent['prompt_tokens']}, completion={sent['completion_tokens']}, "
        f"total={sent['total_tokens']}, calls=1")
    assert exchange.headers[VARIANT_HEADER] == reply["variant"]
    assert {r.key.decode() for r in records} == {request_id}


async def test_forced_variant_is_run_and_sent_to_the_llm(stack: Stack) -> None:
    gateway = stack.gateway
    for variant, max_tokens in (("variant_1", 128), ("variant_0", 256)):
        async with gateway.session.post(gateway.score_url("demo"), json=QUESTION,
                                        headers=stack.headers(**{VARIANT_HEADER: variant})) as resp:
            assert resp.status == 200
            assert (await resp.json())["variant"] == variant
        exchange = stack.tap.exchanges[-1]
        assert exchange.headers[VARIANT_HEADER] == variant
        assert exchange.body["max_tokens"] == max_tokens  # the variant's own node really ran


async def test_weighted_split_holds_over_many_requests(stack: Stack) -> None:
    gateway = stack.gateway
    n = 300
    seen: Counter[str] = Counter()
    for _ in range(n):
        async with gateway.session.post(gateway.score_url("demo"), json=QUESTION, headers=stack.headers()) as resp:
            assert resp.status == 200
            seen[(await resp.json())["variant"]] += 1
    # 80/20 split: variant_0 ~ Binomial(300, 0.8), sd ~6.9. Five standard deviations either side
    # fails a correct gateway about once in 1.7 million runs, and a 50/50 one every time.
    expected, sd = n * 0.8, math.sqrt(n * 0.8 * 0.2)
    assert abs(seen["variant_0"] - expected) <= 5 * sd, seen
    assert seen["variant_0"] + seen["variant_1"] == n
    assert Counter(e.headers[VARIANT_HEADER] for e in stack.tap.exchanges) == seen
