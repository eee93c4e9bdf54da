"""Two variants of one deployment side by side: is the candidate's quality really different?

A team comparing prompt variants reads two averages from samples (10% of traffic by default),
so the question is whether the difference is more than sampling noise. Per quality metric:

- the difference of average scores (candidate - baseline) with Welch's t interval, from each
  variant's count, sum and sum of squares (the rollups keep exactly these), degrees of freedom
  by Welch-Satterthwaite, rounded down (a slightly wider interval, never a narrower one); a
  side whose scores are all the same counts with the variance of one score one point off, so
  the interval never collapses to a point;
- the difference of pass rates with Newcombe's hybrid score interval (method 10 of his 1998
  paper), built from the two Wilson intervals the metrics route already shows, so it behaves at
  0% and 100% where the normal approximation collapses;
- a verdict from the interval of the average: ``better`` or ``worse`` when it excludes zero,
  ``no clear difference`` when it holds zero, ``too few samples`` below two scores a side.

Pure code; the route is in routes.py.
"""

from __future__ import annotations

import math
from typing import Any

from services.aggregator.api.figures import Figures, Quality
from services.aggregator.monitors.statistics import student_t_quantile, wilson_interval
from services.aggregator.rollups.scales import BUILTIN_SCALE, MetricScale, ScaleBook

BETTER, WORSE, UNCLEAR, TOO_FEW = "better", "worse", "no clear difference", "too few samples"


def mean_difference_interval(baseline: Quality, candidate: Quality, level: float,
                             scale: MetricScale = BUILTIN_SCALE) -> tuple[float, float, float] | None:
    """(difference, low, high) of candidate - baseline average scores; None below 2 scores a side."""
    if baseline.scored < 2 or candidate.scored < 2:
        return None
    mean_b, var_b = _mean_variance(baseline, scale.unit)
    mean_c, var_c = _mean_variance(candidate, scale.unit)
    difference = mean_c - mean_b
    se_b, se_c = var_b / baseline.scored, var_c / candidate.scored
    standard_error = math.sqrt(se_b + se_c)
    df = (se_b + se_c) ** 2 / (se_b**2 / (baseline.scored - 1) + se_c**2 / (candidate.scored - 1))
    half = student_t_quantile(0.5 + level / 2, max(1, math.floor(df))) * standard_error
    # No difference of averages is larger than the scale's width (4 on 1-5).
    width = math.inf if scale.low is None or scale.high is None else scale.high - scale.low
    return difference, max(-width, difference - half), min(width, difference + half)


def _mean_variance(q: Quality, unit: float = 1.0) -> tuple[float, float]:
    """Mean and sample variance; a variance of 0 (every score the same) counts as unit**2/n,
    the variance had one of the n scores been one step of the scale off (a point on 1-5, see
    MetricScale.unit). Eight 5s are not proof that the next answer scores 5, and a zero
    variance would make the interval a point."""
    mean = q.score_sum / q.scored
    # Rounding can push a zero variance a hair below zero.
    variance = max(0.0, (q.score_sum_squares - q.score_sum * q.score_sum / q.scored) / (q.scored - 1))
    return mean, variance if variance > 1e-12 * unit * unit else unit * unit / q.scored


def proportion_difference_interval(
    successes_b: int, n_b: int, successes_c: int, n_c: int, level: float
) -> tuple[float, float, float] | None:
    """(difference, low, high) of candidate - baseline proportions (Newcombe's hybrid score
    interval); None when a side has no observation."""
    if n_b <= 0 or n_c <= 0:
        return None
    p_b, p_c = successes_b / n_b, successes_c / n_c
    low_b, high_b = wilson_interval(successes_b, n_b, level)
    low_c, high_c = wilson_interval(successes_c, n_c, level)
    difference = p_c - p_b
    low = difference - math.sqrt((p_c - low_c) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_c - p_c) ** 2 + (p_b - low_b) ** 2)
    return difference, max(-1.0, low), min(1.0, high)


def verdict(interval: tuple[float, float, float] | None) -> str:
    if interval is None:
        return TOO_FEW
    _, low, high = interval
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return UNCLEAR


def _difference(interval: tuple[float, float, float] | None) -> dict[str, Any] | None:
    return None if interval is None else {"value": interval[0], "interval": [interval[1], interval[2]]}


def compare_quality(baseline: Figures, candidate: Figures, pass_score: int, level: float,
                    scales: ScaleBook | None = None) -> dict[str, Any]:
    """Per quality metric either side has: both sides, both differences (on the metric's scale,
    pass rates under its pass rule), the verdict."""
    book = scales or ScaleBook()
    out: dict[str, Any] = {}
    for metric in sorted(set(baseline.quality) | set(candidate.quality)):
        b, c = baseline.quality.get(metric, Quality()), candidate.quality.get(metric, Quality())
        scale = book.of(metric).with_pass_score(pass_score)
        average = mean_difference_interval(b, c, level, scale)
        passed_b, passed_c = b.passed(scale), c.passed(scale)
        pass_rate = None if passed_b is None or passed_c is None else proportion_difference_interval(
            passed_b, b.scored, passed_c, c.scored, level
        )
        out[metric] = {
            "baseline": b.render(pass_score, level, False, scale),
            "candidate": c.render(pass_score, level, False, scale),
            "average_difference": _difference(average),
            "pass_rate_difference": _difference(pass_rate),
            "verdict": verdict(average),
        }
    return out
