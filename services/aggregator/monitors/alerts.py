"""An alert state change as the proto Alert (canonical JSON on the alerts topic) and as a
Slack-compatible webhook body. Pure code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.aggregator.monitors.statistics import FIRING, Estimate
from shared.deployments import Monitor, format_duration
from shared.events.builders import new_event_id, timestamp
from shared.events.codec import encode
from shared.events.messages import Alert, AlertState, AlertStatistic

_STATISTICS = {
    "average": AlertStatistic.ALERT_STATISTIC_AVERAGE,
    "pass_rate": AlertStatistic.ALERT_STATISTIC_PASS_RATE,
    "error_rate": AlertStatistic.ALERT_STATISTIC_ERROR_RATE,
    "latency_p95": AlertStatistic.ALERT_STATISTIC_LATENCY_P95,
    "tokens_per_hour": AlertStatistic.ALERT_STATISTIC_TOKENS_PER_HOUR,
    "cost_per_hour": AlertStatistic.ALERT_STATISTIC_COST_PER_HOUR,
}
_STATES = {"firing": AlertState.ALERT_STATE_FIRING, "resolved": AlertState.ALERT_STATE_RESOLVED}
_LABELS = {
    "average": "average score",
    "pass_rate": "pass rate",
    "error_rate": "error rate",
    "latency_p95": "p95 latency (s)",
    "tokens_per_hour": "tokens per hour",
    "cost_per_hour": "cost per hour",
}


def metric_name(monitor: Monitor) -> str:
    """What the alert's ``metric`` field says: the quality metric, or the operational
    statistic itself (so a reader that predates the operational enum values still knows)."""
    return monitor.metric or monitor.statistic


def describe(monitor: Monitor, deployment: str, state: str, result: Estimate, extra: str = "") -> str:
    scope = deployment if monitor.variant is None else f"{deployment}/{monitor.variant}"
    what = _LABELS[monitor.statistic] + (f" of {monitor.metric}" if monitor.metric else "")
    if monitor.statistic == "pass_rate":
        what += f" (score >= {monitor.effective_score_threshold})"
    value = "n/a" if result.value is None else f"{result.value:.4g}"
    verb = "is" if state == FIRING else "is back"
    side = monitor.violated_when if state == FIRING else ("above" if monitor.violated_when == "below" else "below")
    text = (
        f"[{state.upper()}] {monitor.id}: {what} on {scope} {verb} {side} {monitor.threshold:g} "
        f"({value} over {format_duration(monitor.window)}, {result.sample_count} samples"
    )
    if result.ci_low is not None and result.ci_high is not None and result.ci_low != result.ci_high:
        text += f", interval {result.ci_low:.4g}-{result.ci_high:.4g}"
    text += ")"
    return f"{text}. {extra}".strip() if extra else text


@dataclass(frozen=True)
class AlertRecord:
    """One state change: the proto message and the exact bytes published for it."""

    alert: Alert
    payload: str  # canonical JSON
    headers: list[tuple[str, bytes]]


def build_alert(
    monitor: Monitor,
    deployment: str,
    state: str,
    window_start: datetime,
    window_end: datetime,
    result: Estimate,
    *,
    extra: str = "",
    now: datetime | None = None,
    silenced: bool = False,
) -> AlertRecord:
    alert = Alert(
        event_id=new_event_id(),
        monitor_id=monitor.id,
        deployment=deployment,
        variant=monitor.variant or "",
        metric=metric_name(monitor),
        statistic=_STATISTICS[monitor.statistic],
        state=_STATES[state],
        value=result.value if result.value is not None else 0.0,
        threshold=monitor.threshold,
        sample_count=min(result.sample_count, 2**32 - 1),
        confidence_low=result.ci_low if result.ci_low is not None else 0.0,
        confidence_high=result.ci_high if result.ci_high is not None else 0.0,
        message=describe(monitor, deployment, state, result, extra),
        pass_score=monitor.effective_score_threshold if monitor.statistic == "pass_rate" else 0,
        silenced=silenced,
    )
    alert.event_time.CopyFrom(timestamp(now))
    alert.window_start.CopyFrom(timestamp(window_start))
    alert.window_end.CopyFrom(timestamp(window_end))
    encoded = encode(alert)  # validates too
    return AlertRecord(alert, encoded.value.decode(), encoded.headers)


def slack_body(row: dict[str, Any]) -> bytes:
    """A Slack incoming-webhook body (``text`` plus a coloured attachment) for a stored alert
    row; services that accept Slack's format (Mattermost, Rocket.Chat, Teams workflows) read it."""
    firing = row["state"] == "firing"
    fields = [
        {"title": "Deployment", "value": row["deployment"] + (f" / {row['variant']}" if row["variant"] else ""),
         "short": True},
        {"title": "Monitor", "value": row["monitor_id"], "short": True},
        {"title": "Value", "value": "n/a" if row["value"] is None else f"{row['value']:.4g}", "short": True},
        {"title": "Threshold", "value": f"{row['threshold']:g}", "short": True},
        {"title": "Samples", "value": str(row["sample_count"]), "short": True},
        {"title": "Window", "value": f"{row['window_start'].isoformat()} - {row['window_end'].isoformat()}",
         "short": False},
    ]
    body = {
        "text": row["message"],
        "attachments": [
            {"color": "#d40e0d" if firing else "#2eb886", "fallback": row["message"], "fields": fields}
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()
