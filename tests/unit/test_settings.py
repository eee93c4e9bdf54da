"""Settings: defaults are loopback-safe and a bad value names its environment variable."""

from __future__ import annotations

import pytest

from shared.settings import ServiceSettings, SettingsError, load_settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("PROMPTPULSE_"):
            monkeypatch.delenv(name)
    settings = load_settings(ServiceSettings)
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.topic_prefix == "promptpulse."
    assert "127.0.0.1" in settings.database_url.get_secret_value()


def test_nested_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092, broker-b:9093")
    monkeypatch.setenv("PROMPTPULSE_KAFKA__PARTITIONS", "24")
    settings = load_settings(ServiceSettings)
    assert settings.kafka.bootstrap_servers == "broker-a:9092,broker-b:9093"
    assert settings.kafka.partitions == 24


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROMPTPULSE_KAFKA__PARTITIONS", "zero"),
        ("PROMPTPULSE_KAFKA__PARTITIONS", "0"),
        ("PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS", "no-port-here"),
        ("PROMPTPULSE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON"),
        ("PROMPTPULSE_DATABASE__POOL_MAX_SIZE", "-1"),
        ("PROMPTPULSE_TELEMETRY__LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_value_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(ServiceSettings)


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_DATABASE_URL", "postgresql://u:hunter2@db:5432/x")
    monkeypatch.setenv("PROMPTPULSE_KAFKA__SASL_PASSWORD", "s3cret-sasl")
    text = repr(load_settings(ServiceSettings))
    assert "hunter2" not in text and "s3cret-sasl" not in text
