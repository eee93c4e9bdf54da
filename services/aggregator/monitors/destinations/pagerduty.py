"""A PagerDuty Events API v2 event (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
``trigger`` when a monitor fires, ``resolve`` when it resolves, both with ``dedup_key`` = the
monitor's alert key (its id, the alerts topic's key), so one monitor is one incident."""

from __future__ import annotations

from typing import Any

from services.aggregator.monitors.destinations.notice import Notice

# PagerDuty knows four severities; a monitor's severity is a free word (docs/deployments.md).
_SEVERITIES = {"critical": "critical", "page": "critical", "error": "error", "warning": "warning",
               "info": "info"}
_SUMMARY_MAX = 1024  # PagerDuty's limit


def pagerduty_severity(severity: str) -> str:
    return _SEVERITIES.get(severity, "warning")


def dedup_key(notice: Notice) -> str:
    # A test's own key, so it never touches the incident of a monitor that happens to share its id.
    return f"{notice.monitor_id}-{notice.event_id}" if notice.test else notice.monitor_id


def pagerduty_event(notice: Notice, routing_key: str) -> dict[str, Any]:
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": dedup_key(notice)}
    if not notice.firing:
        event["event_action"] = "resolve"  # a resolve carries nothing else (PagerDuty ignores it)
        return event
    event["event_action"] = "trigger"
    event["payload"] = {
        "summary": notice.message[:_SUMMARY_MAX],
        "severity": pagerduty_severity(notice.severity),
        "source": f"promptpulse/{notice.scope}",
        "component": notice.monitor_id,
        "group": notice.deployment,
        "class": notice.statistic,
        "timestamp": notice.window_end.isoformat(),
        "custom_details": dict(notice.facts()) | {"alert_id": notice.event_id},
    }
    event["client"] = "PromptPulse"
    links = []
    if notice.dashboard_url:
        event["client_url"] = notice.dashboard_url
        links.append({"href": notice.dashboard_url, "text": "Dashboard"})
    if notice.runbook_url:
        links.append({"href": notice.runbook_url, "text": "Runbook"})
    if links:
        event["links"] = links
    return event
