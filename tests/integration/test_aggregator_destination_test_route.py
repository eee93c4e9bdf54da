"""An alert destination's test route, through the aggregator's API and the CLI, against real Kafka
and PostgreSQL with loopback HTTP receivers (test_aggregator_destinations.py's far ends): each
destination gets a [TEST] notification firing then resolved, one whose variables are unset says
so, the delivery log is readable by API and CLI, and no secret shows anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import aiohttp

from tests.integration.test_aggregator_destinations import (
    ADMIN_KEY,
    READ_KEY,
    SECRETS,
    Receiver,
    assert_no_secret,
    deployment_folder,
    far_ends,
    set_credentials,
    verify,
)
from tests.integration.test_aggregator_monitors import AVERAGE, ingested, monitor_settings
from tests.support.aggregator import serving_aggregator

REPO = Path(__file__).resolve().parents[2]


async def cli(api: str, *args: str, key: str = READ_KEY) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_") and not k.startswith("PP_IT_")}
    env |= {"PROMPTPULSE_API_URL": api, "PROMPTPULSE_API_READ_KEY": READ_KEY, "PROMPTPULSE_API_ADMIN_KEY": key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_a_test_notification_goes_through_the_aggregator_and_the_log_is_readable(
    fresh_database, tmp_path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    receivers = {kind: Receiver([202] if kind == "pagerduty" else [200])
                 for kind in ("slack", "teams", "pagerduty", "hook")}
    async with far_ends(**receivers) as base:
        set_credentials(monkeypatch, base)
        folder = deployment_folder(tmp_path / "d", base, [AVERAGE])
        spec = (folder / "demo.yaml").read_text()
        (folder / "demo.yaml").write_text(spec.replace("destinations:\n", "destinations:\n- kind: slack\n"
                                                       "  name: unset\n  url_env: PP_IT_NOT_SET\n", 1))
        settings = monitor_settings(fresh_database, folder, read_key=READ_KEY, admin_key=ADMIN_KEY)
        async with ingested(settings, []), serving_aggregator(settings) as (_, api):
            answers = {}
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
                for name in ("chat", "team", "pager", "audit", "unset"):
                    async with http.post(f"{api}/v1/deployments/demo/destinations/{name}/test") as response:
                        assert response.status == 200, await response.text()
                        answers[name] = await response.text()
                async with http.post(f"{api}/v1/deployments/demo/destinations/nowhere/test") as response:
                    missing = (response.status, await response.json())
                async with http.post(f"{api}/v1/deployments/demo/destinations/chat/test",
                                     headers={"Authorization": f"Bearer {READ_KEY}"}) as response:
                    read_only = response.status
                async with http.get(f"{api}/v1/destinations") as response:
                    listed = await response.text()
                async with http.get(f"{api}/v1/deliveries?deployment=demo&destination=pager") as response:
                    pager_log = await response.json()
            code, out, err = await cli(api, "alerts", "test", "chat", key=ADMIN_KEY)
            unset_code, unset_out, _ = await cli(api, "alerts", "test", "demo/unset", key=ADMIN_KEY)
            log_code, log_out, _ = await cli(api, "alerts", "deliveries", "demo")
            json_code, json_out, _ = await cli(api, "alerts", "deliveries", "--json", "--limit", "100")

    results = {name: json.loads(text) for name, text in answers.items()}
    assert all(results[n]["delivered"] for n in ("chat", "team", "pager", "audit"))
    assert [a["alert_state"] for a in results["pager"]["attempts"]] == ["firing", "resolved"]
    trigger, resolve = receivers["pagerduty"].bodies()[:2]
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] != "promptpulse-test"  # its own incident, closed
    assert receivers["slack"].bodies()[0]["text"].startswith("[TEST] ")
    headers, body = receivers["hook"].calls[0]
    assert verify(SECRETS["PP_IT_HOOK_SECRET"], headers, body, int(headers["X-PromptPulse-Timestamp"]))
    assert results["unset"]["delivered"] is False
    assert results["unset"]["attempts"][0]["error"] == (
        "environment variable PP_IT_NOT_SET (Slack webhook URL) is not set in the aggregator")
    assert missing[0] == 404 and missing[1]["error"]["field"] == "destination"
    assert read_only == 403
    destinations = {d["name"]: d for d in json.loads(listed)["destinations"]}
    assert destinations["audit"]["variables"] == {"url": "PP_IT_HOOK_URL", "secret": "PP_IT_HOOK_SECRET"}
    assert destinations["audit"]["ready"] is True
    assert destinations["unset"]["ready"] is False and destinations["unset"]["missing_variables"] == ["PP_IT_NOT_SET"]
    assert [(d["alert_state"], d["outcome"], d["test"]) for d in pager_log["deliveries"]] == [
        ("resolved", "delivered", True), ("firing", "delivered", True)]
    # The CLI: the test through the aggregator (exit 0, or 1 when not delivered), then the log.
    assert code == 0, err
    assert "demo/chat (slack) test FIRING: HTTP 200, delivered" in out
    assert unset_code == 1 and "NOT delivered: environment variable PP_IT_NOT_SET" in unset_out
    assert log_code == 0 and "chat (slack)  test FIRING  attempt 1  DELIVERED  HTTP 200" in log_out
    assert json_code == 0 and len(json.loads(json_out)["deliveries"]) == 8  # 5 tests (pager: 2 events), then the CLI: chat, unset
    # No secret in any answer, the CLI's output or the logs.
    for where, text in [*((f"the test answer of {n}", t) for n, t in answers.items()),
                        ("GET /v1/destinations", listed), ("GET /v1/deliveries", json_out),
                        ("the CLI", out + err + log_out), ("the logs", caplog.text)]:
        assert_no_secret(text, where)
