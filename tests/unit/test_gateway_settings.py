"""Gateway settings: defaults, nested variables, and bad values that name the variable."""

from __future__ import annotations

import pytest

from services.gateway.settings import GatewaySettings
from shared.settings import SettingsError, load_settings


def test_defaults_bind_to_loopback_and_fit_the_body_in_one_event(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROMPTPULSE_GATEWAY__HOST", "PROMPTPULSE_GATEWAY__PORT", "PROMPTPULSE_GATEWAY__MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    section = load_settings(GatewaySettings).gateway
    assert (section.host, section.port) == ("127.0.0.1", 8080)
    assert section.max_body_bytes < section.publisher.max_event_bytes
    assert section.default_rate_limit_per_minute is None and section.llm_max_retries == 0


def test_nested_variables_reach_the_publisher_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_GATEWAY__PORT", "9090")
    monkeypatch.setenv("PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_MAX_BYTES", str(64 << 20))
    monkeypatch.setenv("PROMPTPULSE_GATEWAY__DEFAULT_RATE_LIMIT_PER_MINUTE", "600")
    settings = load_settings(GatewaySettings)
    assert settings.gateway.port == 9090
    assert settings.gateway.publisher.spool_max_bytes == 64 << 20
    assert settings.gateway.default_rate_limit_per_minute == 600


@pytest.mark.parametrize(("name", "value", "named"), [
    ("PROMPTPULSE_GATEWAY__PORT", "70000", "PROMPTPULSE_GATEWAY__PORT"),
    ("PROMPTPULSE_GATEWAY__REQUEST_TIMEOUT_SECONDS", "0", "PROMPTPULSE_GATEWAY__REQUEST_TIMEOUT_SECONDS"),
    ("PROMPTPULSE_GATEWAY__DEFAULT_RATE_LIMIT_PER_MINUTE", "0", "PROMPTPULSE_GATEWAY__DEFAULT_RATE_LIMIT_PER_MINUTE"),
    ("PROMPTPULSE_GATEWAY__MAX_BODY_BYTES", "900000", "MAX_BODY_BYTES"),
    # The default 120 s timeout would let runs last longer than the aggregator believes.
    ("PROMPTPULSE_PLAUSIBILITY__MAX_LATENCY_MS", "60000", "REQUEST_TIMEOUT_SECONDS"),
])
def test_bad_values_fail_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings(GatewaySettings)
