"""A reload (SIGHUP) that breaks a serving deployment: it keeps serving its last good version and
says so in the admin listing, /metrics and the log, while its keys still follow its keys file;
the other deployments take their new files; fixing the file brings the new version in."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from shared.apikeys import new_api_key_record
from shared.deployments import save_api_keys_file
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    LlmTap,
    kafka_for,
    llmsim_server,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration

ADMIN_KEY = "gateway-admin-key-for-tests"


@pytest.fixture
async def gateway(settings: ServiceSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Path, dict[str, str]]]:
    folder = tmp_path / "deployments"
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(folder, tap.url, demo={"api_keys_file": str(tmp_path / "keys" / "demo.yaml")})
        async with running_gateway(folder, kafka_for(settings.kafka.bootstrap_servers), tmp_path / "spool",
                                   handle_sighup=True, admin_key=ADMIN_KEY) as running:
            yield running, folder, {"demo": keys["demo"], "chat": keys["chat"]}


async def sighup(gateway: Gateway) -> None:
    generation = gateway.deployments.current.generation
    os.kill(os.getpid(), signal.SIGHUP)
    async with asyncio.timeout(20):
        while gateway.deployments.current.generation == generation:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.05)


async def score(gateway: Gateway, deployment: str, key: str, variant: str | None = None) -> tuple[int, dict]:
    headers = {"api-key": key, **({"x-promptpulse-variant": variant} if variant else {})}
    async with gateway.session.post(gateway.score_url(deployment), json={"question": "q", "context": "c"},
                                    headers=headers) as resp:
        return resp.status, await resp.json()


async def listing(gateway: Gateway) -> dict:
    async with gateway.session.get(gateway.url + "/admin/deployments",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as resp:
        assert resp.status == 200, await resp.text()
        return {row["name"]: row for row in (await resp.json())["deployments"]}


async def metric_lines(gateway: Gateway) -> set[str]:
    async with gateway.session.get(gateway.url + "/metrics") as resp:
        return set((await resp.text()).splitlines())


async def test_a_reload_that_breaks_a_serving_deployment_keeps_its_last_good_version(
    gateway: tuple[Gateway, Path, dict[str, str]], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    running, folder, keys = gateway
    good_demo = (folder / "demo.yaml").read_text()
    first = (await listing(running))["demo"]
    assert first["status"] == "serving" and "problems" not in first

    # The new file would refuse forced variants, but it has a typo: none of it may apply.
    broken = yaml.safe_load(good_demo) | {"allow_forced_variant": False, "colour": "red"}
    (folder / "demo.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    chat = yaml.safe_load((folder / "chat.yaml").read_text())
    (folder / "chat.yaml").write_text(yaml.safe_dump(chat | {"description": "new"}, sort_keys=False))
    with caplog.at_level(logging.ERROR, logger="services.gateway.registry"):
        await sighup(running)

    status, body = await score(running, "demo", keys["demo"], variant="variant_1")
    assert (status, body.get("variant")) == (200, "variant_1")  # the last good version, forced variants on
    rows = await listing(running)
    demo = rows["demo"]
    assert demo["status"] == "stale" and demo["serving_generation"] == first["serving_generation"]
    assert any("demo.yaml: colour: unknown field" in p for p in demo["problems"]), demo
    assert rows["chat"]["status"] == "serving" and rows["chat"]["serving_generation"] == demo["serving_generation"] + 1
    assert running.deployments.get("chat").deployment.description == "new"  # the others took their files
    lines = await metric_lines(running)
    assert 'promptpulse_gateway_deployment_status{deployment="demo",status="stale"} 1' in lines
    assert 'promptpulse_gateway_deployment_status{deployment="chat",status="serving"} 1' in lines
    assert 'promptpulse_gateway_deployment_reloads_total{result="failed"} 1' in lines
    assert any("deployment 'demo' does not load; still serving its last good version" in r.getMessage()
               for r in caplog.records)
    async with running.session.get(running.url + "/readyz") as resp:
        assert resp.status == 200

    # While stale, its keys still follow its keys file: a key added works, a key revoked stops.
    extra_key, extra = new_api_key_record("extra")
    save_api_keys_file(tmp_path / "keys" / "demo.yaml", [extra])
    await sighup(running)
    assert (await score(running, "demo", extra_key))[0] == 200
    save_api_keys_file(tmp_path / "keys" / "demo.yaml", [])
    await sighup(running)
    assert (await score(running, "demo", extra_key))[0] == 401
    assert (await score(running, "demo", keys["demo"]))[0] == 200  # the file's own keys stay
    assert (await listing(running))["demo"]["status"] == "stale"

    # Fixed: the new version serves (forced variants now refused), and the listing says so.
    fixed = {key: value for key, value in broken.items() if key != "colour"}
    (folder / "demo.yaml").write_text(yaml.safe_dump(fixed, sort_keys=False))
    await sighup(running)
    status, body = await score(running, "demo", keys["demo"], variant="variant_1")
    assert status == 403 and body["error"]["type"] == "variant_not_selectable", body
    demo = (await listing(running))["demo"]
    assert demo["status"] == "serving" and "problems" not in demo
    assert 'promptpulse_gateway_deployment_status{deployment="demo",status="serving"} 1' in await metric_lines(running)
