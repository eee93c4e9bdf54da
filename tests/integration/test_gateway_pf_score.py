"""``POST /score``: a client written for ``pf flow serve`` / an Azure ML online endpoint runs
against the gateway with only its base URL and key changed (issue 12.6).

The client below is written the way prompt flow's "enable streaming mode" how-to writes one:
``requests`` posting JSON to ``/score`` with ``Authorization: Bearer <key>`` and ``Accept``
negotiating the stream, the stream read with ``sseclient-py``'s ``SSEClient`` and each event's
JSON merged into the output, the chat history sent back on the next turn. It runs in a thread
(it is synchronous) against the real gateway, llmsim behind it and real Kafka, whose events are
read back to check what the client got is what was recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sseclient import SSEClient

from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceRequest, InferenceResponse
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
from tests.support.prometheus_text import value as metric_value

pytestmark = pytest.mark.integration


# ---- the client, as prompt flow's docs show one (only the URL and the key are ours)

def apply_delta(base: dict[str, Any], delta: dict[str, Any]) -> None:
    for name, value in delta.items():
        base[name] = base[name] + value if name in base else value


@dataclass
class Answer:
    output: dict[str, Any]
    streamed: bool
    events: int
    headers: dict[str, str]


def pf_score(url: str, api_key: str, body: dict[str, Any], *, stream: bool,
             extra_headers: dict[str, str] | None = None) -> Answer:
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer " + api_key,
        "Accept": "text/event-stream, application/json" if stream else "application/json",
        **(extra_headers or {}),
    }
    response = requests.post(url, json=body, headers=headers, stream=stream, timeout=30)
    response.raise_for_status()
    if "text/event-stream" in response.headers.get("Content-Type", ""):
        output: dict[str, Any] = {}
        count = 0
        for event in SSEClient(response).events():
            apply_delta(output, json.loads(event.data))
            count += 1
        return Answer(output, True, count, dict(response.headers))
    return Answer(response.json(), False, 0, dict(response.headers))


# ---- the stack

@dataclass
class Stack:
    gateway: Gateway
    keys: Keys
    sim: Llmsim
    tap: LlmTap
    reviewed_key: str  # the key of a deployment whose flow fails after its answer streamed

    @property
    def score_url(self) -> str:
        return f"{self.gateway.url}/score"

    async def client(self, key: str, body: dict[str, Any], *, stream: bool, **headers: str) -> Answer:
        return await asyncio.to_thread(pf_score, self.score_url, key, body, stream=stream, extra_headers=headers)

    async def raw(self, body: Any, headers: dict[str, str], *, path: str = "/score") -> tuple[int, Any, Any]:
        async with self.gateway.session.post(self.gateway.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers

    async def recorded(self, count: int) -> dict[str, tuple[InferenceRequest, InferenceResponse]]:
        await self.gateway.publisher.wait_delivered()
        records = await read_topic(self.gateway.settings.kafka, self.gateway.topics.inference, 2 * count)
        return {rid: (events[0], events[-1]) for rid, events in events_by_request(records).items()}


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        reviewed_key = write_reviewed(tmp_path / "deployments")
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield Stack(gateway, keys, sim, tap, reviewed_key)


# ---- the tests

async def test_a_pf_chat_client_runs_unchanged_streamed_then_not(stack: Stack) -> None:
    """The how-to's chat loop: a streamed turn, then a turn with the history, not streamed."""
    history: list[dict[str, Any]] = []
    answers = []
    for question, stream in (("What is PromptPulse?", True), ("And what does it watch?", False)):
        answer = await stack.client(stack.keys["chat"], {"question": question, "chat_history": history},
                                    stream=stream)
        assert answer.streamed is stream
        assert set(answer.output) == {"answer"} and answer.output["answer"]  # the flow's outputs only
        history.append({"inputs": {"question": question}, "outputs": answer.output})
        answers.append(answer)
    assert answers[0].events > 2  # the answer arrived in pieces
    assert answers[0].headers["Content-Type"].startswith("text/event-stream")
    # The second turn sent the first turn's merged answer back to the model as history.
    assert stack.tap.exchanges[-1].body["messages"][-2] == {"role": "assistant",
                                                             "content": answers[0].output["answer"]}
    recorded = await stack.recorded(2)
    for answer in answers:
        request_id = answer.headers["x-request-id"]
        request, response = recorded[request_id]
        assert request.meta.deployment == "chat" and request.streaming is answer.streamed
        assert struct_to_dict(response.outputs) == answer.output  # what the client got is what was stored
        assert answer.headers["azureml-model-deployment"] == "default"


