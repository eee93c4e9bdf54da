"""prompt flow's own flows through the gateway: a Python node, a prompt node, an LLM node with
variants and ``activate`` conditions (tests/fixtures/flows/standard), a chat flow with history
(tests/fixtures/flows/chat), and a deployment that redacts fields before they enter events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.gateway.redaction import REDACTED
from shared.events.builders import struct_to_dict
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

CONTEXT = "Sampling is a hash of the request id.\nThe default rate is 10 percent.\nJudges score 1 to 5.\n"


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys, LlmTap]]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield gateway, keys, tap


async def _score(gateway: Gateway, keys: Keys, deployment: str, body: dict[str, Any], *, stream: bool = False,
                 variant: str | None = None) -> dict[str, Any]:
    headers = {"api-key": keys[deployment]}
    if variant:
        headers["x-promptpulse-variant"] = variant
    url = gateway.score_url(deployment) + ("?stream=true" if stream else "")
    async with gateway.session.post(url, json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        if not stream:
            return await resp.json()
        lines = [line.decode() async for line in resp.content]
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    done = events[-1]
    assert "".join(e["delta"] for e in events[:-1]) == (done["outputs"]["answer"] or "")
    return {**done["outputs"], "request_id": done["request_id"], "variant": done["variant"]}


@pytest.mark.parametrize("stream", [False, True])
async def test_standard_flow_python_prompt_llm_variant_and_activate(
    stack: tuple[Gateway, Keys, LlmTap], stream: bool,
) -> None:
    gateway, keys, tap = stack
    body = {"question": "How are requests sampled?", "context": CONTEXT, "max_facts": 2}
    reply = await _score(gateway, keys, "standard", body, stream=stream, variant="variant_1")
    assert reply["variant"] == "variant_1"
    assert reply["facts"] == ["Sampling is a hash of the request id.", "The default rate is 10 percent."]
    assert reply["refusal"] is None  # its activate condition (no facts) was not met
    assert reply["answer"]
    [call] = tap.exchanges
    assert call.body["max_tokens"] == 64  # variant_1 of the answer node
    user = call.body["messages"][-1]["content"]
    assert "Sampling is a hash of the request id." in user and "Judges score" not in user  # prompt node output

    # No facts: the prompt and LLM nodes are bypassed, the refusal runs, no LLM call is made.
    reply = await _score(gateway, keys, "standard", {"question": "Anything?", "context": ""}, stream=stream)
    assert reply["answer"] is None and reply["facts"] == []
    assert reply["refusal"] == "I have no facts to answer: Anything?"
    assert len(tap.exchanges) == 1
    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 4)
    _, response = events_by_request(records)[reply["request_id"]]
    assert len(response.usage) == 0
    assert struct_to_dict(response.outputs)["refusal"] == reply["refusal"]


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_flow_with_history(stack: tuple[Gateway, Keys, LlmTap], stream: bool) -> None:
    gateway, keys, tap = stack
    history = [
        {"inputs": {"question": "What is PromptPulse?"}, "outputs": {"answer": "A quality monitor for flows."}},
        {"inputs": {"question": "Does it judge?"}, "outputs": {"answer": "Yes, with LLM judges."}},
    ]
    reply = await _score(gateway, keys, "chat", {"question": "Which judges?", "chat_history": history}, stream=stream)
    assert reply["answer"] and reply["variant"] == "default"
    [call] = tap.exchanges
    assert [(m["role"], m["content"].strip()) for m in call.body["messages"]] == [
        ("system", "You are a helpful assistant."),
        ("user", "What is PromptPulse?"), ("assistant", "A quality monitor for flows."),
        ("user", "Does it judge?"), ("assistant", "Yes, with LLM judges."),
        ("user", "Which judges?"),
    ]
    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 2)
    request, _ = events_by_request(records)[reply["request_id"]]
    assert struct_to_dict(request.inputs)["chat_history"] == history


async def test_redacted_fields_never_reach_the_topics(stack: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, tap = stack
    secret_context = "The launch code is 0000.\nKeep it."
    replies = [await _score(gateway, keys, "redacted", {"question": "What is the code?", "context": secret_context},
                            stream=stream) for stream in (False, True)]
    for reply in replies:
        assert reply["answer"] and reply["answer"] != REDACTED  # the client gets the real answer
    assert "launch code is 0000" in tap.exchanges[0].body["messages"][-1]["content"]  # and so does the flow
    await gateway.publisher.wait_delivered()
    inference = await read_topic(gateway.settings.kafka, gateway.topics.inference, 4)
    tokens = await read_topic(gateway.settings.kafka, gateway.topics.tokens, 1)
    for request, response in events_by_request(inference).values():
        assert struct_to_dict(request.inputs) == {"question": "What is the code?", "context": REDACTED}
        assert struct_to_dict(response.outputs) == {"answer": REDACTED}
    chunks = [c for cs in events_by_request(tokens).values() for c in cs]
    assert chunks and all(c.text == "" and c.token_count > 0 for c in chunks)
    assert all(b"0000" not in r.value for r in inference + tokens)
