"""Plausible ranges of the numbers events carry, checked in one place by every service.

Anything that can write to the topics can write any number: a latency of 1e11 ms or 1e12 tokens
in one call decodes fine and, once stored, ruins every mean and sum it joins. The gateway checks
what it accepts (feedback ratings) and what it publishes (its response events); the aggregator
checks each event it decodes and dead-letters one that fails, with the message of
:class:`Implausible` as the reason's detail, so nothing outside these ranges is stored or
counted. Judgement calls (durations, tokens per call) are settings, the same on every service
(``PROMPTPULSE_PLAUSIBILITY__*``, :class:`~shared.settings.PlausibilitySettings`); a score is
plausible on its evaluator's scale, which the caller names (``scale_of``; by default every
metric is judged on the built-in 1-5 scale). An event that carries ``scored.value`` (an
evaluator on a scale of its own) is checked there on that scale, and its ``scored.score`` (the
value placed on 1-5 for older readers) on 1-5. NaN and infinities are outside every range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shared.events.messages import Evaluation, Feedback, InferenceResponse, LlmUsage
from shared.settings import PlausibilitySettings

_TOKEN_KINDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class Implausible(ValueError):
    """A field of an event holds a value outside its plausible range; the message names both."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        super().__init__(f"{field} is {value!r}, outside the plausible {expected}")
        self.field = field


@dataclass(frozen=True)
class Span:
    """A closed range of numbers: ``unit`` says what they are, ``setting`` where the bound is set."""

    low: float
    high: float
    unit: str = ""
    setting: str = ""

    def check(self, value: float, field: str) -> None:
        if not self.low <= value <= self.high:  # False for NaN too
            unit = f" {self.unit}" if self.unit else ""
            setting = f" (set by {self.setting})" if self.setting else ""
            raise Implausible(field, value, f"{_number(self.low)}..{_number(self.high)}{unit}{setting}")


def _number(bound: float) -> str:
    return f"{int(bound):,}" if float(bound).is_integer() else f"{bound:,}"


@dataclass(frozen=True)
class ScoreScale:
    """The whole numbers an evaluator scores with."""

    low: int
    high: int

    def check(self, score: float, field: str, metric: str) -> None:
        # The range test first: it is False for NaN and the infinities, which int() refuses.
        if not self.low <= score <= self.high or score != int(score):
            raise Implausible(field, score, f"whole numbers {self.low}..{self.high} (the scale of metric {metric!r})")


@dataclass(frozen=True)
class FractionScale:
    """Any number from ``low`` to ``high`` (an evaluator's 0-1 scale)."""

    low: float = 0.0
    high: float = 1.0

    def check(self, value: float, field: str, metric: str) -> None:
        if not self.low <= value <= self.high:
            raise Implausible(field, value, f"{_number(self.low)}..{_number(self.high)} (the scale of metric {metric!r})")


@dataclass(frozen=True)
class LabelNumbers:
    """The numbers a labels scale maps its labels to: a value must be one of them."""

    numbers: frozenset[float]

    def check(self, value: float, field: str, metric: str) -> None:
        if value not in self.numbers:  # NaN is in no set of numbers
            shown = ", ".join(_number(n) for n in sorted(self.numbers))
            raise Implausible(field, value, f"label numbers {shown} (the scale of metric {metric!r})")


class ValueScale(Protocol):
    def check(self, value: float, field: str, metric: str, /) -> None: ...


# The built-in metrics' judges answer 1 (worst) to 5 (best): proto/ Evaluation.Scored.
BUILTIN_SCORE_SCALE = ScoreScale(1, 5)
# A feedback rating's scale is the client's (thumbs -1/+1, 1..5 stars, 0..10): this bounds them all.
FEEDBACK_RATING = Span(-100, 100, "(a feedback rating)")
# The value of a metric whose scale the checker does not know (its deployment file is not loaded
# here): finite, and within what any configured scale can reach (integer ranges span at most
# 1000 steps, label numbers are the file's).
@dataclass(frozen=True)
class UnknownScale:
    bound: Span = Span(-1e9, 1e9, "(the scale of this metric is not known here)")

    def check(self, value: float, field: str, metric: str) -> None:
        self.bound.check(value, field)


UNKNOWN_SCALE = UnknownScale()

ScaleOf = Callable[[str, str, str], ValueScale]  # (deployment, metric, evaluator version) -> scale


def builtin_scale(deployment: str, metric: str, version: str) -> ScoreScale:
    """Every metric's scale today; an evaluator with a scale of its own passes a ``ScaleOf`` that
    looks it up by (deployment, metric, evaluator version): one version has one scale."""
    return BUILTIN_SCORE_SCALE


class Plausibility:
    """The checks with one set of limits: ``check(event)`` raises :class:`Implausible`."""

    def __init__(self, settings: PlausibilitySettings | None = None, *, scale_of: ScaleOf = builtin_scale) -> None:
        limits = settings if settings is not None else PlausibilitySettings()
        self.duration = Span(0, limits.max_latency_ms, "ms", "PROMPTPULSE_PLAUSIBILITY__MAX_LATENCY_MS")
        self.tokens = Span(0, limits.max_tokens_per_call, "tokens per call",
                           "PROMPTPULSE_PLAUSIBILITY__MAX_TOKENS_PER_CALL")
        self._scale_of = scale_of
        self._checks: dict[type, Callable[[Any], None]] = {
            InferenceResponse: self._response,
            Evaluation: self._evaluation,
            Feedback: self._feedback,
        }

    def check(self, event: Any) -> None:
        """Raise :class:`Implausible` for the first field out of range; events with no numbers
        of their own (requests, token chunks) always pass."""
        check = self._checks.get(type(event))
        if check is not None:
            check(event)

    def check_usage(self, call: LlmUsage, where: str = "usage") -> None:
        tokens = self.tokens
        for kind in _TOKEN_KINDS:
            tokens.check(getattr(call, kind), f"{where}.{kind}")

    def _response(self, event: InferenceResponse) -> None:
        self.duration.check(event.latency_ms, "latency_ms")
        if event.HasField("time_to_first_token_ms"):
            self.duration.check(event.time_to_first_token_ms, "time_to_first_token_ms")
        for index, call in enumerate(event.usage):
            self.check_usage(call, f"usage[{index}]")

    def _evaluation(self, event: Evaluation) -> None:
        if event.WhichOneof("outcome") == "scored":
            scored, metric = event.scored, event.metric
            scale = self._scale_of(event.meta.deployment, metric, event.evaluator_version)
            if scored.HasField("value"):
                BUILTIN_SCORE_SCALE.check(scored.score, "scored.score", metric)
                scale.check(scored.value, "scored.value", metric)
            else:  # an event from before evaluators had scales: its score is its value
                scale.check(scored.score, "scored.score", metric)
        if event.HasField("judge"):
            judge = event.judge
            self.tokens.check(judge.prompt_tokens, "judge.prompt_tokens")
            self.tokens.check(judge.completion_tokens, "judge.completion_tokens")
            self.duration.check(judge.latency_ms, "judge.latency_ms")

    def _feedback(self, event: Feedback) -> None:
        if event.HasField("rating"):
            FEEDBACK_RATING.check(event.rating, "rating")
