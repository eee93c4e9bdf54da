"""Every kind of bad request gets its clear error, and only accepted requests leave events.

One gateway serves all of them; at the end the inference topic is read back whole: it holds
the events of the requests that were accepted (the LLM failures among them) and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from shared.events.messages import InferenceRequest, InferenceResponse, InferenceStatus
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

BODY_LIMIT = 4096


@dataclass
class Stack:
    gateway: Gateway
    keys: Keys
    sim: Llmsim
    accepted: list[str] = field(default_factory=list)  # request ids that must have events

    async def post(self, deployment: str, body: Any = None, *, key: str | None = "default", raw: bytes | None = None,
                   headers: dict[str, str] | None = None, query: str = "") -> tuple[int, dict[str, Any], Any]:
        sent = dict(headers or {})
        if key == "default":
            key = self.keys[deployment] if deployment in self.keys.plain else self.keys["demo"]
        if key is not None:
            sent.setdefault("Authorization", f"Bearer {key}")
        url = self.gateway.score_url(deployment) + query
        data = raw if raw is not None else None
        async with self.gateway.session.post(url, json=None if raw is not None else body, data=data,
                                             headers=sent) as resp:
            payload = await resp.json()
            assert resp.headers["x-request-id"]
            return resp.status, payload, resp.headers


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[Stack]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url, rate_limit=3)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool",
                                   max_body_bytes=BODY_LIMIT) as gateway:
            stack = Stack(gateway, keys, sim)
            yield stack
            await gateway.publisher.wait_delivered()
            if stack.accepted:
                records = await read_topic(kafka, gateway.topics.inference, 2 * len(stack.accepted))
                assert sorted(events_by_request(records)) == sorted(stack.accepted)


def error_of(payload: dict[str, Any]) -> dict[str, Any]:
    assert set(payload) == {"error", "request_id"}, payload
    return payload["error"]


async def test_unknown_deployment_is_404(stack: Stack) -> None:
    status, payload, _ = await stack.post("nope", {"question": "?"}, key=stack.keys["demo"])
    assert status == 404 and error_of(payload)["type"] == "unknown_deployment"


async def test_every_auth_failure_is_the_same_401(stack: Stack) -> None:
    attempts = [
        {"key": None},
        {"key": "pp_not-a-real-key-at-all-0000000000000000000000"},
        {"key": stack.keys["standard"]},  # a real key, of another deployment
        {"key": None, "headers": {"Authorization": f"Basic {stack.keys['demo']}"}},
        {"key": None, "headers": {"Authorization": "Bearer "}},
        {"key": None, "headers": {"api-key": "wrong"}},
        # Authorization wins over api-key: a wrong bearer is not rescued by a right api-key.
        {"key": "wrong", "headers": {"api-key": stack.keys["demo"]}},
    ]
    errors = []
    for attempt in attempts:
        status, payload, headers = await stack.post("demo", {"question": "?"}, **attempt)
        assert status == 401, attempt
        assert headers["WWW-Authenticate"].startswith("Bearer")
        errors.append(error_of(payload))
    assert all(e == errors[0] for e in errors)  # nothing says which part was wrong
    assert errors[0]["type"] == "unauthorized" and "field" not in errors[0]
    # The positive twin: both header forms work.
    for headers in ({"api-key": stack.keys["demo"]}, {"Authorization": f"bearer {stack.keys['demo']}"}):
        status, payload, _ = await stack.post("demo", {}, key=None, headers=headers)
        assert status == 200, payload
        stack.accepted.append(payload["request_id"])


@pytest.mark.parametrize(("deployment", "raw", "body", "field_name", "error_type"), [
    ("demo", b"{not json", None, None, "invalid_json"),
    ("demo", b"", None, None, "invalid_json"),
    ("demo", b'{"question": NaN}', None, None, "invalid_json"),
    ("demo", b"\xff\xfe{}", None, None, "invalid_json"),
    ("demo", None, ["a", "list"], None, "invalid_input"),
    ("demo", None, {"question": 42}, "question", "invalid_input"),
    ("demo", None, {"question": None}, "question", "invalid_input"),  # not the default in disguise
    ("strict", None, {"count": 2}, "question", "invalid_input"),
    ("strict", None, {"question": "q", "count": "2"}, "count", "invalid_input"),
    ("strict", None, {"question": "q", "count": 2.5}, "count", "invalid_input"),
    ("strict", None, {"question": "q", "count": True}, "count", "invalid_input"),
    ("chat", None, {"question": "q", "chat_history": [{"inputs": {}}]}, "chat_history[0].outputs", "invalid_input"),
    ("standard", None, {"max_facts": 2**60}, None, "invalid_input"),
])
async def test_bad_bodies_are_400_naming_the_field(stack: Stack, deployment: str, raw: bytes | None, body: Any,
                                                    field_name: str | None, error_type: str) -> None:
    status, payload, _ = await stack.post(deployment, body, raw=raw,
                                          headers={"Content-Type": "application/json"})
    assert status == 400, payload
    error = error_of(payload)
    assert error["type"] == error_type
    assert error.get("field") == field_name
    if field_name:
        assert field_name in error["message"]


async def test_bad_headers_and_parameters_are_400_or_403(stack: Stack) -> None:
    cases = [
        ("demo", {"x-promptpulse-variant": "variant_9"}, "", 400, "unknown_variant", "x-promptpulse-variant"),
        ("locked", {"x-promptpulse-variant": "variant_0"}, "", 403, "variant_not_selectable", "x-promptpulse-variant"),
        ("demo", {"x-promptpulse-run": "bad run id!"}, "", 400, "invalid_header", "x-promptpulse-run"),
        ("demo", {"x-request-id": "x" * 500}, "", 400, "invalid_header", "x-request-id"),
        ("demo", {}, "?stream=maybe", 400, "invalid_parameter", "stream"),
    ]
    for deployment, headers, query, expected, error_type, field_name in cases:
        status, payload, _ = await stack.post(deployment, {}, headers=headers, query=query)
        assert status == expected, (headers, payload)
        assert error_of(payload)["type"] == error_type and error_of(payload)["field"] == field_name


async def test_a_repeated_variant_or_run_header_is_400_naming_it(stack: Stack) -> None:
    """Proxies and clients disagree on which copy of a repeated header wins: none is picked."""
    url = stack.gateway.score_url("demo")
    auth = ("Authorization", f"Bearer {stack.keys['demo']}")
    for name, values in [("x-promptpulse-variant", ("variant_0", "variant_1")),
                         ("x-promptpulse-variant", ("variant_0", "variant_0")),
                         ("x-promptpulse-run", ("run-a", "run-b"))]:
        headers = CIMultiDict([auth, *((name, v) for v in values)])
        async with stack.gateway.session.post(url, json={}, headers=headers) as resp:
            payload = await resp.json()
        assert resp.status == 400, (name, values, payload)
        error = error_of(payload)
        assert (error["type"], error["field"]) == ("invalid_header", name) and name in error["message"]
    # The positive twin: each header once is accepted.
    headers = CIMultiDict([auth, ("x-promptpulse-variant", "variant_1"), ("x-promptpulse-run", "run-a")])
    async with stack.gateway.session.post(url, json={}, headers=headers) as resp:
        payload = await resp.json()
    assert resp.status == 200 and payload["variant"] == "variant_1", payload
    stack.accepted.append(payload["request_id"])


async def test_body_over_the_limit_is_413_with_or_without_content_length(stack: Stack) -> None:
    big = {"question": "x" * (BODY_LIMIT + 10)}
    status, payload, _ = await stack.post("demo", big)
    assert status == 413 and error_of(payload)["type"] == "body_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"question": "'
        for _ in range(BODY_LIMIT // 100 + 1):
            yield b"y" * 100
        yield b'"}'

    async with stack.gateway.session.post(stack.gateway.score_url("demo"), data=chunked(),
                                          headers={"api-key": stack.keys["demo"]}) as resp:
        assert resp.status == 413
        assert error_of(await resp.json())["type"] == "body_too_large"
    # Just under the limit is fine.
    status, payload, _ = await stack.post("demo", {"question": "x" * (BODY_LIMIT - 100)})
    assert status == 200, payload
    stack.accepted.append(payload["request_id"])


@pytest.mark.parametrize(("fault", "error_type", "llm_error", "llm_status"), [
    ("429", "llm_rate_limited", "RateLimitError", 429),
    ("500", "llm_server_error", "InternalServerError", 500),
    ("malformed", "llm_bad_response", None, None),
])
async def test_llm_failure_is_502_and_the_response_event_says_error(
    stack: Stack, fault: str, error_type: str, llm_error: str | None, llm_status: int | None,
) -> None:
    for streaming in (False, True):
        await stack.sim.control("faults", {"fault": fault, "count": 1})
        status, payload, _ = await stack.post("demo", {}, query="?stream=true" if streaming else "")
        assert status == 502, payload
        error = error_of(payload)
        assert error["type"] == error_type and error["node"] == "answer"
        if llm_error is not None:
            assert error["llm_error"] == llm_error and error["llm_status"] == llm_status
            assert llm_error in error["message"]
        stack.accepted.append(payload["request_id"])
    await stack.gateway.publisher.wait_delivered()
    records = await read_topic(stack.gateway.settings.kafka, stack.gateway.topics.inference, 4)
    for request_id in stack.accepted:
        request, response = events_by_request(records)[request_id]
        assert isinstance(request, InferenceRequest) and isinstance(response, InferenceResponse)
        assert response.status == InferenceStatus.INFERENCE_STATUS_ERROR
        assert response.error_type == error_type and response.error_message
        assert not response.outputs.fields


async def test_rate_limit_is_429_with_retry_after_per_key(stack: Stack) -> None:
    limited = stack.keys.limited["demo"]
    for _ in range(3):
        status, payload, _ = await stack.post("demo", {}, key=limited)
        assert status == 200
        stack.accepted.append(payload["request_id"])
    status, payload, headers = await stack.post("demo", {}, key=limited)
    assert status == 429 and error_of(payload)["type"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    status, payload, _ = await stack.post("demo", {})  # another key of the same deployment
    assert status == 200
    stack.accepted.append(payload["request_id"])


async def test_unknown_routes_and_methods_answer_json(stack: Stack) -> None:
    async with stack.gateway.session.get(stack.gateway.score_url("demo")) as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["type"] == "method_not_allowed"
    async with aiohttp.ClientSession() as session, session.get(f"{stack.gateway.url}/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found"
