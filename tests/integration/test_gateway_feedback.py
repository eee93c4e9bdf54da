"""The feedback endpoint: a rating or comment becomes a feedback event keyed by the request id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.events.messages import Feedback
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


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys]]:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            yield gateway, keys


def feedback_url(gateway: Gateway, deployment: str) -> str:
    return f"{gateway.url}/v1/deployments/{deployment}/feedback"


async def test_feedback_on_a_response_is_published(stack: tuple[Gateway, Keys]) -> None:
    gateway, keys = stack
    headers = {"api-key": keys["demo"]}
    async with gateway.session.post(gateway.score_url("demo"), json={}, headers=headers) as resp:
        request_id = (await resp.json())["request_id"]
    async with gateway.session.post(feedback_url(gateway, "demo"), headers={**headers, "x-promptpulse-run": "r1"},
                                    json={"request_id": request_id, "rating": 1, "comment": "spot on"}) as resp:
        assert resp.status == 202
        accepted = await resp.json()
    async with gateway.session.post(feedback_url(gateway, "demo"), headers=headers,
                                    json={"request_id": request_id, "comment": "only words"}) as resp:
        assert resp.status == 202
    await gateway.publisher.wait_delivered()
    records = await read_topic(gateway.settings.kafka, gateway.topics.feedback, 2)
    first, second = events_by_request(records)[request_id]
    assert isinstance(first, Feedback) and first.meta.event_id == accepted["event_id"]
    assert (first.rating, first.comment, first.meta.deployment, first.meta.run_id) == (1, "spot on", "demo", "r1")
    assert not first.meta.HasField("request_start_time")  # the gateway keeps no state to know it
    assert first.meta.traceparent
    assert not second.HasField("rating") and second.comment == "only words"


@pytest.mark.parametrize(("body", "field_name"), [
    ({"rating": 1}, "request_id"),
    ({"request_id": "not-a-uuid", "rating": 1}, "request_id"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000"}, "rating"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000", "rating": "5"}, "rating"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000", "rating": 1000}, "rating"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000", "rating": True}, "rating"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000", "comment": 5}, "comment"),
    ({"request_id": "0192b3c4-0000-7000-8000-000000000000", "rating": 1, "stars": 5}, "stars"),
])
async def test_bad_feedback_is_400_naming_the_field(stack: tuple[Gateway, Keys], body: dict, field_name: str) -> None:
    gateway, keys = stack
    async with gateway.session.post(feedback_url(gateway, "demo"), json=body, headers={"api-key": keys["demo"]}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_feedback" and error["field"] == field_name


async def test_feedback_needs_the_deployments_key(stack: tuple[Gateway, Keys]) -> None:
    gateway, keys = stack
    body = {"request_id": "0192b3c4-0000-7000-8000-000000000000", "rating": 1}
    async with gateway.session.post(feedback_url(gateway, "demo"), json=body, headers={"api-key": keys["chat"]}) as resp:
        assert resp.status == 401
    async with gateway.session.post(feedback_url(gateway, "nope"), json=body, headers={"api-key": keys["demo"]}) as resp:
        assert resp.status == 404
