"""Reading a judge's reply: a tolerant parser that the judged text cannot steer.

Tolerant: the verdict may be wrapped in prose or a code fence, the score may be ``4``, ``4.0`` or
``"4"``, the reason may be called ``reason``, ``explanation`` or ``rationale``.

Not steerable: a judge (or a simulator) may repeat the judged answer in its reply, and the answer
may contain ``score: 5`` or ``{"score": 5}``. So the parser

1. finds every top-level JSON object in the reply,
2. drops the objects that lie inside a verbatim copy of a judged text, and
3. takes the **last** remaining object that carries a score: a verdict comes after whatever the
   judge repeated or reasoned about.

Text that is not JSON is never read for a score (``score: 5`` in prose counts for nothing), and
an invalid score is an error, never rounded or guessed: a reply that yields no valid verdict
raises :class:`UnparseableVerdict`, which becomes an ``unparseable`` evaluation error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.deployments import Scale

MAX_REPLY_CHARS = 50_000
MAX_REASON_CHARS = 1_000
# A judged text shorter than this and without a brace cannot hold a fake verdict object, and
# looking for it would only find coincidences ("Yes", "5").
_MIN_ECHO_CHARS = 20
_MAX_OBJECT_ATTEMPTS = 2_000
_REASON_KEYS = ("reason", "explanation", "rationale", "reasoning")
_INTEGER_TEXT = re.compile(r"^\s*([1-5])\s*$")
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DECODER = json.JSONDecoder()


class UnparseableVerdict(ValueError):
    """The reply holds no valid verdict; the message says why (short, safe to publish)."""


@dataclass(frozen=True)
class Verdict:
    score: int
    reason: str


def _objects(text: str) -> list[tuple[int, int, dict]]:
    """(start, end, object) for each top-level JSON object in ``text``, left to right."""
    found: list[tuple[int, int, dict]] = []
    at = text.find("{")
    attempts = 0
    while at != -1 and attempts < _MAX_OBJECT_ATTEMPTS:
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, at)
        except (ValueError, RecursionError):
            at = text.find("{", at + 1)
            continue
        if isinstance(value, dict):
            found.append((at, end, value))
        at = text.find("{", end)
    return found


def _echo_spans(text: str, judged: Iterable[str]) -> list[tuple[int, int]]:
    spans = []
    for piece in judged:
        piece = (piece or "").strip()
        if not piece or (len(piece) < _MIN_ECHO_CHARS and "{" not in piece):
            continue
        at = text.find(piece)
        while at != -1:
            spans.append((at, at + len(piece)))
            at = text.find(piece, at + 1)
    return spans


def _candidates(text: object, judged: Iterable[str]) -> list[dict]:
    if not isinstance(text, str) or not text.strip():
        raise UnparseableVerdict("the judge's reply is empty")
    if len(text) > MAX_REPLY_CHARS:
        text = text[-MAX_REPLY_CHARS:]
    echoes = _echo_spans(text, judged)
    return [
        obj
        for start, end, obj in _objects(text)
        if not any(e_start <= start and end <= e_end for e_start, e_end in echoes)
    ]


def _lower_keys(obj: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _score(value: object) -> int:
    if isinstance(value, bool):
        raise UnparseableVerdict("the score is a boolean")
    if isinstance(value, int):
        score = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise UnparseableVerdict(f"the score {value!r} is not a whole number")
        score = int(value)
    elif isinstance(value, str):
        match = _INTEGER_TEXT.match(value)
        if not match:
            raise UnparseableVerdict(f"the score {value[:20]!r} is not an integer from 1 to 5")
        score = int(match.group(1))
    else:
        raise UnparseableVerdict(f"the score is a {type(value).__name__}")
    if not 1 <= score <= 5:
        raise UnparseableVerdict(f"the score {score} is outside 1..5")
    return score


def _reason(fields: dict) -> str:
    for key in _REASON_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            reason = " ".join(value.split())
            return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
    return ""


def _verdict(fields: dict) -> Verdict:
    fields = _lower_keys(fields)
    return Verdict(_score(fields["score"]), _reason(fields))


def parse_verdict(text: object, judged: Sequence[str] = ()) -> Verdict:
    """The verdict in a single-metric reply; ``judged`` are the texts that were judged."""
    for obj in reversed(_candidates(text, judged)):
        fields = _lower_keys(obj)  # once: _verdict(obj) would lower the keys again
        if "score" in fields:
            return Verdict(_score(fields["score"]), _reason(fields))
    raise UnparseableVerdict("the judge's reply holds no JSON object with a score")


def parse_combined(
    text: object, metrics: Sequence[str], judged: Sequence[str] = ()
) -> dict[str, Verdict | UnparseableVerdict]:
    """Each metric's verdict (or why it has none) in a combined reply.

    Accepts ``{"relevance": {"score": 4, "reason": ".."}, ...}``, the same under a ``"scores"``
    member, and a bare score per metric. Raises UnparseableVerdict when no object names any of
    the metrics.
    """
    wanted = [m.lower() for m in metrics]
    for obj in reversed(_candidates(text, judged)):
        fields = _lower_keys(obj)
        nested = fields.get("scores")
        if isinstance(nested, dict):
            fields = _lower_keys(nested)
        if not any(m in fields for m in wanted):
            continue
        results: dict[str, Verdict | UnparseableVerdict] = {}
        for metric, key in zip(metrics, wanted, strict=True):
            entry = fields.get(key)
            try:
                if entry is None:
                    raise UnparseableVerdict(f"the reply has no verdict for {metric}")
                if isinstance(entry, dict):
                    results[metric] = _verdict(entry)
                else:
                    results[metric] = Verdict(_score(entry), "")
            except UnparseableVerdict as exc:
                results[metric] = exc
            except KeyError:
                results[metric] = UnparseableVerdict(f"the verdict for {metric} has no score")
        return results
    raise UnparseableVerdict("the judge's reply holds no JSON object naming the metrics")


@dataclass(frozen=True)
class ScaledVerdict:
    """A verdict on an evaluator's own scale: the value, the label (label scales), the reason."""

    value: float
    label: str
    reason: str


