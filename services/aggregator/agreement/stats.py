"""Agreement statistics over paired scores of the same requests. Pure code.

Two sources pair scores: re-judging (the same requests under an evaluator's old and new
version) and human labels (a judge's score against a person's). Both ask the same questions:

- how far apart are they on average, and is that difference real? The mean of the paired
  differences (second minus first) with Student's t interval: pairing removes the spread
  between requests, which is far larger than the spread between judges;
- do they decide the same? The exact-match rate, and Cohen's kappa on pass/fail, which
  discounts the agreement two judges would reach by chance given how often each passes;
- do they rank the same on the scale? Cohen's weighted kappa with quadratic weights (a 1
  against a 5 is a worse disagreement than a 4 against a 5), over the scale's categories.

A statistic that is undefined for the data (kappa when both judges give one single answer,
an interval from one pair) is ``None``, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.aggregator.monitors.statistics import student_t_quantile


@dataclass(frozen=True)
class Pair:
    """One request scored twice: ``first`` is the reference (old version, or the judge)."""

    request_id: str
    first: float
    second: float

    @property
    def difference(self) -> float:
        return self.second - self.first


@dataclass(frozen=True)
class MeanDifference:
    mean: float
    low: float | None
    high: float | None
    count: int


def mean_difference(pairs: Sequence[Pair], confidence: float = 0.95) -> MeanDifference | None:
    """Mean of ``second - first`` with its t interval (no interval below two pairs)."""
    count = len(pairs)
    if count == 0:
        return None
    differences = [pair.difference for pair in pairs]
    mean = sum(differences) / count
    if count < 2:
        return MeanDifference(mean, None, None, count)
    variance = sum((d - mean) ** 2 for d in differences) / (count - 1)
    half = student_t_quantile(1 - (1 - confidence) / 2, count - 1) * math.sqrt(variance / count)
    return MeanDifference(mean, mean - half, mean + half, count)


def exact_match_rate(pairs: Sequence[Pair]) -> float | None:
    if not pairs:
        return None
    return sum(1 for pair in pairs if pair.first == pair.second) / len(pairs)


def cohen_kappa(first: Sequence[bool], second: Sequence[bool]) -> float | None:
    """Cohen's kappa of two pass/fail decisions on the same items."""
    if len(first) != len(second):
        raise ValueError("both judges must decide the same items")
    count = len(first)
    if count == 0:
        return None
    observed = sum(1 for a, b in zip(first, second, strict=True) if a == b) / count
    pass_first = sum(first) / count
    pass_second = sum(second) / count
    chance = pass_first * pass_second + (1 - pass_first) * (1 - pass_second)
    if chance == 1:
        return None  # both always pass (or always fail): agreement beyond chance is undefined
    return (observed - chance) / (1 - chance)


def nearest_category(value: float, categories: Sequence[float]) -> int:
    """Index of the category closest to ``value`` (the lower one on a tie)."""
    best = 0
    for index, category in enumerate(categories):
        if abs(value - category) < abs(value - categories[best]):
            best = index
    return best


def weighted_kappa(pairs: Sequence[Pair], categories: Sequence[float]) -> float | None:
    """Cohen's weighted kappa with quadratic weights over ordered ``categories``.

    Each score counts in its nearest category, so a 0-1 float scale is compared over the
    categories its evaluator's scale defines (e.g. tenths) rather than raw floats.
    """
    levels = len(categories)
    if levels < 2:
        raise ValueError("a scale needs at least two categories")
    if list(categories) != sorted(categories):
        raise ValueError("categories must be in ascending order")
    count = len(pairs)
    if count == 0:
        return None
    observed = [[0] * levels for _ in range(levels)]
    for pair in pairs:
        row = nearest_category(pair.first, categories)
        observed[row][nearest_category(pair.second, categories)] += 1
    rows = [sum(row) for row in observed]
    columns = [sum(observed[i][j] for i in range(levels)) for j in range(levels)]

    def weight(i: int, j: int) -> float:
        return (i - j) ** 2 / (levels - 1) ** 2

    disagreement = sum(weight(i, j) * observed[i][j] for i in range(levels) for j in range(levels))
    expected = sum(
        weight(i, j) * rows[i] * columns[j] / count for i in range(levels) for j in range(levels)
    )
    if expected == 0:
        return None  # both judges used one and the same category throughout
    return 1 - disagreement / expected


def most_moved(pairs: Sequence[Pair], limit: int) -> list[Pair]:
    """The ``limit`` pairs whose score moved most, largest first (ties by request id)."""
    return sorted(pairs, key=lambda pair: (-abs(pair.difference), pair.request_id))[:limit]
