"""Shutdown order: stop intake, let the request in flight finish, flush its events to Kafka, then
close the LLM clients (and telemetry last)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from services.gateway.appkeys import DEPLOYMENTS, PUBLISHER
from services.llmsim.settings import LatencyModel
from shared.events.messages import InferenceStatus
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration


async def test_shutdown_drains_the_request_in_flight_then_flushes_its_events(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with llmsim_server(latency=LatencyModel(ttft_ms=0, tokens_per_second=60, jitter=0)) as sim, \
            LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            url = gateway.score_url("demo") + "?stream=true"
            clients = list(gateway.app[DEPLOYMENTS].current.clients.values())
            publisher = gateway.app[PUBLISHER]
            shutdown: asyncio.Task[None] | None = None
            events = []
            session = gateway.session
            async with session.post(url, json={}, headers={"api-key": keys["demo"]}) as resp:
                request_id = resp.headers["x-request-id"]
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        events.append(json.loads(line[6:]))
                        if shutdown is None:  # mid-answer: the gateway is asked to stop
                            shutdown = asyncio.create_task(gateway.runner.cleanup())
                            await asyncio.sleep(0.05)
                            assert not any(c.is_closed() for c in clients)
            assert shutdown is not None
            await shutdown
            with pytest.raises(aiohttp.ClientConnectionError):  # intake stopped
                await session.post(url, json={}, headers={"api-key": keys["demo"]})
            # Flushed by close(), not merely queued: the publisher is gone and the events are on the topic.
            records = await read_topic(kafka, gateway.topics.inference, 2)
    assert "outputs" in events[-1] and len(events) > 5  # the answer was completed, not cut off
    assert tap.exchanges[0].finished
    assert all(c.is_closed() for c in clients)
    request, response = events_by_request(records)[request_id]
    assert response.status == InferenceStatus.INFERENCE_STATUS_OK
    assert publisher.metrics.events_sent_direct >= 2
