"""Direct alert destinations against real Kafka and PostgreSQL, with loopback HTTP receivers
standing in for Slack, Microsoft Teams, PagerDuty and a webhook consumer (the far ends we cannot
reach from a test). Transitions come from the real pipeline with the evaluation clock chosen by
the test (as in test_aggregator_monitors.py); each receiver checks the provider's documented
shape, and the signed webhook is verified by a verifier written here from docs/alerting.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.alerts import build_alert
from services.aggregator.monitors.destinations.dispatcher import Dispatcher
from services.aggregator.monitors.destinations.outbox import enqueue, monitor_targets
from services.aggregator.monitors.publisher import DeliveryStats, publish_pending
from services.aggregator.monitors.service import MonitorService
from services.aggregator.monitors.statistics import FIRING, Estimate
from shared.deployments import Monitor, load_deployments
from shared.events.codec import encode_alert_json
from shared.kafka import make_producer
from shared.topics import Topics
from tests.integration.test_aggregator_monitors import (
    AVERAGE,
    SCRIPT,
    ingested,
    minute_base,
    monitor_settings,
    read_alerts,
    script_messages,
    step,
    write_deployments,
)
from tests.support.aggregator import wait_for
from tests.support.alertmanager import serving

READ_KEY, ADMIN_KEY = "read-key-for-destinations-1234", "admin-key-for-destinations-1234"
# The credentials, as an operator would set them; none may appear anywhere they are not sent.
SECRETS = {
    "PP_IT_SLACK_URL": "/slack/services/T0TEAM/B0HOOK/xoxSlackToken42",
    "PP_IT_TEAMS_URL": "/teams/workflows/teams-sig-Teams0Secret42",
    "PP_IT_PD_KEY": "R0UTINGKEYpagerduty0000000000042",
    "PP_IT_HOOK_URL": "/hook/in?token=HookUrlToken42",
    "PP_IT_HOOK_SECRET": "whsec-SigningSecret-42",
}
DESTINATIONS = [
    {"name": "chat", "kind": "slack", "url_env": "PP_IT_SLACK_URL"},
    {"name": "team", "kind": "teams", "url_env": "PP_IT_TEAMS_URL"},
    {"name": "pager", "kind": "pagerduty", "routing_key_env": "PP_IT_PD_KEY"},  # events_url set per test
    {"name": "audit", "kind": "webhook", "url_env": "PP_IT_HOOK_URL", "secret_env": "PP_IT_HOOK_SECRET"},
]
TOLERANCE = 300


# -- the far ends -------------------------------------------------------------------------------------

@dataclass
class Receiver:
    """One loopback endpoint: records what it got and answers the statuses it is given, in turn
    (``"hang"``: answer nothing until the sender's timeout has passed)."""

    answers: list[int | str] = field(default_factory=lambda: [200])
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        answer = self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]
        if answer == "hang":
            await asyncio.sleep(3)
            answer = 200
        return web.Response(status=int(answer), headers={"Retry-After": "0"} if answer == 429 else None)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.calls]


@asynccontextmanager
async def far_ends(**receivers: Receiver) -> AsyncIterator[str]:
    """slack, teams, pagerduty and hook receivers on one loopback server; yields its base URL."""
    app = web.Application()
    app.router.add_post("/slack/{tail:.*}", receivers["slack"].handle)
    app.router.add_post("/teams/{tail:.*}", receivers["teams"].handle)
    app.router.add_post("/v2/enqueue", receivers["pagerduty"].handle)
    app.router.add_post("/hook/in", receivers["hook"].handle)
    # No access log: the far end's own log of the URLs it serves is not ours (and holds them).
    async with serving(app, access_log=None) as base:
        yield base


def set_credentials(monkeypatch: pytest.MonkeyPatch, base: str) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, base + value if value.startswith("/") else value)


def destinations(base: str) -> list[dict[str, Any]]:
    return [{**d, "events_url": f"{base}/v2/enqueue"} if d["kind"] == "pagerduty" else d for d in DESTINATIONS]


