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
    evaluations: int = 0
    scored: int = 0
    score_sum: int = 0
    score_sum_squares: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * 5)
    not_applicable: int = 0
    errors: int = 0

    def add(self, row: Any) -> None:
        self.evaluations += row["evaluations"]
        self.scored += row["scored"]
        self.score_sum += row["score_sum"]
        self.score_sum_squares += row["score_sum_squares"]
        for index in range(5):
            self.counts[index] += row[f"score_{index + 1}"]
        self.not_applicable += row["not_applicable"]
        self.errors += row["errors"]

    def render(self, pass_score: int, level: float, detail: bool) -> dict[str, Any]:
        passed = sum(self.counts[pass_score - 1 :])
        figures: dict[str, Any] = {
            "average": _ratio(self.score_sum, self.scored),
            "pass_rate": _ratio(passed, self.scored),
            "samples": self.scored,
        }
        if detail:
            figures["average_interval"] = list(mean_interval(self.scored, self.score_sum, self.score_sum_squares,
                                                             level)) if self.scored else None
            figures["pass_rate_interval"] = list(wilson_interval(passed, self.scored, level)) if self.scored else None
            figures.update(
                pass_score=pass_score,
                evaluations=self.evaluations,
                not_applicable=self.not_applicable,
                errors=self.errors,
                scores={str(i + 1): c for i, c in enumerate(self.counts)},
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

    def render(self, pass_score: int, level: float, *, detail: bool) -> dict[str, Any]:
        tokens = self.tokens().render()
        tokens.pop("requests")  # per model only: one request can call several models
        rendered = {
            **self.operations.render(),
            "tokens": tokens,
            "quality": {m: q.render(pass_score, level, detail) for m, q in sorted(self.quality.items())},
            "feedback": self.feedback.render(),
        }
        if detail:
            rendered["by_model"] = {m: t.render() for m, t in sorted(self.models.items())}
        return rendered


Key = tuple[datetime | None, str | None]  # (step start or None for the range, variant or None for all)


class Breakdown:
    """Figures per (step, variant), per step, per variant, and for the whole range."""

    def __init__(self) -> None:
        self.cells: dict[Key, Figures] = defaultdict(Figures)

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

    def add_quality(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            figures.quality[row["metric"]].add(row)

    def add_feedback(self, row: Any) -> None:
        for figures in self._targets(row["t"], row["variant"]):
            figures.feedback.add(row)

    def variants(self) -> list[str]:
        return sorted({v for (t, v) in self.cells if t is None and v is not None})

    def overview(self, pass_score: int, level: float) -> dict[str, Any]:
        return self.cells[(None, None)].render(pass_score, level, detail=True)

    def by_variant(self, pass_score: int, level: float) -> dict[str, Any]:
        return {v: self.cells[(None, v)].render(pass_score, level, detail=True) for v in self.variants()}

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

    @staticmethod
    def _light(figures: Figures | None, pass_score: int, level: float, *, models: bool = True) -> dict[str, Any]:
        rendered = (figures or Figures()).render(pass_score, level, detail=False)
        if models and figures is not None:
            rendered["by_model"] = {m: t.render() for m, t in sorted(figures.models.items())}
        elif models:
            rendered["by_model"] = {}
        return rendered
