"""Flex flows (flow.flex.yaml) deployed through the gateway, with real Kafka and llmsim: a class
entry built with a model configuration, an async generator streamed live, @trace spans in the
request's trace, usage in the response event, input validation, and variants that differ by init."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.events.builders import struct_to_dict
from shared.flow.pf_tracing import FUNCTION, INPUTS, OUTPUT
from shared.settings import ServiceSettings
from tests.integration.test_gateway_streaming import sse_events
from tests.support import node_gates
from tests.support.gateway_stack import (
    REPO,
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

FLEX = REPO / "tests" / "fixtures" / "flex_flows"
MODEL_CONFIG = {"connection": "llmsim", "model": "llmsim-chat"}


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys, LlmTap]]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(
            tmp_path / "deployments", tap.url,
            # The fixture deployments' names, reused for the flex flows under test.
            demo={"flow": str(FLEX / "chat-class"), "init": {"model_config": MODEL_CONFIG},
                  "variants": [{"id": "brief", "init": {"persona": "a brief assistant"}},
                               {"id": "thorough", "init": {"persona": "a thorough assistant", "max_tokens": 200}}],
                  "allow_forced_variant": True},
            chat={"flow": str(FLEX / "chat-async-stream"), "init": {"model_config": MODEL_CONFIG}},
            strict={"flow": str(FLEX / "typed-function" / "flow.flex.yaml")},
            # Variants that load different prompty files through an init value.
            standard={"flow": str(FLEX / "chat-prompty"), "init": {"model_config": MODEL_CONFIG},
                      "variants": [{"id": "friendly"}, {"id": "formal", "init": {"prompty": "formal.prompty"}}],
                      "allow_forced_variant": True},
        )
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield gateway, keys, tap


def _parent(span: Any) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_class_entry_answers_with_its_model_config_and_its_trace_spans_nest(
    stack: tuple[Gateway, Keys, LlmTap],
) -> None:
    gateway, keys, tap = stack
    # A batch run keeps its texts, so the @trace spans may hold inputs and outputs.
    headers = {"api-key": keys["demo"], "x-promptpulse-variant": "brief", "x-promptpulse-run": "run-1"}
    async with gateway.session.post(gateway.score_url("demo"), json={"question": "What is a flex flow?"},
                                    headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        reply = await resp.json()
        usage_header = resp.headers["x-promptpulse-usage"]
    assert reply["variant"] == "brief" and isinstance(reply["output"], str) and reply["output"]
    [call] = tap.exchanges  # the flow's own openai client, configured from connections.yaml
    assert call.body["model"] == "llmsim-chat"
    assert call.body["messages"][0] == {"role": "system", "content": "You are a brief assistant."}
    usage = call.usage()
    assert usage_header == (f"prompt={usage['prompt_tokens']}, completion={usage['completion_tokens']}, "
                            f"total={usage['total_tokens']}, calls=1")

    spans = {s.name: s for s in gateway.spans.get_finished_spans()}
    server = spans["POST /v1/deployments/{deployment}/score"]
    workflow = spans["invoke_workflow chat-class"]
    entry = spans["AssistantFlow.__call__"]
    compose, ask, chat = spans["AssistantFlow.compose"], spans["AssistantFlow.ask"], spans["chat llmsim-chat"]
    assert _parent(workflow) == server.context.span_id
    assert _parent(entry) == workflow.context.span_id
    assert _parent(compose) == _parent(ask) == entry.context.span_id
    assert _parent(chat) == ask.context.span_id
    assert {s.context.trace_id for s in (server, workflow, entry, compose, ask, chat)} == {server.context.trace_id}
    assert chat.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert entry.attributes[FUNCTION] == "AssistantFlow.__call__"
    assert json.loads(entry.attributes[INPUTS]) == {"question": "What is a flex flow?", "chat_history": None}
    assert json.loads(entry.attributes[OUTPUT]) == reply["output"]
    assert "llmsim-chat" in compose.attributes[INPUTS] or "brief" in compose.attributes[OUTPUT]

    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 2)
    request, response = events_by_request(records)[reply["request_id"]]
    assert struct_to_dict(request.inputs) == {"question": "What is a flex flow?", "chat_history": None}
    assert struct_to_dict(response.outputs) == {"output": reply["output"]}
    [recorded] = response.usage
    assert (recorded.prompt_tokens, recorded.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_a_request_whose_texts_are_not_kept_has_trace_spans_without_values(
    stack: tuple[Gateway, Keys, LlmTap],
) -> None:
    gateway, keys, _ = stack
    # No evaluation section: nothing is sampled, so the question must stay out of the spans.
    async with gateway.session.post(gateway.score_url("demo"), json={"question": "private question"},
                                    headers={"api-key": keys["demo"]}) as resp:
        assert resp.status == 200, await resp.text()
    traced = [s for s in gateway.spans.get_finished_spans() if FUNCTION in (s.attributes or {})]
    assert {s.name for s in traced} == {"AssistantFlow.__call__", "AssistantFlow.compose", "AssistantFlow.ask"}
    for span in traced:
        assert INPUTS not in span.attributes and OUTPUT not in span.attributes
    assert all("private question" not in json.dumps(dict(s.attributes or {}))
               for s in gateway.spans.get_finished_spans())


async def test_variants_build_the_class_with_their_own_init(stack: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, tap = stack
    for variant in ("brief", "thorough", "brief"):
        headers = {"api-key": keys["demo"], "x-promptpulse-variant": variant}
        async with gateway.session.post(gateway.score_url("demo"), json={"question": "Hi?"}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["variant"] == variant
    systems = [(e.body["messages"][0]["content"], e.body["max_tokens"]) for e in tap.exchanges]
    assert systems == [("You are a brief assistant.", 64), ("You are a thorough assistant.", 200),
                       ("You are a brief assistant.", 64)]


async def test_async_generator_chunks_reach_the_client_before_the_last_is_produced(
    stack: tuple[Gateway, Keys, LlmTap],
) -> None:
    gateway, keys, tap = stack
    question = f"stream {uuid.uuid4().hex[:8]}"
    gate = node_gates.ASYNC_GATES[question] = asyncio.Event()
    deltas: list[str] = []
    done: dict[str, Any] = {}
    headers = {"api-key": keys["chat"], "Accept": "text/event-stream"}
    async with gateway.session.post(gateway.score_url("chat"), json={"question": question}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for name, data in sse_events(resp):
            if name == "delta":
                deltas.append(data["delta"])
                if len(deltas) == 1:
                    # The flow is parked after its first chunk until now: the rest is not yet produced.
                    assert not gate.is_set() and len(tap.exchanges) == 1
                    gate.set()
            else:
                assert name == "done", data
                done = data
    del node_gates.ASYNC_GATES[question]
    assert len(deltas) > 2
    assert done["outputs"] == {"output": "".join(deltas)}
    [call] = tap.exchanges
    assert call.streamed
    usage = call.usage()
    assert done["usage"] == [{"node": "flow:StreamingChat", "model": "llmsim-chat", **usage}]
    assert done["time_to_first_token_ms"] > 0


async def test_pf_score_streams_a_flex_flow_as_pf_flow_serve_does(stack: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, _ = stack
    headers = {"Authorization": f"Bearer {keys['chat']}", "Accept": "text/event-stream"}
    async with gateway.session.post(f"{gateway.url}/score", json={"question": "Hello?"}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        events = [data async for _, data in sse_events(resp)]
    assert len(events) > 2 and all(list(e) == ["output"] for e in events)
    # A flow that returns one value answers JSON with that value itself, as prompt flow's /score does.
    headers = {"Authorization": f"Bearer {keys['demo']}"}
    async with gateway.session.post(f"{gateway.url}/score", json={"question": "Hello?"}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert isinstance(body, str) and body


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"count": 3}, "text", "is required"),
    ({"text": 7}, "text", "must be a string, not a number"),
    ({"text": "a", "count": "3"}, "count", "must be an integer, not a string"),
    ({"text": "a", "ratio": "high"}, "ratio", "must be a number"),
    ({"text": "a", "strict": "yes"}, "strict", "must be true or false"),
    ({"text": None}, "text", "not null"),
])
async def test_inputs_are_checked_against_the_entrys_signature(
    stack: tuple[Gateway, Keys, LlmTap], body: dict[str, Any], field: str, message: str,
) -> None:
    gateway, keys, _ = stack
    async with gateway.session.post(gateway.score_url("strict"), json=body, headers={"api-key": keys["strict"]}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_input" and error["field"] == field and message in error["message"]


async def test_defaults_of_the_signature_apply_and_are_recorded(stack: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, _ = stack
    async with gateway.session.post(gateway.score_url("strict"), json={"text": "ok", "tags": None, "extra": 1},
                                    headers={"api-key": keys["strict"]}) as resp:
        assert resp.status == 200, await resp.text()
        reply = await resp.json()
    assert {k: reply[k] for k in ("text", "repeated", "ratio", "tags", "strict")} == {
        "text": "ok", "repeated": "ok ok", "ratio": 0.5, "tags": [], "strict": False}
    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.inference, 2)
    request, _ = events_by_request(records)[reply["request_id"]]
    assert struct_to_dict(request.inputs) == {"text": "ok", "count": 2, "ratio": 0.5, "tags": None, "options": None,
                                              "strict": False}


async def test_variants_may_answer_through_different_prompty_files(stack: tuple[Gateway, Keys, LlmTap]) -> None:
    gateway, keys, tap = stack
    for variant in ("friendly", "formal"):
        headers = {"api-key": keys["standard"], "x-promptpulse-variant": variant}
        async with gateway.session.post(gateway.score_url("standard"), json={"question": "Hi?"},
                                        headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            reply = await resp.json()
        assert reply["variant"] == variant and reply["output"]
        usage = tap.exchanges[-1].usage()
        assert resp.headers["x-promptpulse-usage"].endswith(f"total={usage['total_tokens']}, calls=1")
    assert [e.body["messages"][0]["content"].strip() for e in tap.exchanges] == [
        "Answer in a friendly tone.", "Answer in a formal tone."]
