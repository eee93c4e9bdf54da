"""Monitor statistics, confidence intervals, window schedule and alert state machine (no I/O)."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator.monitors.alerts import build_alert, slack_body
from services.aggregator.monitors.schedule import due_window_ends, latest_closed_end
from services.aggregator.monitors.statistics import (
    FIRING,
    OK,
    RESOLVED,
    Estimate,
    WindowFigures,
    estimate,
    is_violated,
    mean_interval,
    next_state,
    student_t_quantile,
    wilson_interval,
)
from shared.deployments import Monitor
from shared.events.codec import decode_alert_json


def _monitor(**fields) -> Monitor:
    base = {"id": "m1", "statistic": "average", "metric": "relevance", "threshold": 3.5, "window": "5m",
            "min_samples": 3}
    return Monitor.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("df", "p", "exact"),
    [(1, 0.975, 12.7062), (2, 0.975, 4.30265), (3, 0.975, 3.18245), (4, 0.975, 2.77645), (5, 0.975, 2.57058),
     (10, 0.975, 2.22814), (30, 0.975, 2.04227), (100, 0.975, 1.98397), (3, 0.995, 5.84091),
     (9, 0.95, 1.83311)],
)
def test_student_t_quantiles_match_the_tables(df: int, p: float, exact: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(exact, rel=1e-3)


def test_wilson_interval_known_values_and_edges() -> None:
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 20) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.1611, abs=1e-4))
    assert wilson_interval(20, 20) == (pytest.approx(0.8389, abs=1e-4), pytest.approx(1.0))  # never a point
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mean_interval_from_sum_and_sum_of_squares() -> None:
    scores = [1, 2, 3, 4, 5]
    low, high = mean_interval(len(scores), sum(scores), sum(s * s for s in scores))
    half = 2.776445 * math.sqrt(2.5 / 5)
    assert (low, high) == (pytest.approx(3 - half, rel=1e-4), pytest.approx(3 + half, rel=1e-4))
    assert mean_interval(1, 4, 16) == (1.0, 5.0)  # one score says nothing about the spread
    assert mean_interval(4, 20, 100) == (5.0, 5.0)  # no spread, clamped to the scale


def test_t_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = random.Random(3)
    weights = [0.1, 0.1, 0.2, 0.3, 0.3]
    true_mean = sum((i + 1) * w for i, w in enumerate(weights))
    hits = 0
    for _ in range(2000):
        scores = rng.choices(range(1, 6), weights, k=30)
        low, high = mean_interval(30, sum(scores), sum(s * s for s in scores))
        hits += low <= true_mean <= high
    assert 0.92 <= hits / 2000 <= 0.98


def test_estimates_per_statistic() -> None:
    figures = WindowFigures(scored=4, score_sum=12, score_sum_squares=40, score_counts=(1, 1, 0, 1, 1),
                            responses=200, errors=10, latency_p95_ms=1500.0, total_tokens=6000, cost=0.3)
    average = estimate(_monitor(), figures, 300)
    assert average.value == 3.0 and average.sample_count == 4 and average.ci_low < 3 < average.ci_high
    rate = estimate(_monitor(statistic="pass_rate", threshold=0.8, score_threshold=4), figures, 300)
    assert rate.value == 0.5 and rate.sample_count == 4
    assert estimate(_monitor(statistic="pass_rate", threshold=0.8), figures, 300).value == 0.5  # >= 3: 2 of 4
    operational = {"statistic": "error_rate", "metric": None, "threshold": 0.05}
    assert estimate(_monitor(**operational), figures, 300).value == 0.05
    latency = estimate(_monitor(statistic="latency_p95", metric=None, threshold=2), figures, 300)
    assert latency.value == 1.5 and latency.ci_low == latency.ci_high == 1.5
    tokens = estimate(_monitor(statistic="tokens_per_hour", metric=None, threshold=1000), figures, 300)
    assert tokens.value == 6000 * 12 and tokens.sample_count == 200
    cost = estimate(_monitor(statistic="cost_per_hour", metric=None, threshold=1), figures, 300)
    assert cost.value == pytest.approx(3.6)
    empty = estimate(_monitor(), WindowFigures(), 300)
    assert empty.value is None and empty.sample_count == 0
    unpriced = estimate(_monitor(statistic="cost_per_hour", metric=None, threshold=1),
                        WindowFigures(responses=5, total_tokens=10, unpriced_models=("m",)), 300)
    assert unpriced.value is None and "no price for m" in unpriced.note


def test_violation_needs_enough_samples() -> None:
    monitor = _monitor(min_samples=5)
    assert not is_violated(monitor, Estimate(2.0, 4, 1.0, 3.0))
    assert is_violated(monitor, Estimate(2.0, 5, 1.0, 3.0))
    assert not is_violated(monitor, Estimate(3.6, 50, 3.5, 3.7))
    assert not is_violated(monitor, Estimate(None, 0, None, None))


def test_fire_only_when_the_whole_interval_is_below() -> None:
    cautious = _monitor(fire_only_when_ci_below=True)
    noisy = Estimate(3.2, 10, 2.6, 3.8)  # below, but the interval reaches over the threshold
    clear = Estimate(2.4, 10, 2.0, 2.9)
    assert not is_violated(cautious, noisy) and is_violated(_monitor(), noisy)
    assert is_violated(cautious, clear)


def test_above_thresholds_for_operations() -> None:
    errors = _monitor(statistic="error_rate", metric=None, threshold=0.05)
    assert is_violated(errors, Estimate(0.06, 100, 0.06, 0.06))
    assert not is_violated(errors, Estimate(0.04, 100, 0.04, 0.04))


def test_alert_state_machine() -> None:
    assert next_state(OK, violated=True, enough_samples=True) == FIRING
    assert next_state(OK, violated=False, enough_samples=True) is None
    assert next_state(FIRING, violated=True, enough_samples=True) is None
    assert next_state(FIRING, violated=False, enough_samples=True) == RESOLVED
    assert next_state(FIRING, violated=False, enough_samples=False) is None  # a quiet window proves nothing
    assert next_state(RESOLVED, violated=True, enough_samples=True) == FIRING
    assert next_state(RESOLVED, violated=False, enough_samples=True) is None


def test_windows_end_on_cadence_boundaries_after_the_grace() -> None:
    now = datetime(2030, 1, 1, 12, 7, 30, tzinfo=UTC)
    assert latest_closed_end(now, 300, 60) == datetime(2030, 1, 1, 12, 5, tzinfo=UTC)
    assert latest_closed_end(now, 300, 200) == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # 12:05 + 200 s > now
    first = due_window_ends(None, now, cadence_seconds=60, grace_seconds=60, max_catch_up=100)
    assert first.ends == [datetime(2030, 1, 1, 12, 6, tzinfo=UTC)]  # a new monitor starts now, no backfill
    later = due_window_ends(datetime(2030, 1, 1, 12, 3, tzinfo=UTC), now, cadence_seconds=60, grace_seconds=60,
                            max_catch_up=100)
    assert later.ends == [datetime(2030, 1, 1, 12, m, tzinfo=UTC) for m in (4, 5, 6)]
    done = due_window_ends(datetime(2030, 1, 1, 12, 6, tzinfo=UTC), now, cadence_seconds=60, grace_seconds=60,
                           max_catch_up=100)
    assert done.ends == [] and done.skipped == 0


def test_catch_up_is_bounded_and_cadence_changes_realign() -> None:
    now = datetime(2030, 1, 2, 0, 0, 30, tzinfo=UTC)
    long_gap = due_window_ends(now - timedelta(days=1), now, cadence_seconds=60, grace_seconds=0, max_catch_up=10)
    assert len(long_gap.ends) == 10 and long_gap.skipped == 1440 - 10
    assert long_gap.ends[-1] == datetime(2030, 1, 2, tzinfo=UTC)
    # Evaluated through 12:03 with a 1m cadence, now 5m: next boundary is 12:05.
    realigned = due_window_ends(datetime(2030, 1, 1, 12, 3, tzinfo=UTC), datetime(2030, 1, 1, 12, 16, tzinfo=UTC),
                                cadence_seconds=300, grace_seconds=60, max_catch_up=100)
    assert realigned.ends == [datetime(2030, 1, 1, 12, 5, tzinfo=UTC), datetime(2030, 1, 1, 12, 10, tzinfo=UTC),
                              datetime(2030, 1, 1, 12, 15, tzinfo=UTC)]


def test_alert_is_canonical_json_any_client_can_read() -> None:
    monitor = _monitor(variant="v1", statistic="pass_rate", threshold=0.8, score_threshold=4)
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    record = build_alert(monitor, "demo", FIRING, start, start + timedelta(minutes=5), Estimate(0.5, 40, 0.35, 0.65))
    body = json.loads(record.payload)
    assert body["monitorId"] == "m1" and body["deployment"] == "demo" and body["variant"] == "v1"
    assert body["state"] == "ALERT_STATE_FIRING" and body["statistic"] == "ALERT_STATISTIC_PASS_RATE"
    assert body["sampleCount"] == 40 and body["passScore"] == 4 and body["threshold"] == 0.8
    assert body["windowStart"] == "2030-01-01T12:00:00Z" and body["windowEnd"] == "2030-01-01T12:05:00Z"
    assert "below 0.8" in body["message"]
    assert decode_alert_json(record.payload.encode()).confidence_high == 0.65
    assert dict(record.headers)["pp-event-type"] == b"alert"


def test_operational_alert_names_its_statistic_in_metric() -> None:
    monitor = _monitor(statistic="error_rate", metric=None, threshold=0.05)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    body = json.loads(build_alert(monitor, "demo", RESOLVED, start, start + timedelta(minutes=5),
                                  Estimate(0.01, 300, 0.01, 0.01)).payload)
    assert body["metric"] == "error_rate" and body["state"] == "ALERT_STATE_RESOLVED"
    assert body["statistic"] == "ALERT_STATISTIC_ERROR_RATE"
    assert "back below 0.05" in body["message"]


@pytest.mark.parametrize("statistic", ["average", "pass_rate", "error_rate", "latency_p95",
                                       "tokens_per_hour", "cost_per_hour"])
def test_every_monitor_statistic_has_its_own_enum_value(statistic: str) -> None:
    quality = statistic in ("average", "pass_rate")
    monitor = _monitor(statistic=statistic, metric="relevance" if quality else None,
                       threshold=0.5 if statistic in ("pass_rate", "error_rate") else 3.0)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    body = json.loads(build_alert(monitor, "demo", FIRING, start, start + timedelta(minutes=5),
                                  Estimate(1.0, 30, 1.0, 1.0)).payload)
    assert body["statistic"] == f"ALERT_STATISTIC_{statistic.upper()}"


def test_slack_body() -> None:
    row = {"state": "firing", "deployment": "demo", "variant": "", "monitor_id": "m1", "value": 2.0,
           "threshold": 3.5, "sample_count": 12, "message": "[FIRING] m1 ...",
           "window_start": datetime(2030, 1, 1, tzinfo=UTC), "window_end": datetime(2030, 1, 1, 0, 5, tzinfo=UTC)}
    body = json.loads(slack_body(row))
    assert body["text"] == "[FIRING] m1 ..."
    assert body["attachments"][0]["color"] == "#d40e0d"
    assert {f["title"] for f in body["attachments"][0]["fields"]} >= {"Deployment", "Value", "Threshold"}
