"""Direct alert destinations, pure parts: the deployment schema, each kind's request, signing."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator.monitors.alerts import build_alert
from services.aggregator.monitors.destinations.kinds import (
    LEGACY_NAME,
    NotReady,
    outgoing,
    target_of,
)
from services.aggregator.monitors.destinations.notice import Notice
from services.aggregator.monitors.destinations.outbox import monitor_targets
from services.aggregator.monitors.statistics import FIRING, RESOLVED, Estimate
from shared.deployments import Deployment, Monitor
from shared.deployments.errors import DeploymentConfigError

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SLACK_URL = "https://hooks.slack.example/services/T000/B000/s3cr3t-slack-token"
ENV = {"SLACK_URL": SLACK_URL, "TEAMS_URL": "https://teams.example/workflows/s3cr3t-teams",
       "PD_KEY": "s3cr3t-routing-key", "HOOK_URL": "https://hooks.example/in", "HOOK_SECRET": "s3cr3t-signing"}
DESTINATIONS = [
    {"name": "chat", "kind": "slack", "url_env": "SLACK_URL"},
    {"name": "team", "kind": "teams", "url_env": "TEAMS_URL"},
    {"name": "pager", "kind": "pagerduty", "routing_key_env": "PD_KEY"},
    {"name": "audit", "kind": "webhook", "url_env": "HOOK_URL", "secret_env": "HOOK_SECRET"},
]
MONITOR = {"id": "rel-avg", "variant": "a", "statistic": "average", "metric": "relevance", "threshold": 3.5,
           "window": "5m", "severity": "page", "runbook_url": "https://runbooks.example/rel"}


def deployment(monitors: list[dict] | None = None, destinations: list[dict] | None = None) -> Deployment:
    return Deployment.model_validate({
        "name": "demo", "flow": "f", "variants": [{"id": "a"}],
        "column_mapping": {"question": "inputs.q", "answer": "outputs.a"},
        "evaluation": {"metrics": ["relevance"], "judge": {"connection": "j", "model": "m"}},
        "destinations": DESTINATIONS if destinations is None else destinations,
        "monitors": [MONITOR] if monitors is None else monitors,
    })


def notice(state: str = FIRING, **changes: object) -> Notice:
    monitor = Monitor.model_validate(MONITOR)
    end = START + timedelta(minutes=5)
    record = build_alert(monitor, "demo", state, START, end, Estimate(2.25, 40, 1.9, 2.6))
    fields: dict = dict(
        event_id=record.alert.event_id, monitor_id="rel-avg", deployment="demo", variant="a", state=state,
        statistic="average", metric="relevance", message=record.alert.message, value=2.25, threshold=3.5,
        sample_count=40, window_start=START, window_end=end, payload=record.payload, silenced=False,
        severity="page", runbook_url="https://runbooks.example/rel",
        dashboard_url="https://pp.example/dashboard/#/d/demo?from=a&to=b",
    )
    return Notice(**(fields | changes))


def target(name: str) -> dict:
    return target_of(next(d for d in deployment().destinations if d.name == name))


# -- schema -----------------------------------------------------------------------------------------

def test_a_monitor_naming_an_unknown_destination_is_refused_with_its_field_path() -> None:
    bad = {**MONITOR, "notification": {"destinations": ["chat", "nowhere"]}}
    with pytest.raises(ValueError, match=r"monitors\[0\]\.notification\.destinations\[1\]: 'nowhere' is not one"):
        deployment([bad])


def test_destination_names_are_unique_and_credentials_are_only_variable_names() -> None:
    with pytest.raises(ValueError, match=r"destinations\[1\]\.name: 'chat' is listed twice"):
        deployment(destinations=[DESTINATIONS[0], {**DESTINATIONS[1], "name": "chat"}])
    with pytest.raises(ValueError, match="url"):  # a URL in place of a variable name: no such field
        deployment(destinations=[{"name": "chat", "kind": "slack", "url": SLACK_URL}])
    with pytest.raises(ValueError, match="url_env"):
        deployment(destinations=[{"name": "chat", "kind": "slack", "url_env": SLACK_URL}])
    with pytest.raises(ValueError, match="secret_env"):  # the generic webhook is always signed
        deployment(destinations=[{"name": "audit", "kind": "webhook", "url_env": "HOOK_URL"}])


def test_a_monitor_goes_to_every_destination_unless_it_names_some() -> None:
    every = deployment()
    assert [t["name"] for t in monitor_targets(every.monitors[0], every.destinations)] == [
        "chat", "team", "pager", "audit"]
    chosen = deployment([{**MONITOR, "notification": {"destinations": ["pager"]}}])
    assert [t["name"] for t in monitor_targets(chosen.monitors[0], chosen.destinations)] == ["pager"]
    none = deployment([{**MONITOR, "notification": {"destinations": [], "webhook_url_env": "OLD_HOOK"}}])
    assert monitor_targets(none.monitors[0], none.destinations) == [
        {"kind": "legacy_webhook", "name": LEGACY_NAME, "webhook_url_env": "OLD_HOOK"}]
    # What the outbox stores holds variable names, never a value.
    stored = json.dumps([monitor_targets(every.monitors[0], every.destinations)])
    assert not any(value in stored for value in ENV.values())


def test_a_deployment_file_with_destinations_loads(tmp_path) -> None:
    from shared.deployments import load_deployments

    (tmp_path / "connections.yaml").write_text("connections: {j: {type: openai_compatible, "
                                               "base_url: 'http://127.0.0.1:9/v1', api_key: none}}\n")
    (tmp_path / "demo.yaml").write_text(
        "name: demo\nflow: f\nvariants: [{id: a}]\n"
        "destinations:\n  - {name: chat, kind: slack, url_env: SLACK_URL}\n"
        "  - {name: pager, kind: pagerduty, routing_key_env: PD_KEY}\n"
        "monitors:\n  - {id: errors, statistic: error_rate, threshold: 0.1, window: 5m,\n"
        "     notification: {destinations: [pager]}}\n")
    loaded = load_deployments(tmp_path, check_flow=False)["demo"]
    assert [d.kind for d in loaded.destinations] == ["slack", "pagerduty"]
    (tmp_path / "demo.yaml").write_text((tmp_path / "demo.yaml").read_text().replace("[pager]", "[pagr]"))
    with pytest.raises(DeploymentConfigError, match=r"monitors\[0\]\.notification\.destinations\[0\]"):
        load_deployments(tmp_path, check_flow=False)


# -- each kind's request ----------------------------------------------------------------------------

def test_slack_gets_block_kit() -> None:
    request = outgoing(target("chat"), notice(), ENV, 1_900_000_000)
    body = json.loads(request.body)
    assert request.url == SLACK_URL
    assert body["text"].startswith("[FIRING] rel-avg")  # the notification's fallback
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and "actions" in kinds
    assert body["blocks"][0]["text"]["type"] == "plain_text" and len(body["blocks"][0]["text"]["text"]) <= 150
    fields = next(b for b in body["blocks"] if b.get("fields"))["fields"]
    assert len(fields) <= 10 and all(f["type"] == "mrkdwn" for f in fields)
    buttons = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert [b["url"] for b in buttons] == ["https://pp.example/dashboard/#/d/demo?from=a&to=b",
                                           "https://runbooks.example/rel"]


def test_teams_gets_an_adaptive_card() -> None:
    body = json.loads(outgoing(target("team"), notice(RESOLVED), ENV, 0).body)
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0]["text"].startswith("RESOLVED: rel-avg") and card["body"][0]["color"] == "Good"
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert {"title": "Severity", "value": "page"} in facts
    assert all(a["type"] == "Action.OpenUrl" for a in card["actions"])


def test_pagerduty_triggers_then_resolves_one_incident_per_monitor() -> None:
    trigger = json.loads(outgoing(target("pager"), notice(FIRING), ENV, 0).body)
    resolve = json.loads(outgoing(target("pager"), notice(RESOLVED), ENV, 0).body)
    assert trigger["routing_key"] == resolve["routing_key"] == "s3cr3t-routing-key"
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "rel-avg"
    payload = trigger["payload"]
    assert payload["summary"].startswith("[FIRING] rel-avg") and len(payload["summary"]) <= 1024
    assert payload["severity"] == "critical"  # the monitor's "page"
    assert payload["source"] == "promptpulse/demo/a"
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}


def verify(secret: str, headers: dict[str, str], body: bytes, now: int, tolerance: int = 300) -> bool:
    """A receiver's check as docs/alerting.md describes it, written independently of the sender."""
    timestamp = int(headers["X-PromptPulse-Timestamp"])
    expected = "v1=" + hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-PromptPulse-Signature"]) and abs(now - timestamp) <= tolerance


