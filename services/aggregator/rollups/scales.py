"""Each metric's scale and pass rule as the aggregator uses them, and the value histogram's bins.

Scores are stored on their evaluator's own scale (an integer range, a number from 0 to 1, or
labels mapped to numbers). Rollups keep float sums for averages and a histogram of values for
pass rates: ``value_milli = floor(value * 1000)`` with the label the evaluator gave. An integer
scale's values and a label's number fall on the grid exactly; a 0-1 float falls in a bin of
width 0.001. Pass or fail is decided when figures are read, from the pass rule in force:

- ``at least t``: the bins from ``ceil(t * 1000)`` up, exact for any t with three decimals;
- ``labels [a, b]``: the scores whose label (or, without one, whose number's label) is listed.

A version's scale and pass rule are the ones recorded for it when an aggregator first loaded it
(migration 0015, version_scales.py): a changed scale is a new version, and the older version's
figures stay on its own scale. A version with no record is read with the deployment file's
current evaluator for the metric; the five built-in metrics are 1-5 with "at least 3" unless
the query names another pass score. A metric no loaded deployment file describes is read as
every metric was before evaluators (pass at the pass score), unclamped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.deployments.base import DEFAULT_SCORE_THRESHOLD, METRICS
from shared.plausibility import (
    BUILTIN_SCORE_SCALE,
    FractionScale,
    LabelNumbers,
    ScaleOf,
    ScoreScale,
    ValueScale,
)
from shared.plausibility import (
    UNKNOWN_SCALE as UNKNOWN_VALUE,
)

VALUE_GRID = 1000
# A value worked out in floating point (1 - (1 - 0.059) = 0.05899999999999994) can sit a hair
# below the thousandth it stands for.
_EPSILON = 1e-6
_FLOAT_BINS = 10  # a 0-1 scale's histogram as shown: ten bins of 0.1

ValueCounts = Mapping[tuple[int, str], int]  # (value_milli, label) -> scores


def value_milli(value: float) -> int:
    """The histogram bin of a value (its thousandths, rounded down)."""
    return math.floor(value * VALUE_GRID + _EPSILON)


def threshold_milli(at_least: float) -> int:
    """The first bin that passes ``at least`` the value."""
    return math.ceil(at_least * VALUE_GRID - _EPSILON)


def _number(milli: int) -> str:
    """A bin as the value it starts at: 3000 -> "3", 700 -> "0.7", 125 -> "0.125"."""
    whole, rest = divmod(milli, VALUE_GRID)
    return str(whole) if rest == 0 else f"{milli / VALUE_GRID:g}"


@dataclass(frozen=True)
class MetricScale:
    """What a metric's values can be and when one passes."""

    kind: str  # integer | float | labels | unknown
    low: float | None = None
    high: float | None = None
    labels: tuple[tuple[str, float], ...] = ()  # labels scales: (label, number) in file order
    at_least: float | None = None  # pass rule: a value at or above this passes
    pass_labels: frozenset[str] = field(default_factory=frozenset)  # pass rule: these labels (lower case)
    builtin: bool = False  # a built-in metric: the query's pass_score applies

    def with_pass_score(self, pass_score: int) -> MetricScale:
        return replace(self, at_least=float(pass_score)) if self.builtin else self

    @property
    def known(self) -> bool:
        return self.kind != "unknown"

    @property
    def unit(self) -> float:
        """One step of the scale: 1 on an integer scale, a quarter of the range otherwise (as one
        point is on 1-5). The variance floor of a comparison (compare.py) is built on it."""
        if self.kind == "integer" or self.low is None or self.high is None or self.high <= self.low:
            return 1.0
        return (self.high - self.low) / 4

    def label_of(self, milli: int, label: str) -> str:
        if label or self.kind != "labels":
            return label
        return next((name for name, number in self.labels if value_milli(number) == milli), "")

    def passed(self, counts: ValueCounts) -> int | None:
        """Scores that pass under the rule; None when the metric has no rule (unknown scale)."""
        if self.pass_labels:
            return sum(n for (milli, label), n in counts.items()
                       if self.label_of(milli, label).lower() in self.pass_labels)
        if self.at_least is None:
            return None
        first = threshold_milli(self.at_least)
        return sum(n for (milli, _), n in counts.items() if milli >= first)

    def histogram(self, counts: ValueCounts) -> dict[str, int]:
        """Scores per value on this scale: every integer of an integer scale, ten bins of 0.1 on
        a 0-1 scale (keyed by where each starts; 1.0 counts in the last), every label of a labels
        scale; values seen, for an unknown scale."""
        out: dict[str, int] = {}
        if self.kind == "integer" and self.low is not None and self.high is not None:
            out = {str(v): 0 for v in range(int(self.low), int(self.high) + 1)}
        elif self.kind == "unknown":
            out = {str(v): 0 for v in range(1, 6)}
        elif self.kind == "float":
            out = {f"{i / _FLOAT_BINS:.1f}": 0 for i in range(_FLOAT_BINS)}
        elif self.kind == "labels":
            out = {name: 0 for name, _ in self.labels}
        by_lower = {name.lower(): name for name in out} if self.kind == "labels" else {}
        for (milli, label), n in sorted(counts.items()):
            if self.kind == "float":
                index = min(max(milli * _FLOAT_BINS // VALUE_GRID, 0), _FLOAT_BINS - 1)
                key = f"{index / _FLOAT_BINS:.1f}"
            elif self.kind == "labels":
                name = self.label_of(milli, label)
                key = by_lower.get(name.lower(), name or _number(milli))
            else:
                key = _number(milli)
            out[key] = out.get(key, 0) + n
        return out

    def describe(self) -> dict[str, Any]:
        if self.kind == "labels":
            return {"type": "labels", "labels": dict(self.labels)}
        if self.kind == "unknown":
            return {"type": "unknown"}
        return {"type": self.kind, "min": self.low, "max": self.high}

    def pass_rule(self) -> dict[str, Any] | None:
        if self.pass_labels:
            return {"labels": [name for name, _ in self.labels if name.lower() in self.pass_labels]
                    or sorted(self.pass_labels)}
        return None if self.at_least is None else {"at_least": self.at_least}

    def record(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(scale, pass rule) as migration 0015 stores them; labels as pairs, in file order."""
        scale: dict[str, Any] = {"type": self.kind, "min": self.low, "max": self.high}
        if self.kind == "labels":
            scale["labels"] = [[name, number] for name, number in self.labels]
        rule: dict[str, Any] = ({"labels": sorted(self.pass_labels)} if self.pass_labels
                                else {"at_least": self.at_least})
        return scale, rule

    @classmethod
    def from_record(cls, scale: Mapping[str, Any], rule: Mapping[str, Any], builtin: bool) -> MetricScale:
        at_least = rule.get("at_least")
        return cls(
            kind=str(scale["type"]),
            low=None if scale.get("min") is None else float(scale["min"]),
            high=None if scale.get("max") is None else float(scale["max"]),
            labels=tuple((str(name), float(number)) for name, number in scale.get("labels") or ()),
            at_least=None if at_least is None else float(at_least),
            pass_labels=frozenset(str(name).lower() for name in rule.get("labels") or ()),
            builtin=builtin,
        )

    def check_threshold(self, statistic: str, threshold: float) -> str | None:
        """Why ``threshold`` cannot be a monitor's threshold for ``statistic`` on this scale."""
        if statistic == "average" and self.low is not None and self.high is not None:
            if not self.low <= threshold <= self.high:
                return f"must be on the metric's scale ({self.low:g} to {self.high:g}) for statistic average"
        return None


BUILTIN_SCALE = MetricScale("integer", 1.0, 5.0, at_least=float(DEFAULT_SCORE_THRESHOLD), builtin=True)
# A metric no loaded deployment file describes is read as every metric was before evaluators:
# pass at the query's pass score (3 by default), scores shown per value seen, from 1-5 up.
UNKNOWN_SCALE = MetricScale("unknown", at_least=float(DEFAULT_SCORE_THRESHOLD), builtin=True)


def from_config(scale: Any, rule: Any) -> MetricScale:
    """From the deployment schema's scale and pass rule (shared/deployments): ``scale.type``
    integer | float | labels with ``low``/``high`` and ``labels``; ``rule.at_least`` or
    ``rule.labels``."""
    labels = tuple((str(name), float(number)) for name, number in (getattr(scale, "labels", None) or {}).items())
    pass_labels = frozenset(str(name).lower() for name in (getattr(rule, "labels", None) or ()))
    at_least = getattr(rule, "at_least", None)
    return MetricScale(
        kind=str(scale.type),
        low=float(scale.low),
        high=float(scale.high),
        labels=labels,
        at_least=None if at_least is None else float(at_least),
        pass_labels=pass_labels,
    )


def metric_scale(deployment: Any | None, metric: str) -> MetricScale:
    """The scale and pass rule of ``metric`` in a loaded deployment (None: not loaded here)."""
    evaluation = getattr(deployment, "evaluation", None)
    evaluator_of = getattr(evaluation, "evaluator_of", None)
    evaluator = evaluator_of(metric) if evaluator_of is not None else None
    if evaluator is not None and getattr(evaluator, "kind", "builtin") != "builtin":
        return from_config(evaluator.scale_of(metric), evaluator.pass_rule_of(metric))
    return BUILTIN_SCALE if metric in METRICS else UNKNOWN_SCALE


def configured_metrics(deployment: Any | None) -> list[str]:
    """Every metric a loaded deployment judges: the built-in ones, then its evaluators'."""
    evaluation = getattr(deployment, "evaluation", None)
    if evaluation is None:
        return []
    names = getattr(evaluation, "metric_names", None)
    return list(names()) if names is not None else list(evaluation.metrics)


VersionScales = Mapping[tuple[str, str], MetricScale]  # (metric, evaluator version) -> its scale


class ScaleBook:
    """Scales of one deployment's metrics, with the query's pass score for the built-in ones.

    ``recorded``: each version's own scale (version_scales.py); ``versions``: the version whose
    figures each metric shows (a Breakdown's choice), used when ``of`` is not told one.
    """

    def __init__(self, deployment: Any | None = None, pass_score: int = DEFAULT_SCORE_THRESHOLD,
                 overrides: Mapping[str, MetricScale] | None = None, recorded: VersionScales | None = None,
                 versions: Mapping[str, str] | None = None) -> None:
        self._deployment = deployment
        self._pass_score = pass_score
        self._overrides = dict(overrides or {})
        self._recorded = dict(recorded or {})
        self._versions = dict(versions or {})
        self._cache: dict[tuple[str, str], MetricScale] = {}

    def reading(self, recorded: VersionScales, versions: Mapping[str, str] | None = None) -> ScaleBook:
        """This book with the versions' recorded scales, showing ``versions`` by default."""
        return ScaleBook(self._deployment, self._pass_score, self._overrides, {**self._recorded, **recorded},
                         self._versions if versions is None else versions)

    def of(self, metric: str, version: str | None = None) -> MetricScale:
        """The scale of ``version`` of ``metric`` (default: the version shown): as recorded for
        it, else the deployment file's current one."""
        key = (metric, self._versions.get(metric, "") if version is None else version)
        found = self._cache.get(key)
        if found is None:
            found = self._recorded.get(key) or self._overrides.get(metric) or metric_scale(self._deployment, metric)
            found = self._cache[key] = found.with_pass_score(self._pass_score)
        return found


def plausible_scale(scale: MetricScale) -> ValueScale:
    """The plausibility check of values on ``scale`` (shared/plausibility.py)."""
    if not scale.known:
        return UNKNOWN_VALUE
    if scale.builtin:
        return BUILTIN_SCORE_SCALE
    if scale.kind == "integer" and scale.low is not None and scale.high is not None:
        return ScoreScale(int(scale.low), int(scale.high))
    if scale.kind == "float" and scale.low is not None and scale.high is not None:
        return FractionScale(scale.low, scale.high)
    if scale.kind == "labels":
        return LabelNumbers(frozenset(number for _, number in scale.labels))
    return UNKNOWN_VALUE


def scale_lookup(deployments: Mapping[str, Any],
                 recorded: Mapping[tuple[str, str, str], MetricScale] | None = None) -> ScaleOf:
    """``Plausibility(scale_of=...)`` for the loaded deployments and the versions recorded
    (version_scales.py). A value is checked on its own version's scale: the loaded file's when
    the event names that version (or none, as events before evaluators), the recorded one of an
    older version, 1-5 for a built-in metric. A version neither describes (a newer file this
    aggregator has not loaded yet, as in a rollout) and a metric no loaded file describes keep
    the 1-5 check for events without a value (as before evaluators) and only a finite, bounded
    value otherwise: checking them on another version's scale would dead-letter good scores."""
    versions = {(deployment, metric): version for deployment, metric, version, _ in loaded_versions(deployments)}
    recorded = dict(recorded or {})
    cache: dict[tuple[str, str, str], ValueScale] = {}

    def scale_of(deployment: str, metric: str, version: str) -> ValueScale:
        key = (deployment, metric, version)
        found = cache.get(key)
        if found is None:
            scale = metric_scale(deployments.get(deployment), metric)
            if version and version != versions.get((deployment, metric)) and not scale.builtin:
                scale = recorded.get(key, UNKNOWN_SCALE)
            found = plausible_scale(scale) if scale.known else _UnknownOrBuiltin()
            if len(cache) < 10_000:  # bounded whatever names the events carry
                cache[key] = found
        return found

    return scale_of


def loaded_versions(deployments: Mapping[str, Any]) -> list[tuple[str, str, str, MetricScale]]:
    """(deployment, metric, version, scale) of every evaluator version the loaded files describe."""
    found = []
    for name, deployment in sorted(deployments.items()):
        evaluation = getattr(deployment, "evaluation", None)
        if evaluation is None:
            continue
        for evaluator in evaluation.all_evaluators():
            if not evaluator.version:
                continue
            for metric in evaluator.metrics():
                scale = metric_scale(deployment, metric)
                if scale.known:
                    found.append((name, metric, evaluator.version, scale))
    return found


class _UnknownOrBuiltin:
    """No scale known: a value (``scored.value``) only bounded, a bare score (an event from
    before evaluators) on 1-5 as every metric then was."""

    def check(self, value: float, field: str, metric: str) -> None:
        (UNKNOWN_VALUE if field == "scored.value" else BUILTIN_SCORE_SCALE).check(value, field, metric)
