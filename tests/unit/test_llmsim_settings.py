"""llmsim settings: nested environment variables, and bad values named by their variable."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from services.llmsim.settings import LlmsimSettings
from shared.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROMPTPULSE_"):
            monkeypatch.delenv(name)


def test_defaults_listen_on_loopback_port_8082() -> None:
    section = load_settings(LlmsimSettings).llmsim
    assert (section.host, section.port) == ("127.0.0.1", 8082)
    assert section.drift_schedule == [] and section.judge_echo is False
    assert section.faults.rate_429 == 0 and section.control_token is None


def test_every_field_is_documented() -> None:
    from services.llmsim.settings import DriftStep, FaultRates, LatencyModel, LlmsimSection

    for model in (LlmsimSection, LatencyModel, FaultRates, DriftStep):
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert undocumented == [], model.__name__


def test_nested_values_and_json_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_LLMSIM__PORT", "9999")
    monkeypatch.setenv("PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS", "12.5")
    monkeypatch.setenv("PROMPTPULSE_LLMSIM__FAULTS__RATE_429", "0.25")
    monkeypatch.setenv(
        "PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE",
        '[{"variant": "b", "level": 0.7, "after_seconds": 300},'
        ' {"level": 1, "at": "2030-01-01T00:00:00Z"}]',
    )
    section = load_settings(LlmsimSettings).llmsim
    assert section.port == 9999
    assert section.latency.ttft_ms == 12.5
    assert section.faults.rate_429 == 0.25
    assert (
        section.drift_schedule[0].variant == "b" and section.drift_schedule[0].after_seconds == 300
    )
    assert section.drift_schedule[1].variant == "*"
    assert section.drift_schedule[1].at == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROMPTPULSE_LLMSIM__PORT", "70000"),
        ("PROMPTPULSE_LLMSIM__LATENCY__TOKENS_PER_SECOND", "0"),
        ("PROMPTPULSE_LLMSIM__LATENCY__JITTER", "1.5"),
        ("PROMPTPULSE_LLMSIM__FAULTS__RATE_500", "-0.1"),
        ("PROMPTPULSE_LLMSIM__FAULTS", '{"rate_429": 0.6, "rate_500": 0.6}'),
        ("PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE", '[{"level": 0.5}]'),
        ("PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE", '[{"level": 0.5, "at": "2030-01-01T00:00:00"}]'),
        ("PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE", '[{"level": 2, "after_seconds": 1}]'),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(LlmsimSettings)
    assert variable in str(caught.value)


def test_control_token_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_LLMSIM__CONTROL_TOKEN", "hunter2")
    settings = load_settings(LlmsimSettings)
    assert settings.llmsim.control_token is not None
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
