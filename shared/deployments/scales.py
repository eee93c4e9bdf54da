"""Scales and pass rules: what a metric's value can be, and when a value passes.

Shared by the processor (to check and place values) and the aggregator (rollups, pass rates,
monitor thresholds); docs/evaluation.md, "Scales and pass rules".
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from shared.deployments.base import ConfigModel, Number
from shared.deployments.errors import Loc

SCALE_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,62}$"


def _scale_shorthand(value: Any) -> Any:
    # `scale: float` (0 to 1), `scale: "1-5"` (an integer range), or the mapping forms.
    if value == "float":
        return {"type": "float"}
    if isinstance(value, str) and "-" in value.strip()[1:]:
        low, _, high = value.strip().partition("-") if not value.strip().startswith("-") else ("", "", "")
        try:
            return {"type": "integer", "min": int(low), "max": int(high)}
        except ValueError:
            return value
    if isinstance(value, dict) and "type" not in value:
        if "labels" in value:
            return {"type": "labels", **value}
        if "min" in value or "max" in value:
            return {"type": "integer", **value}
    return value


class Scale(ConfigModel):
    """What a metric's value can be: whole numbers min..max, a number from 0 to 1, or labels
    each mapped to a number (the number is what averages and thresholds use)."""

    type: Literal["integer", "float", "labels"] = "integer"
    min: int | None = None
    max: int | None = None
    labels: dict[Annotated[str, Field(pattern=SCALE_LABEL_PATTERN)], Number] | None = None

    def _complete(self) -> None:
        if self.type == "integer" and self.min is None and self.max is None:
            self.min, self.max = 1, 5

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        if self.type == "integer":
            if self.min is None or self.max is None:
                found.append(((), "an integer scale needs both min and max"))
            elif not self.min < self.max:
                found.append((("max",), f"must be greater than min ({self.min})"))
            elif self.max - self.min > 1000:
                found.append((("max",), "an integer scale spans at most 1000 steps"))
            if self.labels is not None:
                found.append((("labels",), "only for type labels"))
        elif self.type == "float":
            if self.min is not None or self.max is not None or self.labels is not None:
                found.append(((), "a float scale is always 0 to 1: give no min, max or labels"))
        else:
            if self.min is not None or self.max is not None:
                found.append(((), "a labels scale takes its range from the labels' numbers: no min or max"))
            if not self.labels or len(self.labels) < 2:
                found.append((("labels",), "give at least two labels, each mapped to a number"))
            elif len({label.lower() for label in self.labels}) != len(self.labels):
                found.append((("labels",), "labels must differ in more than letter case"))
        return found

    @property
    def low(self) -> float:
        if self.type == "integer":
            return float(self.min if self.min is not None else 1)
        if self.type == "float":
            return 0.0
        return min((self.labels or {"": 0.0}).values())

    @property
    def high(self) -> float:
        if self.type == "integer":
            return float(self.max if self.max is not None else 5)
        if self.type == "float":
            return 1.0
        return max((self.labels or {"": 1.0}).values())

    def describe(self) -> str:
        if self.type == "integer":
            return f"an integer from {self.min} to {self.max}"
        if self.type == "float":
            return "a number from 0 to 1"
        return "one of " + ", ".join(self.labels or {})

    def check(self, value: float) -> float:
        """``value`` if it is on this scale; raises ValueError naming the scale otherwise."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number")
        if self.type == "integer":
            if float(value) != int(value):
                raise ValueError(f"{value!r} is not a whole number ({self.describe()})")
        if self.type == "labels":
            if float(value) not in {float(n) for n in (self.labels or {}).values()}:
                raise ValueError(f"{value!r} is not the number of any label ({self.describe()})")
        elif not self.low <= value <= self.high:
            raise ValueError(f"{value!r} is outside the scale ({self.describe()})")
        return float(value)

    def label_value(self, label: str) -> tuple[str, float]:
        """(the label as configured, its number) for ``label`` in any letter case; ValueError if unknown."""
        for name, number in (self.labels or {}).items():
            if name.lower() == label.strip().lower():
                return name, float(number)
        raise ValueError(f"{label[:40]!r} is not {self.describe()}")

    def label_of(self, value: float) -> str:
        """The first label whose number is ``value`` ("" for scales without labels)."""
        for name, number in (self.labels or {}).items():
            if float(number) == value:
                return name
        return ""

    def compat_score(self, value: float) -> int:
        """``value`` placed on 1..5 for readers that know only Scored.score.

        The scale's low end maps to 1 and its high end to 5, linearly, rounded half up (a 1-5
        integer scale maps onto itself; 0.7 on a 0-1 scale is 1 + 2.8 -> 4). A scale whose ends
        coincide maps to 3.
        """
        low, high = self.low, self.high
        if high <= low:
            return 3
        position = (min(max(value, low), high) - low) / (high - low)
        return max(1, min(5, math.floor(1 + 4 * position + 0.5)))

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


ScaleField = Annotated[Scale, BeforeValidator(_scale_shorthand)]
BUILTIN_SCALE = Scale(type="integer", min=1, max=5)
FLOAT_SCALE = Scale(type="float")


class PassRule(ConfigModel):
    """When a score passes: ``{at_least: 3}`` (a value at or above) or ``{labels: [correct]}``."""

    at_least: Number | None = None
    labels: list[Annotated[str, Field(pattern=SCALE_LABEL_PATTERN)]] | None = None

    def problems(self) -> list[tuple[Loc, str]]:
        if (self.at_least is None) == (self.labels is None):
            return [((), "give exactly one of at_least or labels")]
        if self.labels is not None and not self.labels:
            return [(("labels",), "name at least one passing label")]
        return []

    def passes(self, value: float, label: str = "") -> bool:
        if self.labels is not None:
            return label.lower() in {name.lower() for name in self.labels}
        return self.at_least is not None and value >= self.at_least

    def scale_problems(self, scale: Scale) -> list[tuple[Loc, str]]:
        if self.labels is not None:
            if scale.type != "labels":
                return [(("labels",), "a labels pass rule needs a labels scale; use at_least")]
            known = {name.lower() for name in scale.labels or {}}
            return [(("labels", i), f"{name!r} is not a label of the scale") for i, name in enumerate(self.labels)
                    if name.lower() not in known]
        if self.at_least is not None and not scale.low <= self.at_least <= scale.high:
            return [(("at_least",), f"must be on the scale ({scale.low:g} to {scale.high:g})")]
        return []

    def canonical(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def default_pass_rule(scale: Scale) -> PassRule:
    """The pass rule of an evaluator that gives none: the middle of an integer scale rounded up
    (3 on 1-5, as the built-in metrics always had), 0.5 on 0-1, the highest-numbered labels."""
    if scale.type == "integer":
        return PassRule(at_least=math.ceil((scale.low + scale.high) / 2))
    if scale.type == "float":
        return PassRule(at_least=0.5)
    return PassRule(labels=[n for n, v in (scale.labels or {}).items() if v == scale.high])


__all__ = [
    "BUILTIN_SCALE",
    "FLOAT_SCALE",
    "SCALE_LABEL_PATTERN",
    "PassRule",
    "Scale",
    "ScaleField",
    "default_pass_rule",
]