def test_the_webhook_is_the_alerts_json_signed_over_timestamp_and_body() -> None:
    sent_at = 1_900_000_000
    sent = notice()
    request = outgoing(target("audit"), sent, ENV, sent_at)
    assert request.body == sent.payload.encode()  # the alerts topic's JSON, as published
    assert request.headers["X-PromptPulse-Event-Id"] == sent.event_id
    assert verify("s3cr3t-signing", request.headers, request.body, sent_at + 5)
    # The negative twins: a tampered body, an old timestamp, a timestamp moved to look fresh, a wrong secret.
    assert not verify("s3cr3t-signing", request.headers, request.body.replace(b"rel-avg", b"rel-avh"), sent_at)
    assert not verify("s3cr3t-signing", request.headers, request.body, sent_at + 301)
    moved = request.headers | {"X-PromptPulse-Timestamp": str(sent_at + 600)}
    assert not verify("s3cr3t-signing", moved, request.body, sent_at + 600)
    assert not verify("another-secret", request.headers, request.body, sent_at)


def test_an_unset_variable_is_final_and_named_without_any_value() -> None:
    for name, variable in (("chat", "SLACK_URL"), ("pager", "PD_KEY"), ("audit", "HOOK_SECRET")):
        environ = {k: v for k, v in ENV.items() if k != variable}
        with pytest.raises(NotReady) as refused:
            outgoing(target(name), notice(), environ, 0)
        assert variable in str(refused.value)
        assert not any(value in str(refused.value) for value in ENV.values())
