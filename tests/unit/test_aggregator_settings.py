"""Aggregator settings from the environment."""

from __future__ import annotations

import pytest

from services.aggregator.settings import AggregatorSettings
from shared.settings import SettingsError, load_settings


def test_defaults_and_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_KAFKA__TOPIC_PREFIX", "x.")
    settings = load_settings(AggregatorSettings)
    assert settings.group_id() == "x.aggregator"
    assert (settings.aggregator.host, settings.aggregator.port) == ("127.0.0.1", 8081)
    assert settings.aggregator.fault_pause_before_commit_seconds == 0


def test_prices_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_AGGREGATOR__PRICES", '{"gpt-4o": {"prompt_per_1k": 0.0025, "completion_per_1k": 0.01}}')
    price = load_settings(AggregatorSettings).aggregator.prices["gpt-4o"]
    assert (price.prompt_per_1k, price.completion_per_1k, price.currency) == (0.0025, 0.01, "USD")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROMPTPULSE_AGGREGATOR__BATCH_MAX_RECORDS", "0"),
        ("PROMPTPULSE_AGGREGATOR__RETENTION_DAYS", "many"),
        ("PROMPTPULSE_AGGREGATOR__GROUP_ID", "has space"),
        ("PROMPTPULSE_AGGREGATOR__DEFAULT_SAMPLING_RATE", "1.5"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(AggregatorSettings)


def test_every_field_is_documented() -> None:
    from services.aggregator.settings import AggregatorSection, ModelPrice

    for model in (AggregatorSection, ModelPrice):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
