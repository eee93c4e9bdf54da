"""The gateway publishes no implausible number (issue 15, finding 2): an LLM endpoint that reports
1e12 tokens for a call gets that call's usage left out of the response event, said in its error
message and counted, while the rest of the response is recorded; a sane twin keeps its usage.
The LLM is llmsim; a proxy in between inflates the usage it reports when told to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from shared.events.messages import InferenceResponse, InferenceStatus
from shared.plausibility import Plausibility
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)
from tests.support.prometheus_text import samples, value

pytestmark = pytest.mark.integration

ABSURD = 10**12


class InflatingProxy:
    """Forwards chat completions to llmsim; while ``inflate`` is set, the answer's usage says 1e12."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.inflate = False
        self.url = ""

    async def forward(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.upstream}/v1/chat/completions", data=await request.read(), headers=headers
        ) as upstream:
            body: dict[str, Any] = await upstream.json()
            status = upstream.status
        if self.inflate and "usage" in body:
            body["usage"]["prompt_tokens"] = ABSURD
            body["usage"]["total_tokens"] = ABSURD + body["usage"]["completion_tokens"]
        return web.json_response(body, status=status)


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Keys, InflatingProxy]]:
    async with llmsim_server() as sim:
        proxy = InflatingProxy(sim.url)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", proxy.forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        proxy.url = f"http://{host}:{port}"
        try:
            keys = write_deployments(tmp_path / "deployments", proxy.url)
            kafka = kafka_for(settings.kafka.bootstrap_servers)
            async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
                yield gateway, keys, proxy
        finally:
            await runner.cleanup()


async def _score(gateway: Gateway, keys: Keys) -> str:
    async with gateway.session.post(gateway.score_url("demo"), json={"question": "What is sampled?"},
                                    headers={"Authorization": f"Bearer {keys['demo']}"}) as resp:
        payload = await resp.json()
        assert resp.status == 200, payload
        return payload["request_id"]


async def test_an_implausible_llm_usage_is_left_out_of_the_event_said_and_counted(stack) -> None:
    gateway, keys, proxy = stack
    proxy.inflate = True
    inflated = await _score(gateway, keys)
    proxy.inflate = False
    twin = await _score(gateway, keys)
    await gateway.publisher.wait_delivered()
    events = events_by_request(await read_topic(gateway.settings.kafka, gateway.topics.inference, 4))

    [response] = [e for e in events[inflated] if isinstance(e, InferenceResponse)]
    assert response.status == InferenceStatus.INFERENCE_STATUS_OK and response.HasField("outputs")
    assert list(response.usage) == []
    assert "usage of LLM call 1 (answer) not recorded: usage.prompt_tokens is 1000000000000" in response.error_message
    [sane] = [e for e in events[twin] if isinstance(e, InferenceResponse)]
    assert [(u.node, u.prompt_tokens > 0) for u in sane.usage] == [("answer", True)] and sane.error_message == ""
    for event in (response, sane):
        Plausibility(gateway.settings.plausibility).check(event)  # what the aggregator will store

    async with gateway.session.get(gateway.url + "/metrics") as resp:
        text = await resp.text()
    assert value(text, "promptpulse_gateway_implausible_values_total", deployment="demo") == 1
    tokens = [n for (name, _), n in samples(text).items() if name == "promptpulse_gateway_llm_tokens_total"]
    assert tokens and all(n < ABSURD for n in tokens), tokens
    assert json.dumps(ABSURD) not in text
