"""Processor settings from the environment."""

from __future__ import annotations

import pytest

from services.processor.settings import ProcessorSettings
from shared.settings import SettingsError, load_settings


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PROMPTPULSE_"):
            monkeypatch.delenv(name)
    settings = load_settings(ProcessorSettings)
    section = settings.processor
    assert (section.host, section.port) == ("127.0.0.1", 8083)
    assert section.judge_concurrency == 64
    assert settings.group_id() == "promptpulse.processor"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_PROCESSOR__JUDGE_CONCURRENCY", "8")
    monkeypatch.setenv("PROMPTPULSE_PROCESSOR__GROUP_ID", "team-a.processor")
    monkeypatch.setenv("PROMPTPULSE_KAFKA__TOPIC_PREFIX", "team-a.")
    settings = load_settings(ProcessorSettings)
    assert settings.processor.judge_concurrency == 8
    assert settings.group_id() == "team-a.processor"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROMPTPULSE_PROCESSOR__JUDGE_CONCURRENCY", "0"),
        ("PROMPTPULSE_PROCESSOR__PORT", "70000"),
        ("PROMPTPULSE_PROCESSOR__RESPONSE_FORMAT", "xml"),
        ("PROMPTPULSE_PROCESSOR__GROUP_ID", "has space"),
        ("PROMPTPULSE_PROCESSOR__SESSION_TIMEOUT_SECONDS", "1"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(ProcessorSettings)


def test_retry_cap_must_cover_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_PROCESSOR__RETRY_BASE_SECONDS", "5")
    monkeypatch.setenv("PROMPTPULSE_PROCESSOR__RETRY_MAX_SECONDS", "1")
    with pytest.raises(SettingsError, match="PROMPTPULSE_PROCESSOR"):
        load_settings(ProcessorSettings)


def test_every_processor_setting_is_documented() -> None:
    from services.processor.settings import ProcessorSection

    for name, field in ProcessorSection.model_fields.items():
        assert field.description and len(field.description) > 20, name
