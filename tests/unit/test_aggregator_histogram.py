"""The log-bucket histogram: stated accuracy, mergeability, edges."""

from __future__ import annotations

import math
import random

import pytest

from services.aggregator.rollups.histogram import (
    MAX_BUCKET,
    MAX_VALUE,
    MIN_BUCKET,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    LogHistogram,
    bucket_of,
    bucket_value,
)


def _exact_quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), a different rank
    convention from the histogram's on purpose."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _log_normal_latencies(count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    # Median ~250 ms, wide enough to span 1 ms .. 60 s; clipped to that range.
    return [min(60_000.0, max(1.0, rng.lognormvariate(math.log(250), 1.6))) for _ in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_of_100k_log_normal_samples_are_within_2_percent(seed: int) -> None:
    samples = _log_normal_latencies(100_000, seed)
    histogram = LogHistogram()
    for value in samples:
        histogram.add(value)
    ordered = sorted(samples)
    assert ordered[0] < 5 and ordered[-1] > 20_000, "the samples really span the range"
    for q in (0.5, 0.95, 0.99):
        exact = _exact_quantile(ordered, q)
        estimate = histogram.quantile(q)
        assert abs(estimate - exact) / exact <= 0.02, (q, exact, estimate)


def test_merged_minutes_equal_one_histogram_of_all_values() -> None:
    samples = _log_normal_latencies(20_000, 9)
    whole = LogHistogram()
    for value in samples:
        whole.add(value)
    minutes = [LogHistogram() for _ in range(60)]
    for index, value in enumerate(samples):
        minutes[index % 60].add(value)
    merged = LogHistogram()
    for minute in minutes:
        merged.merge(minute)
    assert merged.counts == whole.counts and merged.total == whole.total == len(samples)
    assert merged.quantiles([0.5, 0.99]) == whole.quantiles([0.5, 0.99])


def test_every_value_is_reported_within_the_stated_accuracy() -> None:
    rng = random.Random(4)
    for _ in range(50_000):
        value = math.exp(rng.uniform(math.log(MIN_VALUE) + 0.1, math.log(MAX_VALUE) - 0.1))
        reported = bucket_value(bucket_of(value))
        assert abs(reported - value) / value <= RELATIVE_ACCURACY + 1e-12


def test_out_of_range_values_are_clamped_into_the_end_buckets() -> None:
    assert bucket_of(0.0) == bucket_of(-5.0) == bucket_of(MIN_VALUE / 10) == MIN_BUCKET
    assert bucket_of(MAX_VALUE * 10) == bucket_of(float("inf")) == MAX_BUCKET
    assert -32768 <= MIN_BUCKET < MAX_BUCKET <= 32767, "buckets fit the smallint column"


def test_quantile_edges() -> None:
    empty = LogHistogram()
    assert empty.quantile(0.5) is None
    one = LogHistogram({bucket_of(100.0): 3})
    assert one.quantile(0.0) == one.quantile(1.0) == pytest.approx(100.0, rel=RELATIVE_ACCURACY)
    with pytest.raises(ValueError):
        one.quantile(1.5)
