"""Monitor sets sent to the API: validation naming each field, secrets masked and kept (no I/O)."""

from __future__ import annotations

import pytest

from services.aggregator.monitors.store import (
    MASKED_SECRET,
    MonitorInputError,
    _keep_masked_secrets,
    monitor_from_json,
    monitor_to_json,
    parse_monitor_set,
    public_monitor,
)
from shared.deployments import Deployment, Monitor

GOOD = {"id": "m1", "statistic": "average", "metric": "relevance", "threshold": 3.5, "window": "5m"}


def _deployment() -> Deployment:
    return Deployment.model_validate({
        "name": "demo", "flow": "/nonexistent", "variants": [{"id": "a"}, {"id": "b"}],
        "column_mapping": {"question": "inputs.q", "answer": "outputs.a"},
        "evaluation": {"metrics": ["relevance"], "judge": {"connection": "c", "model": "j"}},
    })


def _fields(body, deployment=None) -> list[str]:
    with pytest.raises(MonitorInputError) as caught:
        parse_monitor_set(body, deployment)
    return [p.field for p in caught.value.problems]


def test_a_valid_set_parses_with_defaults() -> None:
    [monitor] = parse_monitor_set({"monitors": [GOOD]}, _deployment())
    assert monitor.window == 300 and monitor.cadence == 300 and monitor.min_samples == 10
    assert parse_monitor_set({"monitors": []}, None) == []


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({**GOOD, "threshold": 7}, "monitors[0].threshold"),
        ({**GOOD, "window": "5x"}, "monitors[0].window"),
        ({**GOOD, "window": "30s"}, "monitors[0].window"),
        ({**GOOD, "cadence": "10m"}, "monitors[0].cadence"),
        ({**GOOD, "statistic": "median"}, "monitors[0].statistic"),
        ({**GOOD, "metric": None}, "monitors[0].metric"),
        ({**GOOD, "id": "bad id!"}, "monitors[0].id"),
        ({**GOOD, "colour": "red"}, "monitors[0].colour"),
        ({**GOOD, "score_threshold": 4}, "monitors[0].score_threshold"),
        ({**GOOD, "notification": {"webhook_url": "ftp://x"}}, "monitors[0].notification.webhook_url"),
        ({"id": "m1", "statistic": "error_rate", "threshold": 0.1, "window": "5m",
          "fire_only_when_ci_below": True}, "monitors[0].fire_only_when_ci_below"),
    ],
)
def test_every_bad_field_is_named(item, field) -> None:
    assert field in _fields({"monitors": [item]})


def test_set_level_problems() -> None:
    assert _fields([GOOD]) == ["monitors"]
    assert _fields({"monitors": [GOOD], "extra": 1}) == ["monitors"]
    assert _fields({"monitors": [GOOD, GOOD]}) == ["monitors[1].id"]
    assert _fields({"monitors": [{**GOOD, "variant": "zzz"}]}, _deployment()) == ["monitors[0].variant"]
    assert _fields({"monitors": [{**GOOD, "metric": "fluency"}]}, _deployment()) == ["monitors[0].metric"]
    # Without the deployment's file, variants and metrics cannot be checked, and are accepted.
    assert parse_monitor_set({"monitors": [{**GOOD, "variant": "zzz"}]}, None)[0].variant == "zzz"


def test_webhook_url_is_stored_in_clear_and_shown_masked() -> None:
    monitor = Monitor.model_validate({**GOOD, "notification": {"webhook_url": "https://hooks.example/T/abc"}})
    stored = monitor_to_json(monitor)
    assert stored["notification"]["webhook_url"] == "https://hooks.example/T/abc"
    assert monitor_from_json(stored).notification.webhook_url.get_secret_value() == "https://hooks.example/T/abc"
    shown = public_monitor(monitor)
    assert shown["notification"]["webhook_url"] == MASKED_SECRET and shown["window"] == "5m"
    assert "abc" not in str(shown)


def test_a_masked_url_sent_back_keeps_the_stored_one() -> None:
    stored = Monitor.model_validate({**GOOD, "notification": {"webhook_url": "https://hooks.example/T/abc"}})
    body = {"monitors": [{**public_monitor(stored), "threshold": 3.0}]}
    [monitor] = parse_monitor_set(_keep_masked_secrets(body, {"m1": stored}), None)
    assert monitor.threshold == 3.0
    assert monitor.notification.webhook_url.get_secret_value() == "https://hooks.example/T/abc"
    # The mask on a monitor id with no stored URL cannot invent one: the field is cleared.
    other = {"monitors": [{**GOOD, "id": "m2", "notification": {"webhook_url": MASKED_SECRET}}]}
    [fresh] = parse_monitor_set(_keep_masked_secrets(other, {"m1": stored}), None)
    assert fresh.notification.webhook_url is None
