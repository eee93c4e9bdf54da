"""PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS: a refused value is named, never echoed."""

from __future__ import annotations

import pytest

from services.aggregator.settings import AggregatorSettings
from shared.settings import SettingsError, load_settings

VARIABLE = "PROMPTPULSE_AGGREGATOR__MONITORS__ALERTMANAGER__URLS"


def test_a_url_without_scheme_is_refused_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "http://am-0:9093,ops:hunter2-secret@am-1:9093")
    with pytest.raises(SettingsError) as refused:
        load_settings(AggregatorSettings)
    message = str(refused.value)
    assert VARIABLE in message and "entry 2" in message
    assert "hunter2-secret" not in message


def test_http_urls_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "http://am-0:9093/, https://ops:pw@am-1:9093")
    urls = load_settings(AggregatorSettings).aggregator.monitors.alertmanager.urls
    assert urls == ["http://am-0:9093", "https://ops:pw@am-1:9093"]
