"""A failing node reaches the client with what it can act on: the node, the exception type and
its message (secrets redacted), in the same text as the trace and the stored response event.

Real llmsim (its fault injection for the LLM failures), real Kafka (the response event is read
back from the topic), the gateway's spans from its in-memory exporter.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.events.messages import InferenceResponse, InferenceStatus
from shared.settings import ServiceSettings
from tests.support.failing_flow import SECRET, write_reviewed
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

@dataclass
class Stack:
    gateway: Gateway
    keys: Keys
    sim: Llmsim
    reviewed_key: str

    async def post(self, deployment: str, key: str, *, stream: bool) -> tuple[int, str, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {key}"}
        url = self.gateway.score_url(deployment) + ("?stream=true" if stream else "")
        async with self.gateway.session.post(url, json={}, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), {"text": await resp.text(),
                                                                         "request_id": resp.headers["x-request-id"]}


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        folder = tmp_path / "deployments"
        keys = write_deployments(folder, tap.url)
        reviewed_key = write_reviewed(folder)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(folder, kafka, tmp_path / "spool") as gateway:
            yield Stack(gateway, keys, sim, reviewed_key)


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def workflow_exception(stack: Stack) -> dict[str, Any]:
    spans = [s for s in stack.gateway.spans.get_finished_spans() if s.name.startswith("invoke_workflow")]
    events = [e for s in spans for e in s.events if e.name == "exception"]
    assert events, [s.name for s in spans]
    return dict(events[-1].attributes or {})


async def stored_responses(stack: Stack, count: int) -> dict[str, InferenceResponse]:
    await stack.gateway.publisher.wait_delivered()
    records = await read_topic(stack.gateway.settings.kafka, stack.gateway.topics.inference, 2 * count)
    return {rid: events[-1] for rid, events in events_by_request(records).items()}


async def test_a_python_node_failure_names_node_type_and_redacted_message_like_trace_and_event(stack: Stack) -> None:
    status, content_type, got = await stack.post("reviewed", stack.reviewed_key, stream=False)
    assert status == 500 and content_type.startswith("application/json"), got
    body = json.loads(got["text"])
    error = body["error"]
    assert error["type"] == "node_failed"
    assert error["node"] == "review" and error["exception_type"] == "ValueError"
    assert error["exception_message"] == "the reviewer refused the answer with reviewer key [redacted] at hand"
    assert error["message"] == ("node 'review': ValueError: the reviewer refused the answer "
                                "with reviewer key [redacted] at hand")
    assert SECRET not in got["text"]
    # The trace says the same.
    exception = workflow_exception(stack)
    assert exception == {"exception.type": "ValueError", "exception.message": error["message"]}

    # Streamed: the answer streams first, so the failure ends the stream as an error event.
    status, content_type, streamed = await stack.post("reviewed", stack.reviewed_key, stream=True)
    assert status == 200 and content_type.startswith("text/event-stream"), streamed
    events = sse_events(streamed["text"])
    assert [name for name, _ in events[:-1]] == ["delta"] * (len(events) - 1) and len(events) > 1
    name, last = events[-1]
    assert name == "error" and last["request_id"] == streamed["request_id"]
    assert last["error"] == error
    assert SECRET not in streamed["text"]

    responses = await stored_responses(stack, 2)
    for request_id in (body["request_id"], streamed["request_id"]):
        response = responses[request_id]
        assert response.status == InferenceStatus.INFERENCE_STATUS_ERROR
        assert response.error_type == "node_failed" and response.error_message == error["message"]


async def test_an_llm_failure_names_node_type_and_message_like_the_stored_response(stack: Stack) -> None:
    answers = []
    for stream in (False, True):  # streamed: the failure comes before any text, so it is a JSON 502 too
        await stack.sim.control("faults", {"fault": "429", "count": 1})
        status, content_type, got = await stack.post("demo", stack.keys["demo"], stream=stream)
        assert status == 502 and content_type.startswith("application/json"), got
        error = json.loads(got["text"])["error"]
        assert error["type"] == "llm_rate_limited" and error["node"] == "answer"
        assert error["exception_type"] == "RateLimitError" == error["llm_error"] and error["llm_status"] == 429
        assert error["exception_message"] and error["exception_message"] in error["message"]
        assert error["message"].startswith("node 'answer': RateLimitError: ")
        answers.append((got["request_id"], error["message"]))
    assert workflow_exception(stack)["exception.message"] == answers[-1][1]
    responses = await stored_responses(stack, 2)
    for request_id, message in answers:
        assert responses[request_id].error_message == message