async def test_the_key_decides_the_deployment(stack: Stack) -> None:
    demo = await stack.client(stack.keys["demo"], {"question": "Which deployment?"}, stream=False)
    standard = await stack.client(stack.keys["standard"], {"question": "Which deployment?"}, stream=False)
    assert set(demo.output) == {"answer"}
    assert set(standard.output) == {"answer", "refusal", "facts"}
    recorded = await stack.recorded(2)
    assert recorded[demo.headers["x-request-id"]][0].meta.deployment == "demo"
    assert recorded[standard.headers["x-request-id"]][0].meta.deployment == "standard"


async def test_a_hybrid_stream_merges_into_the_json_answer(stack: Stack) -> None:
    """The how-to's "hybrid stream and non-stream flow output": the answer streams, the others
    arrive whole, and the merged events are the same object the JSON reply is."""
    body = {"question": "How are requests sampled?"}
    streamed = await stack.client(stack.keys["standard"], body, stream=True,
                                  **{"azureml-model-deployment": "variant_0"})
    whole = await stack.client(stack.keys["standard"], body, stream=False,
                               **{"azureml-model-deployment": "variant_0"})
    assert streamed.streamed and streamed.events > 2
    assert set(streamed.output) == set(whole.output) == {"answer", "refusal", "facts"}
    assert streamed.output["facts"] == whole.output["facts"] and streamed.output["refusal"] is None
    recorded = await stack.recorded(2)
    assert struct_to_dict(recorded[streamed.headers["x-request-id"]][1].outputs) == streamed.output


async def test_stream_negotiation_follows_prompt_flow(stack: Stack) -> None:
    key = {"Authorization": f"Bearer {stack.keys['demo']}"}
    # No Accept, or */*: JSON.
    for accept in ({}, {"Accept": "*/*"}):
        status, payload, headers = await stack.raw({}, {**key, **accept})
        assert status == 200 and headers["Content-Type"].startswith("application/json") and set(payload) == {"answer"}
    # Only a type the flow cannot answer in: 406 naming it.
    status, payload, _ = await stack.raw({}, {**key, "Accept": "text/html"})
    assert status == 406 and payload["error"]["type"] == "not_acceptable"
    assert "text/html" in payload["error"]["message"] and payload["error"]["code"] == "UserError"


