"""A reload (SIGHUP) that breaks a serving deployment: it keeps serving its last good version and
says so in the admin listing, /metrics and the log, while its keys still follow its keys file;
the other deployments take their new files; fixing the file brings the new version in. And a
deployment whose Python node lacks a package serves after `promptpulse flows install` and a
reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import sysconfig
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
from tests.support.prometheus_text import value as metric_value
from tests.support.wheels import make_wheel
from tests.unit.test_flow_python_node import DAG as PYTHON_FLOW  # one python node, shout.py

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


async def metrics_text(gateway: Gateway) -> str:
    async with gateway.session.get(gateway.url + "/metrics") as resp:
        return await resp.text()


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
    text = await metrics_text(running)
    assert metric_value(text, "promptpulse_gateway_deployment_status", deployment="demo", status="stale") == 1
    assert metric_value(text, "promptpulse_gateway_deployment_status", deployment="chat", status="serving") == 1
    assert metric_value(text, "promptpulse_gateway_deployment_reloads_total", result="failed") == 1
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
    assert metric_value(await metrics_text(running), "promptpulse_gateway_deployment_status", deployment="demo",
                        status="serving") == 1


NEEDS_PACKAGE_CODE = ("import pp_isolation_dep\nfrom promptflow import tool\n\n\n@tool\n"
                      "def shout(text: str) -> str:\n    return f'{text} {pp_isolation_dep.VERSION}'\n")


def _services_environment(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway environment that sees this one's packages (a .pth line), standing in for the
    services' environment: `promptpulse flows install --python` installs into it, this test's
    gateway imports from it, and the test environment itself is never changed."""
    env = tmp_path / "services-env"
    created = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert created.returncode == 0, created.stderr
    site_packages = next((env / "lib").glob("python3*/site-packages"))
    (site_packages / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin" / "python", site_packages


async def test_after_flows_install_and_a_reload_the_deployment_missing_a_package_serves(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    make_wheel(wheelhouse, "pp-isolation-dep", "1.0")
    flow = tmp_path / "flows" / "needs-package"
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(PYTHON_FLOW)
    (flow / "shout.py").write_text(NEEDS_PACKAGE_CODE)
    (flow / "requirements.txt").write_text("pp-isolation-dep==1.0\n")
    python, site_packages = _services_environment(tmp_path)
    monkeypatch.syspath_prepend(str(site_packages))  # the gateway runs "in" that environment
    folder = tmp_path / "deployments"
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(folder, tap.url)
        key, record = new_api_key_record("needs")
        (folder / "needs-package.yaml").write_text(yaml.safe_dump({
            "name": "needs-package", "flow": str(flow), "api_keys": [record.model_dump(mode="json", exclude_none=True)]}))
        async with running_gateway(folder, kafka_for(settings.kafka.bootstrap_servers), tmp_path / "spool",
                                   handle_sighup=True, admin_key=ADMIN_KEY) as running:
            async with running.session.post(running.score_url("needs-package"), json={"text": "hi"},
                                            headers={"api-key": key}) as resp:
                assert resp.status == 503 and (await resp.json())["error"]["type"] == "deployment_unavailable"
            (problem,) = (await listing(running))["needs-package"]["problems"]
            assert "module 'pp_isolation_dep' is not installed" in problem and "promptpulse flows install" in problem
            assert (await score(running, "demo", keys["demo"]))[0] == 200

            installed = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "services.cli", "flows", "install", str(folder), "--python", str(python),
                "--no-index", "--find-links", str(wheelhouse)], capture_output=True, text=True, timeout=240,
                check=False)
            assert installed.returncode == 0, installed.stdout + installed.stderr
            await sighup(running)

            async with running.session.post(running.score_url("needs-package"), json={"text": "hi"},
                                            headers={"api-key": key}) as resp:
                body = await resp.json()
                assert (resp.status, body.get("result")) == (200, "hi 1.0"), body
            assert (await listing(running))["needs-package"]["status"] == "serving"


async def test_a_broken_demo_file_does_not_stop_the_gateway_provisioning_its_key(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    folder = tmp_path / "deployments"
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(folder, tap.url, demo={"api_keys_file": str(tmp_path / "keys" / "demo.yaml"),
                                                        "colour": "red"})
        async with running_gateway(folder, kafka_for(settings.kafka.bootstrap_servers), tmp_path / "spool",
                                   provision_demo_key=True) as running:
            status, body = await score(running, "demo", keys["demo"])
            assert status == 503 and body["error"]["type"] == "deployment_unavailable", body
            assert (await score(running, "chat", keys["chat"]))[0] == 200
