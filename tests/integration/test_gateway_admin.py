"""Operating the gateway: health and readiness, /metrics, /openapi.json, reloads (SIGHUP and
key files written by ``promptpulse keys``)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.gateway import keys_cli
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    LlmTap,
    kafka_for,
    llmsim_server,
    running_gateway,
    write_deployments,
)
from tests.support.prometheus_text import assert_promtool_clean, series, total, value

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, Keys, Path]]:
    folder = tmp_path / "deployments"
    monkeypatch.setenv("PROMPTPULSE_DEPLOYMENTS_DIR", str(folder))  # what `promptpulse keys` reads
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(folder, tap.url, demo={"api_keys_file": str(tmp_path / "keys" / "demo.yaml")})
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(folder, kafka, tmp_path / "spool", handle_sighup=True,
                                   keys_reload_interval_seconds=0.1) as gateway:
            yield gateway, keys, folder


async def _status(gateway: Gateway, deployment: str, key: str) -> int:
    async with gateway.session.post(gateway.score_url(deployment), json={}, headers={"api-key": key}) as resp:
        await resp.read()
        return resp.status


async def _until(gateway: Gateway, deployment: str, key: str, status: int) -> None:
    # The watcher polls every 0.1 s; the bound only stops a broken reload from hanging the test.
    async with asyncio.timeout(20):
        while await _status(gateway, deployment, key) != status:  # noqa: ASYNC110 - polls over HTTP
            await asyncio.sleep(0.05)


async def test_health_readiness_and_metrics(stack: tuple[Gateway, Keys, Path]) -> None:
    gateway, keys, _ = stack
    async with gateway.session.get(gateway.url + "/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    async with gateway.session.get(gateway.url + "/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "ready"
        assert "demo" in body["deployments"] and body["events_spooling"] is False
    assert await _status(gateway, "demo", keys["demo"]) == 200
    assert await _status(gateway, "demo", "wrong") == 401
    async with gateway.session.get(gateway.url + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    gw = "promptpulse_gateway_"
    assert value(text, gw + "http_requests_total", endpoint="score", code=200) == 1
    assert value(text, gw + "http_requests_total", endpoint="score", code=401) == 1
    assert value(text, gw + "auth_failures_total", deployment="demo") == 1
    assert total(text, gw + "flow_runs_total", deployment="demo", status="ok") == 1
    assert any(labels.get("variant", "").startswith("variant_") for labels in series(text, gw + "flow_runs_total"))
    assert value(text, gw + "flow_run_duration_seconds_count", deployment="demo") == 1
    assert total(text, gw + "llm_tokens_total", deployment="demo", model="llmsim-chat", kind="completion") > 0
    assert value(text, gw + "deployments") == 6
    assert series(text, gw + "events_sent_total")  # the publisher's
    lines = set(text.splitlines())
    assert "# TYPE promptpulse_gateway_flow_run_duration_seconds histogram" in lines
    assert_promtool_clean(text)


async def test_openapi_describes_each_deployments_real_inputs(stack: tuple[Gateway, Keys, Path]) -> None:
    gateway, _, _ = stack
    async with gateway.session.get(gateway.url + "/openapi.json") as resp:
        assert resp.status == 200
        document = await resp.json()
    assert document["openapi"].startswith("3.1")
    strict = document["paths"]["/v1/deployments/strict/score"]["post"]
    schema = strict["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["question"]
    assert schema["properties"] == {
        "question": {"type": "string"},
        "count": {"type": "integer", "minimum": -2**53, "maximum": 2**53, "default": 1},
    }
    outputs = strict["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert set(outputs) == {"answer", "request_id", "variant"}
    chat = document["paths"]["/v1/deployments/chat/score"]["post"]
    history = chat["requestBody"]["content"]["application/json"]["schema"]["properties"]["chat_history"]
    assert history["type"] == "array" and history["items"]["required"] == ["inputs", "outputs"]
    demo_params = {p["name"]: p for p in document["paths"]["/v1/deployments/demo/score"]["post"]["parameters"]}
    assert demo_params["x-promptpulse-variant"]["schema"]["enum"] == [
        "variant_0", "variant_1", "${answer.variant_0}", "${answer.variant_1}"]
    locked_params = {p["name"] for p in document["paths"]["/v1/deployments/locked/score"]["post"]["parameters"]}
    assert "x-promptpulse-variant" not in locked_params
    assert "/v1/deployments/demo/feedback" in document["paths"]


async def test_keys_created_and_revoked_by_the_cli_take_effect_without_restart(
    stack: tuple[Gateway, Keys, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    gateway, keys, _ = stack
    assert keys_cli.main(["create", "demo", "--id", "ops"]) == 0
    new_key = capsys.readouterr().out.strip()
    assert new_key.startswith("pp_")
    await _until(gateway, "demo", new_key, 200)
    assert await _status(gateway, "demo", keys["demo"]) == 200  # the keys in the deployment file stay
    assert keys_cli.main(["revoke", "demo", "ops"]) == 0
    await _until(gateway, "demo", new_key, 401)
    assert gateway.deployments.reloads_ok >= 2


async def test_sighup_reloads_and_a_broken_file_keeps_the_old_configuration(stack: tuple[Gateway, Keys, Path]) -> None:
    gateway, keys, folder = stack
    before = gateway.deployments.current.generation
    (folder / "chat.yaml").unlink()
    os.kill(os.getpid(), signal.SIGHUP)
    await _until(gateway, "chat", keys["chat"], 404)
    assert gateway.deployments.current.generation == before + 1

    (folder / "demo.yaml").write_text("name: demo\nflow: ./missing-flow\nunknown_field: 1\n")
    os.kill(os.getpid(), signal.SIGHUP)
    async with asyncio.timeout(20):
        while gateway.deployments.reloads_failed == 0:  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.05)
    assert "unknown_field" in (gateway.deployments.last_error or "")
    assert await _status(gateway, "demo", keys["demo"]) == 200  # still served from the last good load
    async with gateway.session.get(gateway.url + "/metrics") as resp:
        assert value(await resp.text(), "promptpulse_gateway_deployment_reloads_total", result="failed") == 1
