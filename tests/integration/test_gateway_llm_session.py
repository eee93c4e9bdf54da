"""The gateway's one LLM call path: flows' llm nodes and proxy deployments call through the same
aiohttp session, opened before the deployments load and closed at shutdown after them."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from services.gateway.app import create_app, start_gateway
from services.gateway.appkeys import DEPLOYMENTS, LLM_SESSION
from shared.apikeys import new_api_key_record
from shared.flow.llm_http import LlmEndpoint
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    create_topics,
    delete_topics,
    gateway_settings,
    kafka_for,
    llmsim_server,
    write_deployments,
)

pytestmark = pytest.mark.integration


async def test_flows_and_proxies_share_one_session_closed_at_shutdown(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    topics = await create_topics(kafka)
    folder = tmp_path / "deployments"
    async with llmsim_server() as sim:
        keys = write_deployments(folder, sim.url)
        proxy_key, record = new_api_key_record("proxy-key")
        (folder / "passthrough.yaml").write_text(yaml.safe_dump({
            "name": "passthrough", "type": "proxy", "proxy": {"connection": "llmsim"},
            "api_keys": [record.model_dump(mode="json", exclude_none=True)]}))
        app = create_app(gateway_settings(folder, kafka, tmp_path / "spool"), tracer_provider=TracerProvider(),
                         handle_sighup=False)
        runner = await start_gateway(app, "127.0.0.1", 0)
        try:
            host, port = runner.addresses[0][:2]
            shared = app[LLM_SESSION]
            registry = app[DEPLOYMENTS].current
            assert "passthrough" in registry.proxies and registry.failures == {}, registry.failures
            endpoints = registry.clients_in_use()
            assert endpoints and all(isinstance(e, LlmEndpoint) and e.session is shared for e in endpoints)
            async with aiohttp.ClientSession() as client:
                async with client.post(f"http://{host}:{port}/v1/deployments/demo/score", json={"question": "q"},
                                       headers={"api-key": keys["demo"]}) as resp:
                    assert resp.status == 200, await resp.text()
                async with client.post(f"http://{host}:{port}/v1/chat/completions",
                                       json={"model": "llmsim-chat", "messages": [{"role": "user", "content": "q"}]},
                                       headers={"Authorization": f"Bearer {proxy_key}"}) as resp:
                    assert resp.status == 200, await resp.text()
            assert not shared.closed
        finally:
            await runner.cleanup()
    await delete_topics(kafka, [topics.inference, topics.tokens, topics.feedback])
    assert shared.closed and all(e.is_closed() for e in endpoints)