async def test_variant_headers_follow_allow_forced_variant(stack: Stack) -> None:
    demo = stack.keys["demo"]
    for header in ("azureml-model-deployment", "x-promptpulse-variant"):
        for named in ("variant_1", "${answer.variant_1}"):
            answer = await stack.client(demo, {}, stream=False, **{header: named})
            assert answer.headers["azureml-model-deployment"] == "variant_1", (header, named)
            assert stack.tap.exchanges[-1].headers["x-promptpulse-variant"] == "variant_1"
    # prompt flow's naming works on the per-deployment route too.
    status, payload, _ = await stack.raw({}, {"Authorization": f"Bearer {demo}",
                                              "x-promptpulse-variant": "${answer.variant_0}"},
                                         path="/v1/deployments/demo/score")
    assert status == 200 and payload["variant"] == "variant_0"

    base = {"Authorization": f"Bearer {demo}"}
    cases = [
        # An unknown variant is a 400 naming it.
        ({"azureml-model-deployment": "blue"}, 400, "unknown_variant", "'blue'"),
        ({"x-promptpulse-variant": "${answer.variant_7}"}, 400, "unknown_variant", "${answer.variant_7}"),
        ({"azureml-model-deployment": "${format_context.variant_1}"}, 400, "unknown_variant", "format_context"),
        # Two headers naming different variants: which one was meant?
        ({"azureml-model-deployment": "variant_0", "x-promptpulse-variant": "variant_1"}, 400, "invalid_header",
         "different variants"),
    ]
    for headers, status_code, error_type, named in cases:
        status, payload, _ = await stack.raw({}, {**base, **headers})
        assert (status, payload["error"]["type"]) == (status_code, error_type), payload
        assert named in payload["error"]["message"] and payload["error"]["code"] == "UserError"
    # The same header twice is refused, not resolved by position.
    async with stack.gateway.session.post(stack.score_url, json={}, headers=[
            ("Authorization", f"Bearer {demo}"), ("azureml-model-deployment", "variant_0"),
            ("azureml-model-deployment", "variant_1")]) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["field"] == "azureml-model-deployment"
    # Honoured only where allow_forced_variant: the locked deployment refuses both headers.
    for header in ("azureml-model-deployment", "x-promptpulse-variant"):
        status, payload, _ = await stack.raw({}, {"Authorization": f"Bearer {stack.keys['locked']}",
                                                  header: "variant_1"})
        assert status == 403 and payload["error"] == {
            "type": "variant_not_selectable", "message": "deployment 'locked' does not let clients choose the variant",
            "field": header, "code": "UserError"}


async def test_a_client_request_id_header_that_does_not_fit_is_400_naming_it(stack: Stack) -> None:
    # Either header may carry the client's id; each one sent is checked, even beside a valid other
    # (found by tests/integration/test_api_sweep.py: a valid x-ms-client-request-id let an empty
    # x-request-id through, against the document).
    base = {"Authorization": f"Bearer {stack.keys['demo']}"}
    for headers, field_name in [({"x-request-id": ""}, "x-request-id"),
                                ({"x-ms-client-request-id": "x" * 200}, "x-ms-client-request-id"),
                                ({"x-ms-client-request-id": "client-42", "x-request-id": ""}, "x-request-id"),
                                ({"x-ms-client-request-id": "bad id", "x-request-id": "client-42"},
                                 "x-ms-client-request-id")]:
        status, payload, _ = await stack.raw({}, {**base, **headers})
        error = payload.get("error") or {}
        assert (status, error.get("type"), error.get("field")) == (400, "invalid_header", field_name), (headers, payload)
        assert field_name in error["message"]
    # Both valid: the Azure header's id is the one recorded and echoed.
    status, payload, headers = await stack.raw({}, {**base, "x-ms-client-request-id": "client-42",
                                                    "x-request-id": "client-43"})
    assert status == 200 and headers["x-ms-client-request-id"] == "client-42", payload


async def test_wrong_or_missing_key_is_401(stack: Stack) -> None:
    for headers in ({"Authorization": "Bearer pp_not-a-key"}, {"api-key": "pp_not-a-key"}, {},
                    {"Authorization": f"Basic {stack.keys['demo']}"}):
        status, payload, response_headers = await stack.raw({}, headers)
        assert status == 401 and payload["error"]["type"] == "unauthorized", headers
        assert payload["error"]["code"] == "UserError" and response_headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(requests.HTTPError) as caught:
        await stack.client("pp_wrong", {}, stream=False)
    assert caught.value.response.status_code == 401
    # The Azure OpenAI-style header works as on the other routes.
    status, payload, _ = await stack.raw({}, {"api-key": stack.keys["demo"]})
    assert status == 200 and set(payload) == {"answer"}


