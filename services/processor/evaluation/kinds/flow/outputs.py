"""An evaluation flow's output, read as a score: a number (numbers inside strings too, as prompt
flow users expect), a label (text that is not a number), or nothing.

Prompt flow's evaluation flows return whatever their last node returns, and their ``outputs``
are usually typed ``string`` whatever the node gives: ``4.0`` (a float), ``"4"``, ``" 4.0 "``
and a judge's ``{"score": 4, "reason": "..."}`` (as an object or as its JSON text) all mean the
score 4. ``"Correct"`` is a label, which the output's scale maps to a number. ``None`` and blank
text mean the flow did not score this request (not applicable, never a guess).

Anything else (a list, an object without a score, NaN) cannot be a score: :class:`OutputError`
names what the output was, so the outcome says why it is an error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from services.processor.evaluation.protocol import Failed, NotApplicable, Outcome, Scored
from shared.deployments import Scale
from shared.events.messages import EvaluationErrorType

# A whole string that is one number: "4", "-0.5", "+4.", ".5", "1e3" (not "4/5", not "4 stars").
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# Keys a judge's JSON reply puts its score and its explanation under.
SCORE_KEYS = ("score", "value", "rating")
REASON_KEYS = ("reason", "explanation", "rationale")
MAX_LABEL_CHARS = 200
MAX_REASON_CHARS = 1_000
_QUOTE_CHARS = 60


class OutputError(ValueError):
    """The output is present but is neither a number nor a label."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What one output said: a number, a label, or both (a boolean is 1/0 and "true"/"false")."""

    value: float | None = None
    label: str | None = None
    reason: str = ""


def read_output(value: Any) -> Reading | None:
    """The score an output holds; None when it holds nothing (None, blank text, empty list or
    object). Raises OutputError when it holds something that is not a score."""
    return _read(value, depth=0)


def _read(value: Any, depth: int) -> Reading | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return Reading(value=1.0 if value else 0.0, label="true" if value else "false")
    if isinstance(value, int | float):
        return Reading(value=_finite(float(value), value))
    if isinstance(value, str):
        return _read_text(value, depth)
    if isinstance(value, dict):
        return _read_object(value, depth)
    if isinstance(value, list | tuple):
        if not value:
            return None
        raise OutputError(f"a list ({_quote(value)}), not a score")
    raise OutputError(f"a {type(value).__name__}, not a score")


def _read_text(text: str, depth: int) -> Reading | None:
    stripped = text.strip()
    if not stripped:
        return None
    if _NUMBER.fullmatch(stripped):
        return Reading(value=_finite(float(stripped), stripped))
    if depth == 0 and stripped[0] in "{[\"":
        # JSON text: a judge's '{"score": 4, "reason": ...}', or a number or label in quotes.
        try:
            decoded = json.loads(stripped)
        except ValueError:
            decoded = _NOT_JSON
        if decoded is not _NOT_JSON:
            return _read(decoded, depth + 1)
    if len(stripped) > MAX_LABEL_CHARS:
        raise OutputError(f"a text of {len(stripped)} characters ({_quote(stripped)}), not a number or a label")
    return Reading(label=stripped)


def _read_object(data: dict[Any, Any], depth: int) -> Reading | None:
    if not data:
        return None
    keys = {str(key).lower(): key for key in data}
    score_key = next((keys[k] for k in SCORE_KEYS if k in keys), None)
    if score_key is None:
        numbers = [key for key, item in data.items() if isinstance(item, int | float) and not isinstance(item, bool)]
        if len(data) != 1 or len(numbers) != 1:
            raise OutputError(f"an object without a score ({_quote(data)}): give it a 'score' field")
        score_key = numbers[0]
    score = data[score_key]
    if isinstance(score, dict | list):
        raise OutputError(f"an object whose {score_key!r} is not a number or a label ({_quote(data)})")
    reading = _read(score, depth + 1)
    if reading is None:
        return None
    reason_key = next((keys[k] for k in REASON_KEYS if k in keys), None)
    reason = data[reason_key] if reason_key is not None else ""
    text = " ".join((reason if isinstance(reason, str) else json.dumps(reason, default=str)).split())
    if len(text) > MAX_REASON_CHARS:  # it rides on every event: bounded like a code evaluator's
        text = text[:MAX_REASON_CHARS] + "..."
    return Reading(reading.value, reading.label, text)


def _finite(number: float, shown: Any) -> float:
    if not math.isfinite(number):
        raise OutputError(f"{_quote(shown)} is not a finite number")
    return number


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return repr(text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...")


class _NotJson:
    pass


_NOT_JSON = _NotJson()


def on_scale(reading: Reading, scale: Scale) -> tuple[float, str]:
    """(value, label) of a reading on ``scale``; raises ValueError naming the scale.

    A label scale takes a label (any letter case) or the number of one of its labels; a number
    scale takes a number on it, never a label (a bool is its 1 or 0).
    """
    if scale.type == "labels":
        if reading.label is not None:
            return scale.label_value(reading.label)[::-1]
        assert reading.value is not None
        value = scale.check(reading.value)
        return value, scale.label_of(value)
    if reading.value is None:
        assert reading.label is not None
        raise ValueError(f"{_quote(reading.label)} is not a number; the scale is {scale.describe()} "
                         "(a label output needs a labels scale: outputs.<name>.scale.labels)")
    return scale.check(reading.value), ""


_UNPARSEABLE = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE


def outcome_of(metric: str, value: Any, scale: Scale, *, what: str, missing: str, hint: str = "") -> Outcome:
    """The outcome of one output read as a score on ``scale``: scored, not applicable (``missing``
    says why) or unparseable (naming ``what`` the output was). Shared by the flow, flex and
    prompty kinds, whose outputs come in the same shapes."""
    try:
        reading = read_output(value)
    except OutputError as exc:
        return Failed(metric, _UNPARSEABLE, f"{what} is {exc}{hint}")
    if reading is None:
        return NotApplicable(metric, missing)
    try:
        number, label = on_scale(reading, scale)
    except ValueError as exc:
        return Failed(metric, _UNPARSEABLE, f"{what}: {exc}")
    return Scored(metric, number, reading.reason, label or reading.label or "")