def _number(value: object, scale: Scale) -> float:
    if isinstance(value, bool):
        raise UnparseableVerdict("the score is a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_TEXT.match(text):
            raise UnparseableVerdict(f"the score {value[:20]!r} is not {scale.describe()}")
        value = float(text)
    if not isinstance(value, int | float):
        raise UnparseableVerdict(f"the score is a {type(value).__name__}")
    try:
        return scale.check(value)
    except ValueError as exc:
        raise UnparseableVerdict(f"the score {exc}") from None


def _scaled(fields: dict, scale: Scale) -> ScaledVerdict:
    reason = _reason(fields)
    if scale.type == "labels":
        raw = fields.get("label", fields.get("score"))
        if isinstance(raw, str) and not _NUMBER_TEXT.match(raw.strip()):
            try:
                label, value = scale.label_value(raw)
            except ValueError as exc:
                raise UnparseableVerdict(f"the label {exc}") from None
            return ScaledVerdict(value, label, reason)
        value = _number(raw, scale)
        return ScaledVerdict(value, scale.label_of(value), reason)
    return ScaledVerdict(_number(fields["score"], scale), "", reason)


def parse_scaled(text: object, scale: Scale, judged: Sequence[str] = ()) -> ScaledVerdict:
    """The verdict on ``scale`` in a rubric's reply: the same rules as :func:`parse_verdict`
    (the last JSON object outside any copy of a judged text), reading ``score`` for number
    scales and ``label`` (or a label given as ``score``) for label scales."""
    keys = ("label", "score") if scale.type == "labels" else ("score",)
    for obj in reversed(_candidates(text, judged)):
        fields = _lower_keys(obj)
        if any(key in fields for key in keys):
            return _scaled(fields, scale)
    wanted = " or ".join(keys)
    raise UnparseableVerdict(f"the judge's reply holds no JSON object with a {wanted}")
