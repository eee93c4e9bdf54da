"""What a monitor computes over one window, and whether the window is a violation. Pure code.

Sampling makes quality figures estimates, so each comes with a confidence interval:

- pass rate (and error rate) is a proportion: Wilson's score interval, which stays inside
  [0, 1] and behaves at 0 and 1 passes, where the normal approximation collapses to a point;
- the average score uses Student's t with the sample variance from the window's sum and sum of
  squares (``var = (sum_sq - sum**2 / n) / (n - 1)``), clamped to the 1-5 scale.

Operational figures (error rate, p95 latency, tokens and cost per hour) count every request, not
a sample, so their interval is the value itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

from shared.deployments import Monitor

SCORE_MIN, SCORE_MAX = 1.0, 5.0


def _bisect(cdf: Callable[[float], float], p: float, low: float, high: float) -> float:
    for _ in range(200):
        middle = (low + high) / 2
        if cdf(middle) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _t_cdf_3(t: float) -> float:
    return 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi


def _t_cdf_4(t: float) -> float:
    x = t / math.sqrt(1 + t * t / 4)
    return 0.5 + 0.375 * x * (1 - x * x / 12)


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    Closed forms for 1-4 degrees of freedom; above, the Cornish-Fisher expansion (Abramowitz
    and Stegun 26.7.5), within 0.1% of the exact value from 5 degrees of freedom on.
    """
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if df in (3, 4):
        return _bisect(_t_cdf_3 if df == 3 else _t_cdf_4, p, 0.0, 1e3)
    z = NormalDist().inv_cdf(p)
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion; (0, 1) when there is no observation."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(
    n: int, total: float, total_squares: float, level: float = 0.95, *,
    low: float | None = SCORE_MIN, high: float | None = SCORE_MAX,
) -> tuple[float, float]:
    """Student t interval of a mean score from count, sum and sum of squares, clamped to the
    scale ``[low, high]`` (1-5 for the built-in metrics; None: a scale not known, unclamped).

    One score says nothing about the spread: the interval is then the whole scale (or, on a
    scale not known, the score itself).
    """
    if n < 2:
        if low is None or high is None:
            return total / n, total / n
        return low, high
    mean = total / n
    # Rounding can push a zero variance a hair below zero.
    variance = max(0.0, (total_squares - total * total / n) / (n - 1))
    half = student_t_quantile(0.5 + level / 2, n - 1) * math.sqrt(variance / n)
    return (mean - half if low is None else max(low, mean - half)), (mean + half if high is None else min(high, mean + half))


@dataclass(frozen=True)
class WindowFigures:
    """Sums read from the rollups for one window (run_id '' only: production traffic)."""

    scored: int = 0
    score_sum: float = 0
    score_sum_squares: float = 0
    score_counts: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # scores 1..5, when passed is None
    # Scores that pass under the metric's pass rule (measure.py reads them so); None: count the
    # 1-5 score_counts at the monitor's score threshold. Unknown rule: pass_rule_known False.
    passed: int | None = None
    pass_rule_known: bool = True
    scale_low: float | None = SCORE_MIN  # the metric's scale, for the average's interval
    scale_high: float | None = SCORE_MAX
    evaluator_version: str = ""
    responses: int = 0
    errors: int = 0
    latency_p95_ms: float | None = None
    total_tokens: int = 0
    cost: float | None = None  # None when no model of the window has a price
    unpriced_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    value: float | None  # None when the window holds nothing to compute it from
    sample_count: int
    ci_low: float | None
    ci_high: float | None
    note: str = ""


def estimate(monitor: Monitor, figures: WindowFigures, window_seconds: int, level: float = 0.95) -> Estimate:
    """The monitor's statistic over one window, with its sample count and confidence interval."""
    statistic = monitor.statistic
    if statistic == "average":
        n = figures.scored
        if n == 0:
            return Estimate(None, 0, None, None, "no scores in the window")
        low, high = mean_interval(n, figures.score_sum, figures.score_sum_squares, level,
                                  low=figures.scale_low, high=figures.scale_high)
        return Estimate(figures.score_sum / n, n, low, high)
    if statistic == "pass_rate":
        n = sum(figures.score_counts) if figures.passed is None and figures.pass_rule_known else figures.scored
        if n == 0:
            return Estimate(None, 0, None, None, "no scores in the window")
        if not figures.pass_rule_known:
            return Estimate(None, n, None, None, "the metric's pass rule is not known (no deployment file)")
        passed = (sum(figures.score_counts[monitor.effective_score_threshold - 1 :]) if figures.passed is None
                  else figures.passed)
        low, high = wilson_interval(passed, n, level)
        return Estimate(passed / n, n, low, high)
    n = figures.responses
    if statistic == "error_rate":
        value = figures.errors / n if n else None
    elif statistic == "latency_p95":
        value = None if figures.latency_p95_ms is None else figures.latency_p95_ms / 1000.0
    elif statistic == "tokens_per_hour":
        value = figures.total_tokens * 3600.0 / window_seconds
    elif statistic == "cost_per_hour":
        value = None if figures.cost is None else figures.cost * 3600.0 / window_seconds
    else:
        raise ValueError(f"unknown statistic {statistic!r}")
    note = ""
    if figures.unpriced_models and statistic == "cost_per_hour":
        note = "no price for " + ", ".join(figures.unpriced_models)
    if value is None:
        return Estimate(None, n, None, None, note or "no requests in the window")
    return Estimate(value, n, value, value, note)


def is_violated(monitor: Monitor, result: Estimate) -> bool:
    """Past the threshold, on enough samples, and (if asked) with the whole interval past it."""
    if result.value is None or result.sample_count < monitor.min_samples:
        return False
    if not monitor.is_violation(result.value):
        return False
    if monitor.fire_only_when_ci_below:
        return result.ci_high is not None and result.ci_high < monitor.threshold
    return True


OK, FIRING, RESOLVED = "ok", "firing", "resolved"


def next_state(state: str, violated: bool, enough_samples: bool) -> str | None:
    """The alert state after a window, or None when it does not change.

    ok/resolved -> firing on a violated window; firing -> resolved on a window with enough
    samples that is not violated. A window with too few samples says nothing either way, so a
    quiet night neither fires nor resolves an alert.
    """
    if violated and state != FIRING:
        return FIRING
    if state == FIRING and enough_samples and not violated:
        return RESOLVED
    return None