async def test_errors_keep_their_status_and_say_what_failed(stack: Stack) -> None:
    for stream in (False, True):
        await stack.sim.control("faults", {"fault": "429", "count": 1})
        with pytest.raises(requests.HTTPError) as caught:
            await stack.client(stack.keys["demo"], {}, stream=stream)
        response = caught.value.response
        assert response.status_code == 502 and response.headers["Content-Type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "SystemError" and error["type"] == "llm_rate_limited"
        assert (error["node"], error["exception_type"], error["llm_status"]) == ("answer", "RateLimitError", 429)
        assert error["message"].startswith("node 'answer': RateLimitError: ")
    status, payload, _ = await stack.raw({"count": "three"}, {"Authorization": f"Bearer {stack.keys['strict']}"})
    assert status == 400 and payload["error"]["type"] == "invalid_input"
    assert payload["error"]["code"] == "UserError" and payload["error"]["field"] == "question"


async def test_openapi_describes_the_score_contract(stack: Stack) -> None:
    async with stack.gateway.session.get(stack.gateway.url + "/openapi.json") as resp:
        document = await resp.json()
    operation = document["paths"]["/score"]["post"]
    inputs = operation["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert len(inputs) == len(stack.keys.plain) + 1  # any deployment's inputs (reviewed too): the key decides
    outputs = operation["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert all("request_id" not in o["properties"] for o in outputs)  # the outputs only
    params = {p["name"]: p for p in operation["parameters"]}
    assert "${answer.variant_1}" in params["azureml-model-deployment"]["schema"]["enum"]
    assert {"400", "401", "403", "406", "500", "502"} <= set(operation["responses"])
    error = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert {"node", "exception_type", "exception_message"} <= set(error)


async def test_a_node_failure_after_the_stream_started_is_an_error_event(stack: Stack) -> None:
    with pytest.raises(requests.HTTPError) as caught:
        await stack.client(stack.reviewed_key, {}, stream=False)
    whole = caught.value.response
    assert whole.status_code == 500
    error = whole.json()["error"]
    assert (error["code"], error["type"], error["node"], error["exception_type"]) == (
        "SystemError", "node_failed", "review", "ValueError")
    assert error["message"] == f"node 'review': ValueError: {error['exception_message']}"
    assert SECRET not in whole.text and "[redacted]" in error["exception_message"]

    # Streamed, the answer's deltas are out before the review fails: the stream ends with prompt
    # flow's kind of event carrying the same error, told apart by its event name.
    def read_stream() -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
        response = requests.post(stack.score_url, json={}, stream=True, timeout=30, headers={
            "Authorization": "Bearer " + stack.reviewed_key, "Accept": "text/event-stream",
            "x-ms-client-request-id": "client-42"})
        response.raise_for_status()
        return [(e.event, json.loads(e.data)) for e in SSEClient(response).events()], dict(response.headers)

    events, headers = await asyncio.to_thread(read_stream)
    assert headers["x-ms-client-request-id"] == "client-42"
    assert [name for name, _ in events[:-1]] == ["message"] * (len(events) - 1) and len(events) > 2
    assert all(set(data) == {"answer"} for _, data in events[:-1])
    name, last = events[-1]
    assert name == "error" and last == {"error": error, "request_id": headers["x-request-id"]}
    recorded = await stack.recorded(2)
    request, response = recorded[headers["x-request-id"]]
    assert request.client_request_id == "client-42" and response.error_message == error["message"]


async def test_rate_limits_and_metrics_are_the_keys_deployments(stack: Stack) -> None:
    limited = {"Authorization": f"Bearer {stack.keys.limited['demo']}"}  # 3 requests per minute
    statuses = [(await stack.raw({}, limited))[0] for _ in range(4)]
    status, payload, headers = await stack.raw({}, limited)
    assert statuses == [200, 200, 200, 429] and status == 429 and int(headers["Retry-After"]) >= 1
    assert payload["error"]["type"] == "rate_limited" and payload["error"]["code"] == "UserError"
    await stack.raw({}, {"Authorization": "Bearer pp_wrong"})
    async with stack.gateway.session.get(stack.gateway.url + "/metrics") as resp:
        text = await resp.text()
    assert metric_value(text, "promptpulse_gateway_rate_limited_total", deployment="demo") == 2
    assert metric_value(text, "promptpulse_gateway_auth_failures_total", deployment="(unknown)") == 1
    assert metric_value(text, "promptpulse_gateway_http_requests_total", endpoint="score", code=429) == 2
