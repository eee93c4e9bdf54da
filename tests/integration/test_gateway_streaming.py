"""Streamed score requests against real llmsim and Kafka: tokens as they arrive, order on both
topics, usage, and a client that walks away mid-answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.llmsim.settings import LatencyModel
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

# Slow enough that a whole answer takes about a second: tokens visibly trickle.
PACED = LatencyModel(ttft_ms=0, tokens_per_second=50, jitter=0)
QUESTION = {"question": "How does the gateway stream tokens to clients while the model writes them?",
            "context": "The gateway streams tokens.\nClients read server-sent events."}


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    name = None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name or "message", json.loads(line[6:])
            name = None


@pytest.fixture
async def paced(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys, LlmTap]]:
    async with llmsim_server(latency=PACED) as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield gateway, keys, tap


async def test_tokens_stream_as_llmsim_writes_them_and_events_keep_order(paced: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, tap = paced
    headers = {"api-key": keys["demo"], "Accept": "text/event-stream", "x-promptpulse-variant": "variant_0"}
    deltas: list[str] = []
    done: dict[str, Any] | None = None
    produced_at_first_token = -1
    async with gateway.session.post(gateway.score_url("demo"), json=QUESTION, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        request_id = resp.headers["x-request-id"]
        async for name, data in sse_events(resp):
            if name == "delta":
                if not deltas:
                    # The first token is here while llmsim is still writing the answer.
                    [exchange] = tap.exchanges
                    assert not exchange.finished
                    produced_at_first_token = exchange.content_chunks()
                deltas.append(data["delta"])
            else:
                assert name == "done", data
                done = data
    assert done is not None and len(deltas) > 10
    assert 1 <= produced_at_first_token < len(deltas) / 2  # far from the last token
    answer = "".join(deltas)
    assert done["outputs"] == {"answer": answer}
    assert done["request_id"] == request_id and done["variant"] == "variant_0"
    [exchange] = tap.exchanges
    assert exchange.finished and exchange.streamed
    assert exchange.content_chunks() == len(deltas)
    sent = exchange.usage()
    [usage] = done["usage"]
    assert {k: usage[k] for k in sent} == sent
    assert done["time_to_first_token_ms"] > 0

    await gateway.publisher.wait_delivered()
    inference = events_by_request(await read_topic(gateway.settings.kafka, gateway.topics.inference, 2))
    request, response = inference[request_id]
    assert isinstance(request, InferenceRequest) and request.streaming
    assert isinstance(response, InferenceResponse)
    assert response.status == InferenceStatus.INFERENCE_STATUS_OK
    assert struct_to_dict(response.outputs) == {"answer": answer}
    assert response.HasField("time_to_first_token_ms")
    assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in response.usage] == [
        (sent["prompt_tokens"], sent["completion_tokens"], sent["total_tokens"])]
    # Chunks: one request id, numbered without gaps, the answer in order, far fewer than tokens.
    chunks = events_by_request(await read_topic(gateway.settings.kafka, gateway.topics.tokens, 1))[request_id]
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == answer
    assert sum(c.token_count for c in chunks) == len(deltas)
    assert [c.token_offset for c in chunks] == [sum(c.token_count for c in chunks[:i]) for i in range(len(chunks))]
    assert 1 < len(chunks) < len(deltas)
    assert {c.output for c in chunks} == {"answer"}


async def test_stream_query_parameter_and_a_flow_without_streamable_output(paced: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, _ = paced
    async with gateway.session.post(gateway.score_url("chat") + "?stream=true", headers={"api-key": keys["chat"]},
                                    json={"question": "What is a chat flow?", "chat_history": []}) as resp:
        assert resp.status == 200
        events = [e async for e in sse_events(resp)]
    assert events[-1][0] == "done"
    assert "".join(d["delta"] for n, d in events if n == "delta") == events[-1][1]["outputs"]["answer"]
    async with gateway.session.post(gateway.score_url("chat") + "?stream=false", headers={
            "api-key": keys["chat"], "Accept": "text/event-stream"}, json={"question": "Hi?"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"


async def test_client_disconnect_cancels_the_llm_call_and_records_cancelled(
    paced: tuple[Gateway, Keys, LlmTap],
) -> None:
    gateway, keys, tap = paced
    headers = {"api-key": keys["demo"], "Accept": "text/event-stream", "x-promptpulse-variant": "variant_0"}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(gateway.score_url("demo"), json=QUESTION, headers=headers)
        assert resp.status == 200
        request_id = resp.headers["x-request-id"]
        async for name, _ in sse_events(resp):
            assert name == "delta"
            break
        resp.close()  # drop the connection mid-answer, as a closed browser tab does
    [exchange] = tap.exchanges
    await asyncio.wait_for(exchange.done_event.wait(), 10)
    assert exchange.abandoned and not exchange.finished  # the gateway hung up on the LLM
    await gateway.publisher.wait_delivered()
    request, response = events_by_request(
        await read_topic(gateway.settings.kafka, gateway.topics.inference, 2))[request_id]
    assert response.status == InferenceStatus.INFERENCE_STATUS_CANCELLED
    assert not response.outputs.fields
    assert response.HasField("time_to_first_token_ms")
    assert len(response.usage) == 0  # the call never finished, so the endpoint reported no usage
