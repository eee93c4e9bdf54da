"""One broken deployment never takes the others down (issue 12, point 2), with every service as
the real process `promptpulse NAME` runs, against the real Kafka and PostgreSQL.

The deployments folder holds the judged demo flow, a Python flow that loads, a deployment file
with an unknown key and a reference its flow does not have, and a flow whose Python node imports
a package nobody installed. The gateway serves the first two and answers 503
deployment_unavailable for the others without a path in sight; its admin route lists both
problems together; /readyz is 200; the processor and the aggregator start and judge and store the
demo's traffic as usual.
"""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest
import yaml

from shared.apikeys import new_api_key_record
from tests.support.live_stack import LiveStack, StackOptions, live_stack
from tests.support.prometheus_text import value as metric_value
from tests.unit.test_flow_python_node import DAG as PYTHON_FLOW  # one python node, shout.py

pytestmark = pytest.mark.integration

ADMIN_KEY = "gw-admin-" + "x" * 24
MISSING = "promptpulse_absent_package_for_tests"

SHOUT = "from promptflow import tool\n\n\n@tool\ndef shout(text: str) -> str:\n    return text.upper()\n"
NEEDS_PACKAGE = f"import {MISSING}\nfrom promptflow import tool\n\n\n@tool\ndef shout(text: str) -> str:\n    return text\n"


def folder_files(echo_key: dict) -> dict[str, str]:
    def deployment(body: dict) -> str:
        return yaml.safe_dump(body, sort_keys=False)

    return {
        "flows/echo/flow.dag.yaml": PYTHON_FLOW,
        "flows/echo/shout.py": SHOUT,
        "flows/needs-package/flow.dag.yaml": PYTHON_FLOW,
        "flows/needs-package/shout.py": NEEDS_PACKAGE,
        "flows/needs-package/requirements.txt": MISSING.replace("_", "-") + "\n",
        "echo.yaml": deployment({"name": "echo", "flow": "flows/echo", "api_keys": [echo_key]}),
        # An unknown key (every service refuses it) and, once that is fixed, a bad reference.
        "broken.yaml": deployment({"name": "broken", "flow": "flows/echo", "api_keys": [echo_key],
                                   "evaluaton": {"metrics": ["fluency"]}}),
        "dangling.yaml": deployment({"name": "dangling", "flow": "flows/echo",
                                     "column_mapping": {"answer": "outputs.nope"}}),
        "needs-package.yaml": deployment({"name": "needs-package", "flow": "flows/needs-package"}),
    }


async def get(stack: LiveStack, service: str, path: str, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(
        f"{stack[service].url}{path}", headers=headers
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def post(stack: LiveStack, deployment: str, key: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{stack.gateway.url}/v1/deployments/{deployment}/score", json=body, headers={"api-key": key}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_folder_with_broken_deployments_serves_the_rest_in_every_service(tmp_path) -> None:
    echo_key, record = new_api_key_record("echo")
    options = StackOptions(
        files=folder_files(record.model_dump(mode="json", exclude_none=True)),
        env={"gateway": {"PROMPTPULSE_GATEWAY__ADMIN_KEY": ADMIN_KEY}},
    )
    async with live_stack(tmp_path, options) as stack:  # every service up, none exited
        # The gateway serves what loads.
        status, body = await stack.score("What is isolation?")
        assert status == 200, body
        demo_request = body["request_id"]
        status, body = await post(stack, "echo", echo_key, {"text": "still here"})
        assert (status, body.get("result")) == (200, "STILL HERE"), body

        # Each deployment that does not load: 503 deployment_unavailable, nothing internal.
        for name in ("broken", "dangling", "needs-package"):
            status, body = await post(stack, name, echo_key, {"text": "x"})
            assert status == 503 and body["error"]["type"] == "deployment_unavailable", (name, body)
            text = str(body)
            assert str(tmp_path) not in text and ".yaml" not in text and MISSING not in text, body
        status, body = await post(stack, "nobody", echo_key, {"text": "x"})
        assert status == 404  # unknown stays unknown

        status, body = await get(stack, "gateway", "/readyz")
        assert status == 200 and body["status"] == "ready", body
        assert body["deployments"] == ["demo", "echo"]
        assert body["unavailable"] == ["broken", "dangling", "needs-package"]

        # The admin route: only with the admin key, every problem of every file together.
        status, _ = await get(stack, "gateway", "/admin/deployments")
        assert status == 401
        status, _ = await get(stack, "gateway", "/admin/deployments", Authorization="Bearer wrong")
        assert status == 401
        status, listing = await get(stack, "gateway", "/admin/deployments", Authorization=f"Bearer {ADMIN_KEY}")
        assert status == 200, listing
        rows = {row["name"]: row for row in listing["deployments"]}
        assert {n: r["status"] for n, r in rows.items()} == {
            "broken": "unavailable", "dangling": "unavailable", "demo": "serving", "echo": "serving",
            "needs-package": "unavailable"}
        assert any("broken.yaml: evaluaton: unknown field" in p for p in rows["broken"]["problems"])
        assert any("dangling.yaml: column_mapping.answer: the flow has no output 'nope'" in p
                   for p in rows["dangling"]["problems"])
        (missing,) = rows["needs-package"]["problems"]
        requirements = stack.deployments_dir / "flows" / "needs-package" / "requirements.txt"
        assert missing.startswith("flow 'needs-package': node 'shout': source.path: ")
        assert f"module '{MISSING}' is not installed: list its package in {requirements}" in missing
        assert "`promptpulse flows install`" in missing
        assert set(listing["problems"]) >= {*rows["broken"]["problems"], *rows["dangling"]["problems"], missing}

        # The log says it too, naming the files.
        log = stack.gateway.log_path.read_text()
        assert "deployment 'broken' does not load" in log and "deployment 'needs-package' does not load" in log

        # The processor and the aggregator started with the broken file present and work: the
        # demo request is judged, and the judgements are stored.
        status, health = await get(stack, "processor", "/healthz")
        assert status == 200 and health["deployments"] == ["demo"], health
        assert health["unavailable_deployments"] == ["broken"]  # it reads no flows: only the file's key
        async with aiohttp.ClientSession() as session, session.get(f"{stack.processor.url}/metrics") as resp:
            metrics = await resp.text()
        assert metric_value(metrics, "promptpulse_processor_deployment_unavailable", deployment="broken") == 1
        async with aiohttp.ClientSession() as session, session.get(f"{stack.gateway.url}/metrics") as resp:
            metrics = await resp.text()
        status_of = "promptpulse_gateway_deployment_status"
        assert metric_value(metrics, status_of, deployment="needs-package", status="unavailable") == 1
        assert metric_value(metrics, status_of, deployment="echo", status="serving") == 1

        async def judged() -> list[str]:
            conn = await asyncpg.connect(stack.database_url, timeout=10)
            try:
                rows = await conn.fetch("SELECT metric, outcome FROM evaluations WHERE request_id = $1", demo_request)
            finally:
                await conn.close()
            return sorted(f"{r['metric']}:{r['outcome']}" for r in rows) if len(rows) >= 4 else []

        assert await stack.wait_for(judged, 90, "the demo request's evaluations in PostgreSQL") == [
            "coherence:scored", "fluency:scored", "groundedness:scored", "relevance:scored"]
        deployments = await stack.api("/v1/deployments")
        assert "demo" in {d["name"] for d in deployments["deployments"]}
