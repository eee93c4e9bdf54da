"""What every evaluator kind implements, and what it gets and gives back.

The pipeline (pipeline.py) hands each evaluator of a deployment one :class:`RequestFields` per
judged request and publishes one Evaluation event per metric from the outcomes it returns. An
evaluator never publishes, never holds offsets and never sees Kafka: those are the pipeline's.

- A single-output evaluator's metric is its name; a multi-output evaluator (an evaluation flow)
  emits ``<evaluator>.<output>`` metrics, listed in ``metrics``.
- ``evaluate`` returns exactly one outcome per metric of ``metrics`` (the pipeline turns a
  missing one into an INTERNAL error, and an exception into one per metric).
- An outcome's ``evaluator``/``version`` are empty for the evaluator's own name and version; the
  built-in judges in one combined call set them per metric (each built-in is an evaluator of
  its own, with the version of the prompt actually sent).
- Judge calls go through :class:`~services.processor.evaluation.judge.calls.JudgeCalls`, which
  holds the processor-wide judge concurrency cap and the deployment's token budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from opentelemetry.context import Context

from services.processor.evaluation.judge.client import CallCost
from shared.deployments import Scale
from shared.deployments.schema import Fields
from shared.events.messages import EvaluationErrorType, EventMeta


@dataclass(frozen=True, slots=True)
class JudgeUsage:
    """The judge call behind an outcome: its cost, the prompt version, the outcome's share of a
    call made for several metrics ((prompt, completion) tokens; None for the whole call)."""

    cost: CallCost
    prompt_version: str
    share: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    """A value on the metric's scale (a label scale's value is the label's number)."""

    metric: str
    value: float
    reason: str = ""
    label: str = ""
    judge: JudgeUsage | None = None
    evaluator: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class NotApplicable:
    """The metric does not apply to this request (an input it needs is missing)."""

    metric: str
    reason: str
    evaluator: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    """The evaluator could not score: ``error_type`` says why (timeout, unparseable, internal...)."""

    metric: str
    error_type: EvaluationErrorType
    message: str
    judge: JudgeUsage | None = None
    evaluator: str = ""
    version: str = ""


Outcome = Scored | NotApplicable | Failed


class StructFields:
    """Read access to a Struct's top-level fields, converting only the fields asked for.

    Inputs can hold whole chat histories and retrieved documents; a judge needs two or three
    fields of them, so converting the whole Struct to a dict per judged request is waste.
    """

    __slots__ = ("_fields",)

    def __init__(self, struct: Struct) -> None:
        self._fields = struct.fields

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._fields:
            return default
        value = self._fields[name]
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            return value.string_value
        if kind == "null_value" or kind is None:
            return None
        if kind == "bool_value":
            return value.bool_value
        if kind == "number_value":
            number = value.number_value
            return int(number) if number.is_integer() and abs(number) <= 2**53 else number
        return json_format.MessageToDict(value)


class RequestFields:
    """One joined request as an evaluator sees it: inputs, outputs, and where it came from.

    ``inputs``/``outputs`` convert only the fields read (see StructFields); ``column`` reads an
    evaluator column reference (``inputs.x`` / ``outputs.y``); ``trace_parent`` is the request's
    trace context, the parent of any span an evaluator makes.
    """

    __slots__ = ("inputs", "outputs", "meta", "trace_parent")

    def __init__(self, inputs: Fields, outputs: Fields, meta: EventMeta, trace_parent: Context | None = None) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.meta = meta
        self.trace_parent = trace_parent if trace_parent is not None else Context()

    def column(self, reference: str) -> Any:
        side, _, name = reference.partition(".")
        return (self.inputs if side == "inputs" else self.outputs).get(name)

    def columns(self, mapping: Mapping[str, str]) -> dict[str, Any]:
        """Evaluator input -> its value in this request (None when absent)."""
        return {name: self.column(reference) for name, reference in mapping.items()}


class Evaluator(Protocol):
    """One configured evaluator, ready to run (built once per deployment at start-up)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def scale(self, metric: str) -> Scale:
        """The scale of one of ``metrics`` (Scored.score is derived from it for older readers)."""
        ...

    def identity(self, metric: str) -> tuple[str, str]:
        """(evaluator name, version) the outcomes of ``metric`` are published under: usually
        ``(self.name, self.version)``; an outcome's own evaluator/version fields win."""
        ...

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]: ...


class UnavailableEvaluator:
    """An evaluator that could not be set up (its code does not import, its kind is not built
    into this processor, its judge connection is missing): every request gets a CONFIGURATION
    error naming why, so the problem is visible in the figures, never silent."""

    def __init__(self, name: str, version: str, kind: str, metrics: Sequence[str], scale: Scale, reason: str) -> None:
        self.name, self.version, self.kind = name, version, kind
        self.metrics = tuple(metrics)
        self._scale = scale
        self.reason = reason

    def scale(self, metric: str) -> Scale:
        return self._scale

    def identity(self, metric: str) -> tuple[str, str]:
        return self.name, self.version

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]:
        error = EvaluationErrorType.EVALUATION_ERROR_TYPE_CONFIGURATION
        return [Failed(metric, error, self.reason) for metric in self.metrics]


def column_text(value: Any) -> str | None:
    """A column's value as judge-ready text; None when absent or blank."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list | dict) and not value:
        return None
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


__all__ = [
    "Evaluator",
    "Failed",
    "JudgeUsage",
    "NotApplicable",
    "Outcome",
    "RequestFields",
    "Scored",
    "StructFields",
    "UnavailableEvaluator",
    "column_text",
]