def deployment_folder(folder: Path, base: str, monitors: list[dict]) -> Path:
    write_deployments(folder, monitors)
    path = folder / "demo.yaml"
    import yaml

    spec = yaml.safe_load(path.read_text())
    spec["destinations"] = destinations(base)
    path.write_text(yaml.safe_dump(spec))
    return folder


def verify(secret: str, headers: dict[str, str], body: bytes, now: float, tolerance: int = TOLERANCE) -> bool:
    """The receiver's check of docs/alerting.md, written independently of the sender."""
    try:
        timestamp = int(headers["X-PromptPulse-Timestamp"])
    except (KeyError, ValueError):
        return False
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get("X-PromptPulse-Signature", "")):
        return False
    return abs(now - timestamp) <= tolerance


def assert_no_secret(text: str, where: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name}'s value is in {where}"


@asynccontextmanager
async def monitor_service(settings: Any) -> AsyncIterator[tuple[MonitorService, asyncpg.Pool]]:
    """The evaluator as app.py runs it (files synced, producer and HTTP session open), its loop not
    started: the test calls ``once(now)``."""
    pool = await create_pool(settings)
    service = MonitorService(settings, pool)
    try:
        await service.sync_files()
        await service.open()
        yield service, pool
    finally:
        await service.close()
        await pool.close()


async def log_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM delivery_log ORDER BY id")


# -- the tests ----------------------------------------------------------------------------------------

