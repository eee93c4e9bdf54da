"""Code evaluators: a Python function in a file next to the deployment, called per request.

``code: evaluators/checks.py:valid_json`` names the file (relative to the deployment file) and
the function. The file is imported under the flow runtime's per-load module isolation
(shared.flow.modules): its sibling imports are its own, and two evaluators' ``utils.py`` never
mix. The function is called with keyword arguments, one per evaluator input it declares
(columns; an input absent from the request is None); it may also take ``**kwargs`` for all.

It returns one of (checked against the evaluator's scale):

- a number (a bool counts as 1 or 0), or a label string on a labels scale;
- ``(score, reason)``, a score as above and a string;
- a dict with ``score`` (or ``value``) and/or ``label``, and optionally ``reason``;
- None: the metric does not apply to this request (the reason: "the evaluator returned None").

A synchronous function runs in a bounded thread pool (evaluation/code_threads.py), never on the event loop; an ``async def``
runs on the loop. Either way ``timeout_seconds`` bounds it: past it the outcome is a TIMEOUT
error and the pipeline goes on (a hung thread keeps its pool slot until it returns). An
exception is an INTERNAL error carrying its class and message; a result off the scale or of
another shape is UNPARSEABLE.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.processor.evaluation.code_threads import CodeThreads
from services.processor.evaluation.context import BuildContext, EvaluatorUnavailable
from services.processor.evaluation.protocol import (
    Failed,
    NotApplicable,
    Outcome,
    RequestFields,
    Scored,
)
from shared.deployments import EvaluatorConfig, Scale
from shared.events.messages import EvaluationErrorType
from shared.flow.python_node import flow_modules

KIND = "code"
TIMEOUT = EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT
INTERNAL = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
UNPARSEABLE = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
MAX_REASON_CHARS = 1_000


class BadResult(ValueError):
    """The function's result is not one of the accepted shapes, or is off the scale."""


def read_result(result: Any, scale: Scale) -> tuple[float, str, str] | None:
    """(value, label, reason) from a code evaluator's return value; None: not applicable."""
    if result is None:
        return None
    reason: Any = ""
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], str):
            raise BadResult("a tuple result must be (score, reason) with a string reason")
        result, reason = result
    elif isinstance(result, Mapping):
        unknown = set(result) - {"score", "value", "label", "reason"}
        if unknown:
            raise BadResult(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} in the result")
        reason = result.get("reason") or ""
        if not isinstance(reason, str):
            raise BadResult("the reason must be a string")
        score = result.get("score", result.get("value"))
        label = result.get("label")
        if score is None and label is None:
            raise BadResult("a dict result needs a score or a label")
        if label is not None and not isinstance(label, str):
            raise BadResult("the label must be a string")
        value, found = _value(label if score is None else score, scale)
        if label is not None:
            if scale.type == "labels":
                named, number = _label(label, scale)
                if number != value:
                    raise BadResult(f"the label {named!r} is {number:g}, not the score {value:g}")
                found = named
            else:
                found = label[:100]  # a number scale's free label (e.g. "valid")
        return value, found, _cut(reason)
    value, label = _value(result, scale)
    return value, label, _cut(reason)


def _value(score: Any, scale: Scale) -> tuple[float, str]:
    if isinstance(score, str):
        if scale.type != "labels":
            raise BadResult(f"the score {score[:40]!r} is a string; the scale is {scale.describe()}")
        return _label(score, scale)[::-1]
    if isinstance(score, bool):
        score = 1.0 if score else 0.0
    if not isinstance(score, int | float) or not math.isfinite(score):
        raise BadResult(f"the score is a {type(score).__name__}, not a number")
    try:
        value = scale.check(score)
    except ValueError as exc:
        raise BadResult(f"the score {exc}") from None
    return value, scale.label_of(value)


def _label(label: str, scale: Scale) -> tuple[str, float]:
    try:
        return scale.label_value(label)
    except ValueError as exc:
        raise BadResult(f"the label {exc}") from None


def _cut(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."


class CodeEvaluator:
    kind = KIND

    def __init__(
        self, config: EvaluatorConfig, function: Callable[..., Any], inputs: dict[str, str],
        threads: CodeThreads,
    ) -> None:
        self.name, self.version = config.name, config.version
        self.metrics = (config.name,)
        self._scale = config.effective_scale
        self._function = function
        self._is_async = inspect.iscoroutinefunction(function)
        self._inputs = inputs
        self._threads = threads
        self.timeout = config.timeout

    def scale(self, metric: str) -> Scale:
        return self._scale

    def identity(self, metric: str) -> tuple[str, str]:
        return self.name, self.version

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]:
        kwargs = {name: request.column(reference) for name, reference in self._inputs.items()}
        try:
            if self._is_async:
                # asyncio.timeout rather than wait_for: the coroutine runs in the judging task,
                # cancelled there at the deadline, instead of in a task of its own per call.
                async with asyncio.timeout(self.timeout):
                    result = await self._function(**kwargs)
            else:
                # Bounded there: the function's run by the timeout, its batched hand-overs apart.
                result = await self._threads.call(functools.partial(self._function, **kwargs), self.timeout)
        except TimeoutError:
            return [Failed(self.name, TIMEOUT, f"the code evaluator did not return within {self.timeout:g}s")]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return [Failed(self.name, INTERNAL, f"{type(exc).__name__}: {exc}")]
        try:
            read = read_result(result, self._scale)
        except BadResult as exc:
            return [Failed(self.name, UNPARSEABLE, f"the code evaluator's result is unusable: {exc}")]
        if read is None:
            return [NotApplicable(self.name, "the evaluator returned None")]
        value, label, reason = read
        return [Scored(self.name, value, reason, label)]


def _inputs_of(function: Callable[..., Any], columns: Mapping[str, str]) -> dict[str, str]:
    """Input name -> column reference for the parameters the function takes."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError) as exc:
        raise EvaluatorUnavailable(f"cannot read the function's signature: {exc}") from None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(columns)
    inputs: dict[str, str] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
            raise EvaluatorUnavailable(f"parameter {parameter.name!r} cannot be passed by name")
        if parameter.name in columns:
            inputs[parameter.name] = columns[parameter.name]
        elif parameter.default is parameter.empty:
            known = ", ".join(sorted(columns)) or "none"
            raise EvaluatorUnavailable(
                f"parameter {parameter.name!r} is not mapped: add it to the evaluator's columns (mapped: {known})"
            )
    return inputs


def build_code_evaluator(config: EvaluatorConfig, context: BuildContext) -> CodeEvaluator:
    path, name = config.code_path, config.code_function
    assert path is not None and name is not None  # the schema requires code for this kind
    modules = flow_modules(path.parent)
    context.resources.closers.append(modules.release)
    try:
        module = modules.import_file(path)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        message = str(exc).replace(f"{modules.package}.", "")
        raise EvaluatorUnavailable(f"importing {path.name} failed: {type(exc).__name__}: {message}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise EvaluatorUnavailable(f"{path.name} has no function {name!r}")
    inputs = _inputs_of(function, context.columns(config))
    threads = context.resources.code_threads(context.section.code_evaluator_threads)
    return CodeEvaluator(config, function, inputs, threads)


__all__ = ["KIND", "BadResult", "CodeEvaluator", "build_code_evaluator", "read_result"]
