"""Silences of direct destinations on a real aggregator (Kafka, Postgres, HTTP on loopback,
a webhook receiver on loopback): a silenced monitor's transitions are on the alerts topic marked
``silenced`` and do not reach its webhook while an unsilenced monitor's do; once the silence is
over, delivery is back. The API's keys and its refusals, and the CLI end to end.

The evaluation clock is the test's (``once(step(...))``); silences run on the wall clock, so
"the silence expired" is its row moved into the past, as two hours passing would leave it.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from services.aggregator.app import MONITORS
from tests.integration.test_aggregator_api import (
    ADMIN,
    ADMIN_KEY,
    AVERAGE,
    READ,
    READ_KEY,
    Stack,
)
from tests.integration.test_aggregator_api import stack as stack_fixture
from tests.integration.test_aggregator_monitors import (
    _Hook,
    hook_server,
    read_alerts,
    scored,
    step,
)
from tests.support.aggregator import produce, wait_caught_up, wait_for

REPO = Path(__file__).resolve().parents[2]
stack = stack_fixture  # the API tests' aggregator, under the name its tests ask for
SILENCES = "/v1/deployments/demo/monitors/rel-avg/silences"
# Minutes after the stack's base: variant a already has 0: fine, 1: bad, 2: fine. These add the
# same for variant b, and for both a second episode, 3: bad, 4: fine.
MORE = {"b": {0: [5, 5, 4, 5], 1: [1, 2, 1, 2], 2: [5, 4, 5, 2], 3: [1, 1, 2, 1], 4: [5, 5, 4, 5]},
        "a": {3: [1, 1, 2, 1], 4: [5, 5, 4, 5]}}


async def _post(stack: Stack, path: str, body: object, headers: dict | None = None) -> tuple[int, dict]:
    async with stack.http.post(stack.url + path, json=body, headers=ADMIN if headers is None else headers) as r:
        return r.status, await r.json()


async def _delete(stack: Stack, path: str, headers: dict | None = None) -> tuple[int, dict]:
    async with stack.http.delete(stack.url + path, headers=ADMIN if headers is None else headers) as r:
        return r.status, await r.json()


@pytest.mark.timeout(180)
async def test_a_silenced_monitor_is_on_the_topic_marked_silenced_and_not_sent_to_its_webhook_until_it_ends(
    stack: Stack,
) -> None:
    rng = random.Random(41)
    messages = [scored("demo", variant, "relevance", stack.base + timedelta(minutes=minute, seconds=5 + i), score,
                       rng)
                for variant, script in MORE.items() for minute, scores in script.items()
                for i, score in enumerate(scores)]
    await produce(stack.settings, messages)
    await wait_caught_up(stack.settings)
    service = stack.app[MONITORS]
    await service.open()  # monitors are disabled here (no loop): the test drives the passes
    silenced_hook, open_hook = _Hook([200]), _Hook([200])
    async with hook_server(silenced_hook, open_hook) as urls:
        monitors = {"monitors": [
            {**AVERAGE, "notification": {"webhook_url": urls[0]}},
            {**AVERAGE, "id": "rel-avg-b", "variant": "b", "notification": {"webhook_url": urls[1]}},
        ]}
        async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=ADMIN, json=monitors) as r:
            assert r.status == 200, await r.text()
        status, silence = await _post(stack, SILENCES, {"duration": "2h", "reason": "known issue, on it",
                                                        "created_by": "alice"})
        assert status == 201, silence

        async def settle(minute: int) -> None:
            async def settled() -> bool:
                await service.once(step(stack.base, minute))  # nothing new to evaluate
                await service.dispatcher.deliver_due()  # the service's own task does this when it runs
                return not await stack.sql("SELECT 1 FROM alert_deliveries WHERE state = 'pending'")

            await wait_for(settled, 30, "webhook deliveries to settle")

        for minute in (1, 2, 3):  # a fires (window of minute 1) and resolves (minute 2), b too
            await service.once(step(stack.base, minute))
        await settle(3)
        during = list(silenced_hook.calls), list(open_hook.calls)
        # Alertmanager's outbox has both silenced changes: silencing there is Alertmanager's job.
        mirrored = await stack.sql("SELECT state, version, alert_event_id FROM alertmanager_alerts "
                                   "WHERE monitor_id = 'rel-avg'")
        # Two hours later: the silence is over.
        await stack.sql("UPDATE monitor_silences SET created_at = now() - interval '3 hours', "
                        "ends_at = now() - interval '1 hour'")
        listed = await stack.json("/v1/deployments/demo/silences")
        for minute in (4, 5):  # both fire again (minute 3) and resolve (minute 4)
            await service.once(step(stack.base, minute))
        await settle(5)
        alerts = await read_alerts(stack.settings, expected=8)
        api_alerts = await stack.json("/v1/alerts?deployment=demo&monitor=rel-avg")
        states = await stack.sql("SELECT d.state, a.silenced FROM alerts a JOIN alert_deliveries d ON d.alert_id = a.id "
                                 "WHERE a.monitor_id = 'rel-avg' ORDER BY a.id")
        logged = await stack.sql("SELECT outcome FROM delivery_log WHERE monitor_id = 'rel-avg' ORDER BY id")

    on_topic: dict[str, list[tuple[str, bool]]] = {}
    for key, body in alerts:
        on_topic.setdefault(key, []).append((body["state"].removeprefix("ALERT_STATE_"), body.get("silenced", False)))
    assert on_topic["rel-avg"] == [("FIRING", True), ("RESOLVED", True), ("FIRING", False), ("RESOLVED", False)]
    resolved_event = next(b["eventId"] for k, b in alerts if k == "rel-avg" and b.get("silenced")
                          and b["state"] == "ALERT_STATE_RESOLVED")
    assert [(r["state"], r["version"], r["alert_event_id"]) for r in mirrored] == [("resolved", 2, resolved_event)]
    assert on_topic["rel-avg-b"] == [("FIRING", False), ("RESOLVED", False), ("FIRING", False), ("RESOLVED", False)]
    # While silenced, nothing reached rel-avg's receiver; rel-avg-b's got both of its changes.
    assert during[0] == []
    assert [c[1]["text"][:20] for c in during[1]] == ["[FIRING] rel-avg-b: ", "[RESOLVED] rel-avg-b"]
    # After the silence, the second episode reached both.
    assert [c[1]["text"].split(":")[0] for c in silenced_hook.calls] == ["[FIRING] rel-avg", "[RESOLVED] rel-avg"]
    assert len(open_hook.calls) == 4
    assert [(r["state"], r["silenced"]) for r in states] == [
        ("silenced", True), ("silenced", True), ("delivered", False), ("delivered", False)]
    assert [r["outcome"] for r in logged] == ["silenced", "silenced", "delivered", "delivered"]
    assert [a["silenced"] for a in api_alerts["alerts"]] == [False, False, True, True]  # newest first
    assert [s["state"] for s in listed["silences"]] == ["expired"]


@pytest.mark.timeout(120)
async def test_silences_need_the_admin_key_and_bad_input_is_a_400_naming_the_field(stack: Stack) -> None:
    good = {"duration": "2h", "reason": "deploy in progress", "created_by": "alice"}
    async with stack.http.post(stack.url + SILENCES, json=good) as r:
        assert r.status == 401
    assert (await _post(stack, SILENCES, good, READ))[0] == 403
    assert (await _delete(stack, SILENCES, READ))[0] == 403
    refusals = [
        ({**good, "duration": "0m"}, "duration"), ({**good, "duration": "-1h"}, "duration"),
        ({**good, "duration": "31d"}, "duration"), ({**good, "duration": "30s"}, "duration"),
        ({**good, "duration": "soon"}, "duration"), ({**good, "duration": 7200}, "duration"),
        ({"reason": "x", "created_by": "a"}, "duration"), ({**good, "reason": "  "}, "reason"),
        ({**good, "reason": "two\nlines"}, "reason"), ({**good, "created_by": ""}, "created_by"),
        ({**good, "until": "tomorrow"}, "until"), ([good], "body"),
    ]
    for body, field in refusals:
        status, answer = await _post(stack, SILENCES, body)
        assert status == 400 and answer["error"]["field"] == field, (body, answer)
        assert answer["error"]["message"].startswith(f"{field}:"), answer
    status, answer = await _post(stack, "/v1/deployments/demo/monitors/no-such/silences", good)
    assert status == 404 and answer["error"]["field"] == "monitor_id", answer
    assert (await _post(stack, "/v1/deployments/nope/monitors/rel-avg/silences", good))[0] == 404
    assert not await stack.sql("SELECT 1 FROM monitor_silences")  # no refusal stored anything

    status, made = await _post(stack, SILENCES, good)
    assert status == 201 and made["state"] == "active" and made["created_by"] == "alice", made
    assert made["reason"] == "deploy in progress" and made["ended_at"] is None
    listed = await stack.json("/v1/deployments/demo/silences?state=active", headers=READ)
    assert [s["id"] for s in listed["silences"]] == [made["id"]]
    [shown] = (await stack.json("/v1/deployments/demo/monitors"))["monitors"]
    assert shown["silenced_until"] == made["ends_at"]
    status, ended = await _delete(stack, SILENCES + "?by=bob")
    assert status == 200 and [s["id"] for s in ended["ended"]] == [made["id"]]
    assert ended["ended"][0]["state"] == "ended" and ended["ended"][0]["ended_by"] == "bob"
    assert (await _delete(stack, SILENCES))[1]["ended"] == []  # none left in force
    [shown] = (await stack.json("/v1/deployments/demo/monitors"))["monitors"]
    assert shown["silenced_until"] is None
    await stack.json("/v1/deployments/demo/silences?state=sleeping", status=400)
    everything = (await stack.json("/v1/deployments/demo/silences"))["silences"]
    assert [(s["state"], s["ended_by"]) for s in everything] == [("ended", "bob")]


async def _cli(stack: Stack, *args: str, admin_key: str = ADMIN_KEY) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    env |= {"PROMPTPULSE_API_URL": stack.url, "PROMPTPULSE_API_READ_KEY": READ_KEY,
            "PROMPTPULSE_API_ADMIN_KEY": admin_key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.timeout(180)
async def test_cli_silences_a_monitor_lists_and_ends_it_and_sets_severity_and_runbook(stack: Stack) -> None:
    code, out, err = await _cli(stack, "monitors", "demo", "silence", "rel-avg", "--for", "2h",
                                "--reason", "deploy in progress", "--by", "alice")
    assert code == 0, err
    assert "silenced rel-avg of demo until" in out and "by alice" in out
    code, out, err = await _cli(stack, "monitors", "demo", "silences")
    assert code == 0, err
    assert "ACTIVE" in out and "alice" in out and "deploy in progress" in out, out
    code, out, err = await _cli(stack, "monitors", "demo")
    assert code == 0 and "(silenced until" in out, (out, err)
    for duration, why in (("0m", "at least 1m"), ("45d", "at most 30d"), ("2 hours", "is not a duration")):
        code, out, err = await _cli(stack, "monitors", "demo", "silence", "rel-avg", "--for", duration,
                                    "--reason", "r")
        assert code == 2 and "duration" in err and why in err, (duration, err)
    code, _, err = await _cli(stack, "monitors", "demo", "silence", "rel-avg", "--for", "1h", "--reason", "r",
                              admin_key=READ_KEY)
    assert code == 2 and "forbids" in err and READ_KEY not in err, err
    code, _, err = await _cli(stack, "monitors", "demo", "silence", "nope", "--for", "1h", "--reason", "r")
    assert code == 4 and "no monitor 'nope'" in err, err
    code, out, err = await _cli(stack, "monitors", "demo", "unsilence", "rel-avg", "--by", "bob")
    assert code == 0 and "ended 1 silence(s) of rel-avg" in out, (out, err)
    code, out, err = await _cli(stack, "monitors", "demo", "silences")
    assert code == 0 and "ended by bob" in out and "ACTIVE" not in out, out

    code, out, err = await _cli(stack, "monitors", "demo", "set", "rel-avg", "--severity", "critical",
                                "--runbook-url", "https://runbooks.example/relevance")
    assert code == 0, err
    [stored] = (await stack.json("/v1/deployments/demo/monitors"))["monitors"]
    assert stored["severity"] == "critical" and stored["runbook_url"] == "https://runbooks.example/relevance"
    for flag, value, field in (("--severity", "Very Bad", "severity"), ("--runbook-url", "ftp://x", "runbook_url")):
        code, _, err = await _cli(stack, "monitors", "demo", "set", "rel-avg", flag, value)
        assert code == 2 and f"monitors[0].{field}" in err, err
    code, _, err = await _cli(stack, "monitors", "demo", "set", "rel-avg", "--runbook-url", "")
    assert code == 0, err
    [stored] = (await stack.json("/v1/deployments/demo/monitors"))["monitors"]
    assert "runbook_url" not in stored and stored["severity"] == "critical"