async def test_each_destination_gets_its_documented_shape_firing_then_resolved(
    fresh_database, tmp_path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    receivers = {kind: Receiver([202] if kind == "pagerduty" else [200])
                 for kind in ("slack", "teams", "pagerduty", "hook")}
    base_minute = minute_base()
    async with far_ends(**receivers) as base:
        set_credentials(monkeypatch, base)
        monitor = {**AVERAGE, "severity": "critical", "runbook_url": "https://runbooks.example.com/rel"}
        settings = monitor_settings(fresh_database, deployment_folder(tmp_path / "d", base, [monitor]))
        settings.aggregator.public_url = "https://promptpulse.example.com"
        async with ingested(settings, script_messages(base_minute, SCRIPT)), monitor_service(settings) as (service, pool):
            for minute in (1, 2):
                await service.once(step(base_minute, minute))
            assert await service.dispatcher.deliver_due() == 4
            fired_at = receivers["hook"].calls[0] if receivers["hook"].calls else None
            await service.once(step(base_minute, 3))
            assert await service.dispatcher.deliver_due() == 4
            rows = await log_rows(pool)
            outbox = await pool.fetch("SELECT * FROM alert_deliveries ORDER BY id")
            alerts = await pool.fetch("SELECT event_id, state FROM alerts ORDER BY id")

    assert [a["state"] for a in alerts] == ["firing", "resolved"]
    firing_id, resolved_id = (a["event_id"] for a in alerts)
    # Slack: Block Kit, the summary as fallback text, buttons to the dashboard and the runbook.
    slack = receivers["slack"].bodies()
    assert len(slack) == 2 and all(isinstance(m["blocks"], list) and m["blocks"] for m in slack)
    assert slack[0]["text"].startswith("[FIRING] rel-avg") and slack[1]["text"].startswith("[RESOLVED] rel-avg")
    assert slack[0]["blocks"][0]["type"] == "header"
    buttons = next(b for b in slack[0]["blocks"] if b["type"] == "actions")["elements"]
    assert buttons[0]["url"].startswith("https://promptpulse.example.com/dashboard/#/d/demo?")
    assert buttons[1]["url"] == "https://runbooks.example.com/rel"
    # Teams: an Adaptive Card in attachments.
    teams = receivers["teams"].bodies()
    assert len(teams) == 2 and all(m["type"] == "message" for m in teams)
    assert all(m["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive" for m in teams)
    assert teams[0]["attachments"][0]["content"]["type"] == "AdaptiveCard"
    # PagerDuty: trigger then resolve, one dedup key: the monitor's alert key.
    trigger, resolve = receivers["pagerduty"].bodies()
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "rel-avg"
    assert trigger["routing_key"] == resolve["routing_key"] == SECRETS["PP_IT_PD_KEY"]
    assert trigger["payload"]["severity"] == "critical" and trigger["payload"]["source"] == "promptpulse/demo/a"
    assert trigger["payload"]["summary"].startswith("[FIRING] rel-avg: average score of relevance")
    # The webhook: the alert's JSON, signed; verified here, and its replay and tampered twins refused.
    assert fired_at is not None
    secret = SECRETS["PP_IT_HOOK_SECRET"]
    for (headers, body), event_id in zip(receivers["hook"].calls, (firing_id, resolved_id), strict=True):
        sent = int(headers["X-PromptPulse-Timestamp"])
        assert verify(secret, headers, body, sent + 1)
        assert json.loads(body)["eventId"] == headers["X-PromptPulse-Event-Id"] == event_id
        assert not verify(secret, headers, body, sent + TOLERANCE + 1)  # replayed later: too old
        assert not verify(secret, headers, body.replace(b"rel-avg", b"rel-xyz"), sent + 1)  # tampered
        assert not verify(secret, headers | {"X-PromptPulse-Timestamp": str(sent + 1000)}, body, sent + 1000)
    # Every delivery logged, at its first attempt (the four destinations of one change are sent at once).
    assert [sorted((r["destination"], r["attempt"], r["outcome"], r["http_status"])
                   for r in rows if r["alert_state"] == state) for state in ("firing", "resolved")] == [
        sorted((name, 1, "delivered", 202 if name == "pager" else 200) for name in ("chat", "team", "pager", "audit"))
    ] * 2
    assert [r["alert_state"] for r in rows] == ["firing"] * 4 + ["resolved"] * 4
    assert {r["kind"] for r in rows} == {"slack", "teams", "pagerduty", "webhook"}
    assert all(r["monitor_id"] == "rel-avg" and r["deployment"] == "demo" for r in rows)
    # The outbox names the variables, never their values; nothing secret was logged.
    assert_no_secret(json.dumps([dict(r["target"]) if isinstance(r["target"], dict) else r["target"]
                                 for r in outbox]), "the outbox")
    assert "PP_IT_SLACK_URL" in str(outbox[0]["target"])
    assert_no_secret(caplog.text, "the logs")


async def test_failures_are_retried_with_backoff_and_a_4xx_is_final(
    fresh_database, tmp_path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    receivers = {"slack": Receiver([500, 500, 200]), "teams": Receiver([400]),
                 "pagerduty": Receiver(["hang", 202]), "hook": Receiver([429, 200])}
    base_minute = minute_base()
    async with far_ends(**receivers) as base:
        set_credentials(monkeypatch, base)
        settings = monitor_settings(fresh_database, deployment_folder(tmp_path / "d", base, [AVERAGE]),
                                    webhook_retry_initial_seconds=0.05, webhook_retry_max_seconds=0.2,
                                    webhook_timeout_seconds=0.5, webhook_max_attempts=5)
        async with ingested(settings, script_messages(base_minute, SCRIPT)), monitor_service(settings) as (service, pool):
            # Firing, then resolved at once: each resolution must wait for its firing's retries.
            for minute in (1, 2, 3):
                await service.once(step(base_minute, minute))

            async def settled() -> bool:
                await service.dispatcher.deliver_due()
                return not await pool.fetchval("SELECT count(*) FROM alert_deliveries WHERE state = 'pending'")

            await wait_for(settled, 30, "every destination to be delivered or given up")
            rows = await log_rows(pool)
            states: dict[str, list[asyncpg.Record]] = {}
            for r in await pool.fetch("SELECT d.*, a.state AS alert_state FROM alert_deliveries d "
                                      "JOIN alerts a ON a.id = d.alert_id ORDER BY d.id"):
                states.setdefault(r["destination"], []).append(r)

    def attempts(name: str) -> list[tuple[str, int, int | None, str, str | None]]:
        return [(r["alert_state"], r["attempt"], r["http_status"], r["outcome"], r["error"])
                for r in rows if r["destination"] == name]

    # In the order sent: the firing's attempts first, the resolution only once the firing is settled.
    assert attempts("chat") == [("firing", 1, 500, "retrying", "HTTP 500"), ("firing", 2, 500, "retrying", "HTTP 500"),
                                ("firing", 3, 200, "delivered", None), ("resolved", 1, 200, "delivered", None)]
    # A 4xx is final: one attempt (the resolution, sent once the firing gave up, is refused as well).
    assert attempts("team") == [("firing", 1, 400, "failed", "HTTP 400"), ("resolved", 1, 400, "failed", "HTTP 400")]
    assert attempts("pager") == [("firing", 1, None, "retrying", "request failed (TimeoutError)"),
                                 ("firing", 2, 202, "delivered", None), ("resolved", 1, 202, "delivered", None)]
    assert [b["event_action"] for b in receivers["pagerduty"].bodies()] == ["trigger", "trigger", "resolve"]
    assert attempts("audit") == [("firing", 1, 429, "retrying", "HTTP 429"), ("firing", 2, 200, "delivered", None),
                                 ("resolved", 1, 200, "delivered", None)]
    assert len(receivers["teams"].calls) == 2
    assert [(s["alert_state"], s["state"], s["attempts"]) for s in states["chat"]] == [
        ("firing", "delivered", 3), ("resolved", "delivered", 1)]
    assert [(s["state"], s["last_error"]) for s in states["team"]] == [("failed", "HTTP 400")] * 2
    # The retried webhook was signed anew: both attempts verify, each with its own timestamp.
    for headers, body in receivers["hook"].calls:
        assert verify(SECRETS["PP_IT_HOOK_SECRET"], headers, body, int(headers["X-PromptPulse-Timestamp"]))
    assert "destination team (teams): HTTP 400 (attempt 1, giving up)" in caplog.text
    assert_no_secret(caplog.text, "the logs")


async def test_a_silenced_transition_reaches_the_topic_but_no_destination(
    fresh_database, tmp_path, monkeypatch
) -> None:
    receivers = {kind: Receiver() for kind in ("slack", "teams", "pagerduty", "hook")}
    base_minute = minute_base()
    async with far_ends(**receivers) as base:
        set_credentials(monkeypatch, base)
        folder = deployment_folder(tmp_path / "d", base, [AVERAGE])
        settings = monitor_settings(fresh_database, folder)
        async with ingested(settings, []):
            pool = await create_pool(settings)
            service = MonitorService(settings, pool)  # its migrations, and its sync of the file's monitors
            await service.sync_files()
            producer = make_producer(settings, "it-silenced")
            await producer.start()
            try:
                # A transition whose Alert says silenced (oncall-silence's evaluator sets the field).
                file = load_deployments(folder, check_flow=False)["demo"]
                monitor = Monitor.model_validate(AVERAGE)
                start, end = base_minute, step(base_minute, 1).replace(second=0)
                record = build_alert(monitor, "demo", FIRING, start, end, Estimate(1.5, 4, 1.0, 2.0))
                record.alert.silenced = True
                payload = encode_alert_json(record.alert).decode()
                alert_id = await pool.fetchval(
                    """INSERT INTO alerts (event_id, monitor_id, deployment, variant, statistic, metric, state,
                           window_start, window_end, value, threshold, sample_count, message, payload, webhook_state)
                       VALUES ($1, 'rel-avg', 'demo', 'a', 'average', 'relevance', 'firing', $2, $3, 1.5, 3.5, 4,
                               $4, $5, 'none') RETURNING id""",
                    record.alert.event_id, start, end, record.alert.message, payload)
                # And a row no code can read (a payload that is not an Alert): closed, not retried for ever.
                broken_id = await pool.fetchval(
                    """INSERT INTO alerts (event_id, monitor_id, deployment, variant, statistic, metric, state,
                           window_start, window_end, value, threshold, sample_count, message, payload, webhook_state)
                       VALUES ('broken-1', 'rel-avg', 'demo', 'a', 'average', 'relevance', 'resolved', $1, $2, 4,
                               3.5, 4, 'm', '{"not": "an alert"', 'none') RETURNING id""", end, end + (end - start))
                async with pool.acquire() as conn:
                    await enqueue(conn, alert_id, monitor_targets(monitor, file.destinations))
                    await enqueue(conn, broken_id, [{"kind": "slack", "name": "chat", "url_env": "PP_IT_SLACK_URL"}])
                stats = DeliveryStats()
                dispatcher = Dispatcher(pool, settings.aggregator.monitors, stats, None)
                delivered = await dispatcher.deliver_due()
                # The broken row is the monitor's next change for chat: due once the silenced one is closed.
                assert await dispatcher.deliver_due() == 0
                await dispatcher.close()
                published = await publish_pending(pool, producer, Topics.from_settings(settings).alerts,
                                                  settings.aggregator.monitors, stats)
                on_topic = await read_alerts(settings, expected=1)
                outbox = await pool.fetch("SELECT destination, state, attempts, last_error FROM alert_deliveries "
                                          "ORDER BY id")
                rows = await log_rows(pool)
            finally:
                await producer.stop()
                await service.close()
                await pool.close()

    assert delivered == 0 and stats.silenced == 4
    assert all(not r.calls for r in receivers.values())  # no receiver was called
    assert [(r["destination"], r["state"], r["attempts"]) for r in outbox[:4]] == [
        ("chat", "silenced", 0), ("team", "silenced", 0), ("pager", "silenced", 0), ("audit", "silenced", 0)]
    assert [(r["state"], r["last_error"]) for r in outbox[4:]] == [("failed", "stored alert unreadable")]
    assert sorted((r["destination"], r["outcome"], r["attempt"], r["http_status"]) for r in rows) == sorted(
        (name, "silenced", 0, None) for name in ("chat", "team", "pager", "audit"))
    # The topic still carries it, marked silenced.
    assert published == 1
    [(key, body)] = on_topic
    assert key == "rel-avg" and body["silenced"] is True and body["eventId"] == record.alert.event_id


async def test_an_inline_webhook_url_still_works_and_warns_once_without_the_url(
    fresh_database, tmp_path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    receivers = {kind: Receiver() for kind in ("slack", "teams", "pagerduty", "hook")}
    base_minute = minute_base()
    async with far_ends(**receivers) as base:
        inline = f"{base}/slack/services/T0/B0/InlineToken42"
        folder = write_deployments(tmp_path / "d", [{**AVERAGE, "notification": {"webhook_url": inline}}])
        settings = monitor_settings(fresh_database, folder)
        async with ingested(settings, script_messages(base_minute, SCRIPT)):
            caplog.clear()  # the ingesting aggregator loaded the file too: count one load, the service's
            async with monitor_service(settings) as (service, pool):
                for minute in (1, 2):
                    await service.once(step(base_minute, minute))
                assert await service.dispatcher.deliver_due() == 1
                rows = await log_rows(pool)

    # One warning for the load, naming the deployment and monitor; evaluating and sending add none.
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert warnings == ["deployment demo, monitor rel-avg: notification.webhook_url is deprecated and will be "
                        "removed in the next release; name an environment variable instead (a destination's "
                        "url_env, or notification.webhook_url_env)"]
    [(headers, body)] = receivers["slack"].calls
    message = json.loads(body)
    assert message["text"].startswith("[FIRING] rel-avg") and message["attachments"]  # the body it always had
    assert [(r["destination"], r["kind"], r["outcome"], r["http_status"]) for r in rows] == [
        ("notification.webhook", "legacy_webhook", "delivered", 200)]
    assert "InlineToken42" not in caplog.text
