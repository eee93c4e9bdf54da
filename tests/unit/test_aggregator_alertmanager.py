"""What PromptPulse sends Alertmanager (labels, annotations, links) and its settings. Pure code;
the real Alertmanager is in tests/integration/test_aggregator_alertmanager.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.aggregator.monitors.alertmanager import (
    alert_annotations,
    alert_labels,
    api_alert,
    dashboard_link,
    display_url,
    target_id,
)
from services.aggregator.monitors.settings import AlertmanagerSection
from services.aggregator.settings import AggregatorSettings
from shared.deployments import Monitor
from shared.settings import SettingsError, load_settings

START = datetime(2026, 12, 6, 11, 40, tzinfo=UTC)
END = datetime(2026, 12, 6, 11, 45, tzinfo=UTC)


def monitor(**fields: object) -> Monitor:
    return Monitor.model_validate({"id": "rel", "statistic": "pass_rate", "metric": "relevance", "threshold": 0.9,
                                   "window": "5m", **fields})


def test_labels_name_the_deployment_variant_monitor_metric_and_severity() -> None:
    assert alert_labels(monitor(variant="b", severity="critical"), "demo") == {
        "alertname": "PromptPulsePassRate", "deployment": "demo", "variant": "b", "monitor": "rel",
        "metric": "relevance", "severity": "critical"}
    # A whole-deployment monitor: no variant label (Alertmanager drops empty ones anyway); default severity.
    labels = alert_labels(monitor(), "demo")
    assert "variant" not in labels and labels["severity"] == "warning"
    operational = Monitor.model_validate({"id": "p95", "statistic": "latency_p95", "threshold": 2, "window": "1m"})
    assert alert_labels(operational, "demo")["alertname"] == "PromptPulseLatencyP95"
    assert alert_labels(operational, "demo")["metric"] == "latency_p95"


def test_the_runbook_annotation_only_when_the_monitor_has_one() -> None:
    assert alert_annotations(monitor(), "text") == {"summary": "text"}
    assert alert_annotations(monitor(runbook_url="https://wiki.example.com/rb#rel"), "text") == {
        "summary": "text", "runbook_url": "https://wiki.example.com/rb#rel"}


@pytest.mark.parametrize("field, value", [("runbook_url", "ftp://x"), ("runbook_url", "not a url"),
                                          ("severity", "Critical"), ("severity", "two words")])
def test_a_bad_runbook_url_or_severity_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        monitor(**{field: value})


def test_the_dashboard_link_opens_the_monitoring_view_of_the_window() -> None:
    assert dashboard_link("https://pp.example.com/", "demo", "b", START, END) == (
        "https://pp.example.com/dashboard/#/d/demo?from=2026-12-06T11%3A40%3A00Z&to=2026-12-06T11%3A45%3A00Z&variant=b")
    assert dashboard_link("http://h:8081", "demo", None, START, END).endswith("to=2026-12-06T11%3A45%3A00Z")


def _row(state: str) -> dict:
    return {"labels": '{"alertname": "PromptPulsePassRate", "deployment": "demo", "monitor": "rel"}',
            "annotations": {"summary": "s"}, "deployment": "demo", "state": state, "starts_at": END,
            "ends_at": None if state == "firing" else datetime(2026, 12, 6, 11, 50, tzinfo=UTC),
            "window_start": START, "window_end": END}


def test_a_firing_alert_has_no_end_and_a_resolved_one_ends() -> None:
    firing = api_alert(_row("firing"), "https://pp.example.com")
    assert "endsAt" not in firing and firing["startsAt"] == "2026-12-06T11:45:00Z"
    assert firing["annotations"]["dashboard_url"] == firing["generatorURL"]
    assert firing["generatorURL"].startswith("https://pp.example.com/dashboard/#/d/demo?")
    resolved = api_alert(_row("resolved"), None)
    assert resolved["endsAt"] == "2026-12-06T11:50:00Z"
    assert resolved["annotations"] == {"summary": "s"} and "generatorURL" not in resolved  # no public URL: no link


def test_urls_from_the_environment_as_a_list_or_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS"
    monkeypatch.setenv(name, "http://am-0:9093/, http://am-1:9093")
    assert load_settings(AggregatorSettings).aggregator.monitors.alertmanager.urls == [
        "http://am-0:9093", "http://am-1:9093"]
    monkeypatch.setenv(name, '["https://am.example.com"]')
    assert load_settings(AggregatorSettings).aggregator.monitors.alertmanager.urls == ["https://am.example.com"]
    monkeypatch.setenv(name, "am-0:9093")
    with pytest.raises(SettingsError, match="ALERTMANAGER__URLS"):
        load_settings(AggregatorSettings)
    monkeypatch.delenv(name)
    assert load_settings(AggregatorSettings).aggregator.monitors.alertmanager.urls == []


def test_the_retry_cap_must_cover_the_first_wait() -> None:
    with pytest.raises(ValidationError, match="retry_max_seconds"):
        AlertmanagerSection(retry_initial_seconds=10, retry_max_seconds=1)


def test_neither_the_database_nor_the_logs_see_a_password_in_the_url() -> None:
    url = "https://user:s3cret@am.example.com:9443/prefix"
    assert display_url(url) == "https://am.example.com:9443"
    assert "s3cret" not in target_id(url) and target_id(url) == target_id(url) != target_id("https://other")
