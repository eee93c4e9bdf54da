"""What every destination's message is built from: one alert transition (or a test), plus what
the monitor adds (severity, runbook) and where the dashboard shows the violated window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.aggregator.monitors.alertmanager import dashboard_link
from services.aggregator.monitors.alerts import build_alert
from services.aggregator.monitors.statistics import FIRING, Estimate
from shared.deployments import Monitor
from shared.deployments.monitors import DEFAULT_SEVERITY
from shared.events.codec import decode_alert_json

TEST_MONITOR_ID = "promptpulse-test"


@dataclass(frozen=True)
class Notice:
    event_id: str
    monitor_id: str
    deployment: str
    variant: str  # '' for a whole-deployment monitor
    state: str  # firing | resolved
    statistic: str
    metric: str
    message: str
    value: float | None
    threshold: float
    sample_count: int
    window_start: datetime
    window_end: datetime
    payload: str  # the Alert in canonical JSON, exactly as on the alerts topic
    silenced: bool
    severity: str = DEFAULT_SEVERITY
    runbook_url: str | None = None
    dashboard_url: str | None = None
    test: bool = False

    @property
    def firing(self) -> bool:
        return self.state == FIRING

    @property
    def scope(self) -> str:
        return self.deployment + (f"/{self.variant}" if self.variant else "")

    @property
    def title(self) -> str:
        prefix = "[TEST] " if self.test else ""
        return f"{prefix}{self.state.upper()}: {self.monitor_id} on {self.scope}"

    def facts(self) -> list[tuple[str, str]]:
        """(label, value) pairs every kind shows, in this order."""
        return [
            ("Deployment", self.scope),
            ("Monitor", self.monitor_id),
            ("Metric", self.metric),
            ("Value", "n/a" if self.value is None else f"{self.value:.4g}"),
            ("Threshold", f"{self.threshold:g}"),
            ("Samples", str(self.sample_count)),
            ("Window", f"{_hhmm(self.window_start)} - {_hhmm(self.window_end)} UTC"),
            ("Severity", self.severity),
        ]


def _hhmm(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def notice_from_row(row: Mapping[str, Any] | asyncpg.Record, definition: Mapping[str, Any] | None, public_url: str | None) -> Notice:
    """A stored ``alerts`` row; ``definition``: the monitor's stored definition (None once removed)."""
    alert = decode_alert_json(row["payload"].encode())
    definition = definition or {}
    link = None
    if public_url:
        link = dashboard_link(public_url, row["deployment"], row["variant"] or None, row["window_start"],
                              row["window_end"])
    return Notice(
        event_id=row["event_id"], monitor_id=row["monitor_id"], deployment=row["deployment"],
        variant=row["variant"], state=row["state"], statistic=row["statistic"], metric=alert.metric,
        message=row["message"], value=row["value"], threshold=row["threshold"],
        sample_count=row["sample_count"], window_start=row["window_start"], window_end=row["window_end"],
        payload=row["payload"], silenced=alert.silenced,
        severity=definition.get("severity") or DEFAULT_SEVERITY, runbook_url=definition.get("runbook_url"),
        dashboard_url=link,
    )


def test_notice(deployment: str, destination: str, state: str, now: datetime, public_url: str | None) -> Notice:
    """A made-up transition for ``promptpulse alerts test``: plainly a test in every field a
    person reads, and a real Alert (canonical JSON) for the signed webhook's receivers."""
    monitor = Monitor(id=TEST_MONITOR_ID, statistic="error_rate", threshold=0.05, window=60, min_samples=1)
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=1)
    extra = f"Test notification to destination {destination}: no monitor fired."
    value = 0.5 if state == FIRING else 0.0
    record = build_alert(monitor, deployment, state, start, end, Estimate(value, 10, None, None), extra=extra, now=now)
    link = dashboard_link(public_url, deployment, None, start, end) if public_url else None
    return Notice(
        event_id=record.alert.event_id, monitor_id=TEST_MONITOR_ID, deployment=deployment, variant="",
        state=state, statistic=monitor.statistic, metric=record.alert.metric, message="[TEST] " + record.alert.message,
        value=value, threshold=monitor.threshold, sample_count=10, window_start=start, window_end=end,
        payload=record.payload, silenced=False, severity="info", dashboard_url=link, test=True,
    )
