"""Variant comparison (services/aggregator/api/compare.py) against published examples."""

from __future__ import annotations

import pytest

from services.aggregator.api.compare import (
    BETTER,
    TOO_FEW,
    UNCLEAR,
    WORSE,
    compare_quality,
    mean_difference_interval,
    proportion_difference_interval,
    verdict,
)
from services.aggregator.api.figures import Figures, Quality


def quality(values: list[float]) -> Quality:
    q = Quality()
    for v in values:
        q.add_score(v)
    return q


def test_welch_interval_matches_the_published_example() -> None:
    # Wikipedia, "Welch's t-test", example 1: t = -2.46 with 24.9 degrees of freedom (A1 - A2).
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    difference, low, high = mean_difference_interval(quality(a1), quality(a2), 0.95)
    assert difference == pytest.approx(sum(a2) / 15 - sum(a1) / 15)
    assert (low + high) / 2 == pytest.approx(difference)
    t_975_24 = 2.0639  # 24 = floor(24.9) degrees of freedom
    standard_error = (high - low) / 2 / t_975_24
    assert difference / standard_error == pytest.approx(2.46, abs=0.01)
    assert low > 0, "significant at 5%: p = 0.021"


def test_newcombe_interval_matches_his_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, 56/70 against 48/80: method 10 gives
    # 0.0524 to 0.3339 around a difference of 0.2.
    difference, low, high = proportion_difference_interval(48, 80, 56, 70, 0.95)
    assert difference == pytest.approx(0.2)
    assert low == pytest.approx(0.0524, abs=0.0005) and high == pytest.approx(0.3339, abs=0.0005)
    # At the edges it stays inside [-1, 1] and is not a point.
    _, low, high = proportion_difference_interval(0, 10, 10, 10, 0.95)
    assert 0 < low < high == 1.0


def test_verdicts() -> None:
    same = quality([5, 4, 5, 3, 4] * 20)
    assert verdict(mean_difference_interval(same, quality([5, 4, 5, 3, 4] * 20), 0.95)) == UNCLEAR
    assert verdict(mean_difference_interval(same, quality([2, 3, 2, 1, 3] * 20), 0.95)) == WORSE
    assert verdict(mean_difference_interval(quality([2, 3, 2, 1, 3] * 20), same, 0.95)) == BETTER
    assert verdict(mean_difference_interval(same, quality([5]), 0.95)) == TOO_FEW
    # Every score equal on a side: not a certainty. The interval stays open (as if one score
    # were a point off), so two 4s against two 5s decide nothing, and eight of each do.
    difference, low, high = mean_difference_interval(quality([4, 4]), quality([5, 5]), 0.95)
    assert difference == 1.0 and low < 0 < high
    difference, low, high = mean_difference_interval(quality([4] * 8), quality([5] * 8), 0.95)
    assert 0 < low < 1.0 < high
    # Never wider than the scale allows.
    _, low, high = mean_difference_interval(quality([1, 1]), quality([5, 5]), 0.95)
    assert -4.0 <= low and high <= 4.0


def test_a_small_sample_is_not_called_a_difference() -> None:
    # 4.0 against 3.0 on three scores each, spread over the scale: not enough to tell.
    result = mean_difference_interval(quality([5, 4, 3]), quality([4, 3, 2]), 0.95)
    assert result is not None and verdict(result) == UNCLEAR
    # The same means on 200 scores each are.
    result = mean_difference_interval(quality([5, 4, 3] * 200), quality([4, 3, 2] * 200), 0.95)
    assert verdict(result) == WORSE


def test_compare_quality_covers_metrics_of_either_side() -> None:
    baseline, candidate = Figures(), Figures()
    baseline.quality["relevance"] = quality([5, 5, 4, 5] * 10)
    candidate.quality["relevance"] = quality([2, 3, 2, 3] * 10)
    candidate.quality["fluency"] = quality([5, 5])
    result = compare_quality(baseline, candidate, pass_score=3, level=0.95)
    assert set(result) == {"relevance", "fluency"}
    relevance = result["relevance"]
    assert relevance["baseline"] == {"average": 4.75, "pass_rate": 1.0, "samples": 40}
    assert relevance["candidate"]["pass_rate"] == 0.5 and relevance["verdict"] == WORSE
    assert relevance["pass_rate_difference"]["value"] == pytest.approx(-0.5)
    assert relevance["pass_rate_difference"]["interval"][1] < 0
    fluency = result["fluency"]
    assert fluency["baseline"]["samples"] == 0 and fluency["verdict"] == TOO_FEW
    assert fluency["average_difference"] is None and fluency["pass_rate_difference"] is None
