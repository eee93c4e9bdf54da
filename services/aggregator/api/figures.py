"""Turning summed rollup rows into the figures the API shows. Pure code.

Rows arrive already summed per (step, variant[, model | metric | bucket]); each row is added
to four :class:`Figures`: its step and variant, its step over all variants, the whole range for
its variant, and the whole range over all variants. Every figure is derived from sums at the
end (average = sum / count, pass rate from the 1-5 counts at the asked score, percentiles from
the merged histograms), so nothing is averaged twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.aggregator.monitors.statistics import mean_interval, wilson_interval
from services.aggregator.rollups.histogram import LogHistogram
from services.aggregator.rollups.scales import BUILTIN_SCALE, MetricScale, ScaleBook, value_milli

QUANTILES = (0.5, 0.95, 0.99)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass
class Operations:
    requests: int = 0
    responses: int = 0
    ok: int = 0
    errors: int = 0
    cancelled: int = 0
    latency_sum_ms: float = 0.0
    ttft_count: int = 0
    ttft_sum_ms: float = 0.0
    latency: LogHistogram = field(default_factory=LogHistogram)
    ttft: LogHistogram = field(default_factory=LogHistogram)

    def add(self, row: Any) -> None:
        self.requests += row["requests"]
        self.responses += row["responses"]
        self.ok += row["ok"]
        self.errors += row["errors"]
        self.cancelled += row["cancelled"]
        self.latency_sum_ms += row["latency_sum_ms"]
        self.ttft_count += row["ttft_count"]
        self.ttft_sum_ms += row["ttft_sum_ms"]

    @staticmethod
    def _distribution(histogram: LogHistogram, total: float, count: int) -> dict[str, float | None]:
        figures = {f"p{round(q * 100)}": histogram.quantile(q) for q in QUANTILES}
        return {"mean": _ratio(total, count), **figures}

    def render(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "responses": self.responses,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "error_rate": _ratio(self.errors, self.responses),
            "latency_ms": self._distribution(self.latency, self.latency_sum_ms, self.responses),
            "time_to_first_token_ms": self._distribution(self.ttft, self.ttft_sum_ms, self.ttft_count),
        }


@dataclass
class Tokens:
    requests: int = 0
    calls: int = 0
    prompt: int = 0
    completion: int = 0
    total: int = 0
    cost: float = 0.0
    priced: bool = False
    unpriced: bool = False
    currency: str | None = None

    def add(self, row: Any) -> None:
        self.requests += row["requests"]
        self.calls += row["calls"]
        self.prompt += row["prompt_tokens"]
        self.completion += row["completion_tokens"]
        self.total += row["total_tokens"]
        if row["cost"] is not None:
            self.cost += row["cost"]
            self.priced = True
            self.currency = self.currency or row["currency"]
        self.unpriced = self.unpriced or row["unpriced"]

    def render(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "calls": self.calls,
            "prompt": self.prompt,
            "completion": self.completion,
            "total": self.total,
            # None when no model here has a price; partial when only some do.
            "cost": self.cost if self.priced else None,
            "currency": self.currency,
            "cost_complete": self.priced and not self.unpriced,
        }


@dataclass
class Quality:
    """One metric's sums for one evaluator version (rollup_evaluator_quality and _values): float
    sums on the evaluator's scale, and scores per value bin (rollups/scales.py), from which the
    pass rate under any pass rule is read."""

    evaluations: int = 0
    scored: int = 0
    score_sum: float = 0.0
    score_sum_squares: float = 0.0
    values: dict[tuple[int, str], int] = field(default_factory=dict)  # (value_milli, label) -> scores
    not_applicable: int = 0
    errors: int = 0

    def add(self, row: Any) -> None:
        self.evaluations += row["evaluations"]
        self.scored += row["scored"]
        self.score_sum += row["value_sum"]
        self.score_sum_squares += row["value_sum_squares"]
        self.not_applicable += row["not_applicable"]
        self.errors += row["errors"]

    def add_values(self, row: Any) -> None:
        key = (row["value_milli"], row["label"])
        self.values[key] = self.values.get(key, 0) + row["count"]

    def add_score(self, value: float, label: str = "") -> None:
        """One score, as the rollups would count it (for callers building figures by hand)."""
        self.evaluations += 1
        self.scored += 1
        self.score_sum += value
        self.score_sum_squares += value * value
        key = (value_milli(value), label)
        self.values[key] = self.values.get(key, 0) + 1

    def passed(self, scale: MetricScale) -> int | None:
        return scale.passed(self.values)

    def render(self, pass_score: int, level: float, detail: bool,
               scale: MetricScale = BUILTIN_SCALE) -> dict[str, Any]:
        scale = scale.with_pass_score(pass_score)
        passed = self.passed(scale)
        figures: dict[str, Any] = {
            "average": _ratio(self.score_sum, self.scored),
            "pass_rate": None if passed is None else _ratio(passed, self.scored),
            "samples": self.scored,
        }
        if detail:
            figures["average_interval"] = list(mean_interval(
                self.scored, self.score_sum, self.score_sum_squares, level, low=scale.low, high=scale.high,
            )) if self.scored else None
            figures["pass_rate_interval"] = (list(wilson_interval(passed, self.scored, level))
                                             if self.scored and passed is not None else None)
            figures.update(
                pass_score=pass_score if scale.builtin else None,
                evaluations=self.evaluations,
                not_applicable=self.not_applicable,
                errors=self.errors,
                scores=scale.histogram(self.values),
                scale=scale.describe(),
                pass_rule=scale.pass_rule(),
            )
        return figures


@dataclass
class Feedback:
    feedback: int = 0
    rated: int = 0
    rating_sum: int = 0
    comments: int = 0

    def add(self, row: Any) -> None:
        self.feedback += row["feedback"]
        self.rated += row["rated"]
        self.rating_sum += row["rating_sum"]
        self.comments += row["comments"]

    def render(self) -> dict[str, Any]:
        return {"count": self.feedback, "rated": self.rated, "average_rating": _ratio(self.rating_sum, self.rated),
                "comments": self.comments}


@dataclass
class Figures:
    operations: Operations = field(default_factory=Operations)
    models: dict[str, Tokens] = field(default_factory=lambda: defaultdict(Tokens))
    quality: dict[str, Quality] = field(default_factory=lambda: defaultdict(Quality))
    feedback: Feedback = field(default_factory=Feedback)

    def tokens(self) -> Tokens:
        total = Tokens()
        for model in self.models.values():
            for name in ("requests", "calls", "prompt", "completion", "total", "cost"):
                setattr(total, name, getattr(total, name) + getattr(model, name))
            total.priced = total.priced or model.priced
            total.unpriced = total.unpriced or model.unpriced
            total.currency = total.currency or model.currency
        return total

    def render(self, pass_score: int, level: float, *, detail: bool, scales: ScaleBook | None = None) -> dict[str, Any]:
        tokens = self.tokens().render()
        tokens.pop("requests")  # per model only: one request can call several models
        book = scales or ScaleBook()
        rendered = {
            **self.operations.render(),
            "tokens": tokens,
            "quality": {m: q.render(pass_score, level, detail, book.of(m)) for m, q in sorted(self.quality.items())},
            "feedback": self.feedback.render(),
        }
        if detail:
            rendered["by_model"] = {m: t.render() for m, t in sorted(self.models.items())}
        return rendered


Key = tuple[datetime | None, str | None]  # (step start or None for the range, variant or None for all)


class Breakdown:
    """Figures per (step, variant), per step, per variant, and for the whole range.

    Quality counts one evaluator version per metric (``versions``: chosen by the caller, see
    metrics_query.choose_versions), plus the outcomes that record no version (events written
    before evaluators, without a judge call: never a score, only not-applicable or not judged).
    """

    def __init__(self, scales: ScaleBook | None = None, versions: dict[str, str] | None = None) -> None:
        self.cells: dict[Key, Figures] = defaultdict(Figures)
        self.scales = scales or ScaleBook()
        self.versions = versions  # metric -> version counted; None: every row
        self.versions_seen: dict[str, list[dict]] = {}  # metric -> versions in the range, latest first

    def describe_versions(self, quality: dict[str, Any]) -> None:
        """Add to each metric's rendered figures the version they count and the versions seen,
        each with its own scale and pass rule (rollups/version_scales.py)."""
        for metric, figures in quality.items():
            figures["version"] = (self.versions or {}).get(metric)
            figures["versions"] = [
                {**seen, "scale": (scale := self.scales.of(metric, seen["version"])).describe(),
                 "pass_rule": scale.pass_rule()}
                for seen in self.versions_seen.get(metric, [])
            ]

    def _targets(self, step: datetime, variant: str) -> list[Figures]:
        return [self.cells[(step, variant)], self.cells[(step, None)], self.cells[(None, variant)],
                self.cells[(None, None)]]

    def add_operations(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            figures.operations.add(row)

    def add_histogram(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            histogram = figures.operations.latency if row["measure"] == "latency_ms" else figures.operations.ttft
            histogram.merge_counts(((row["bucket"], row["count"]),))

    def add_tokens(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            figures.models[row["model"]].add(row)

    def _counted(self, row: Any) -> bool:
        version = row["evaluator_version"]
        return self.versions is None or version == "" or self.versions.get(row["metric"]) == version

    def add_quality(self, row: Any) -> None:
        if self._counted(row):
            for figures in self._targets(row["t"], row["variant"]):
                figures.quality[row["metric"]].add(row)

    def add_values(self, row: Any) -> None:
        if self._counted(row):
            for figures in self._targets(row["t"], row["variant"]):
                figures.quality[row["metric"]].add_values(row)

    def add_feedback(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            figures.feedback.add(row)

    def variants(self) -> list[str]:
        return sorted({v for (t, v) in self.cells if t is None and v is not None})

    def overview(self, pass_score: int, level: float) -> dict[str, Any]:
        return self.cells[(None, None)].render(pass_score, level, detail=True, scales=self.scales)

    def by_variant(self, pass_score: int, level: float) -> dict[str, Any]:
        return {v: self.cells[(None, v)].render(pass_score, level, detail=True, scales=self.scales)
                for v in self.variants()}

    def series(self, steps: list[datetime], pass_score: int, level: float) -> list[dict[str, Any]]:
        points = []
        variants = self.variants()
        for step in steps:
            point = {"start": step.isoformat(), **self._light(self.cells.get((step, None)), pass_score, level)}
            point["by_variant"] = {
                v: self._light(self.cells.get((step, v)), pass_score, level, models=False) for v in variants
            }
            points.append(point)
        return points

    def _light(self, figures: Figures | None, pass_score: int, level: float, *, models: bool = True) -> dict[str, Any]:
        rendered = (figures or Figures()).render(pass_score, level, detail=False, scales=self.scales)
        if models and figures is not None:
            rendered["by_model"] = {m: t.render() for m, t in sorted(figures.models.items())}
        elif models:
            rendered["by_model"] = {}
        return rendered
