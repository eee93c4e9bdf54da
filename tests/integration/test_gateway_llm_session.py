"""The gateway's one LLM call path: flows' llm nodes and proxy deployments call through the same
aiohttp session, opened before the deployments load and closed at shutdown after them."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.appkeys import DEPLOYMENTS, LLM_SESSION
from shared.flow.llm_http import LlmEndpoint
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    kafka_for,
    llmsim_server,
    running_gateway,
    write_deployments,
    write_proxy_deployment,
)

pytestmark = pytest.mark.integration


async def test_flows_and_proxies_share_one_session_closed_at_shutdown(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    folder = tmp_path / "deployments"
    async with llmsim_server() as sim:
        keys = write_deployments(folder, sim.url)
        proxy_key = write_proxy_deployment(folder, "passthrough")
        async with running_gateway(folder, kafka, tmp_path / "spool") as gateway:
            shared = gateway.app[LLM_SESSION]
            registry = gateway.app[DEPLOYMENTS].current
            assert "passthrough" in registry.proxies and registry.failures == {}, registry.failures
            endpoints = registry.clients_in_use()
            assert endpoints and all(isinstance(e, LlmEndpoint) and e.session is shared for e in endpoints)
            async with gateway.session.post(gateway.score_url("demo"), json={"question": "q"},
                                            headers={"api-key": keys["demo"]}) as resp:
                assert resp.status == 200, await resp.text()
            async with gateway.session.post(f"{gateway.url}/v1/chat/completions",
                                            json={"model": "llmsim-chat", "messages": [{"role": "user", "content": "q"}]},
                                            headers={"Authorization": f"Bearer {proxy_key}"}) as resp:
                assert resp.status == 200, await resp.text()
            assert not shared.closed
    assert shared.closed and all(e.is_closed() for e in endpoints)
