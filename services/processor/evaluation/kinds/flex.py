"""Flex evaluation flows: a prompt flow ``flow.flex.yaml`` evaluator, its entry called per request.

``kind: flex`` with ``flow: <folder>`` loads the folder with the shared flow runtime (shared/flow/
flex_loader.py) once per processor start; a class entry is built once with the evaluator's
``init`` (model configurations from connections.yaml, as for a flex deployment; a connection
name connections.yaml lacks, prompt flow's ``open_ai_connection``, is the deployment's judge
connection). Per judged request the entry is called with its parameters bound from the request
through the columns (kinds/flow/binding.py, prompt flow's ``${data.x}`` / ``${run.outputs.x}``).

What the entry returns is read as kinds/flow/outputs.py reads a flow's outputs: with ``outputs:``
listed, each field of the returned mapping (or dataclass) is a metric ``<evaluator>.<field>``;
without, the evaluator has one metric, its name, and the whole value is the score (a number, a
number in a string, a judge's ``{"score": ..., "reason": ...}``, a label).

The ``openai`` requests the entry makes with its own clients wait for a judge slot
(shared/flow/llm_gate.py) and are counted as judge calls (their usage seen by the runtime's
instrumentation, python_llm.py): spent from the judge budget and carried on the outcomes. A run
past ``timeout_seconds`` is a TIMEOUT error of every metric; an entry that raises, INTERNAL (an
openai 429 RATE_LIMITED, another API error ENDPOINT_ERROR).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context

from services.processor.evaluation.context import BuildContext, EvaluatorUnavailable
from services.processor.evaluation.judge.client import CallCost
from services.processor.evaluation.kinds.flow.binding import (
    InputTypeError,
    bind_request,
    input_sources,
)
from services.processor.evaluation.kinds.flow.evaluator import (
    CONFIGURATION,
    ENDPOINT_ERROR,
    INTERNAL,
    RATE_LIMITED,
    TIMEOUT,
    _cost,
    _with_usage,
    judge_usage,
)
from services.processor.evaluation.kinds.flow.outputs import outcome_of
from services.processor.evaluation.protocol import (
    Failed,
    NotApplicable,
    Outcome,
    RequestFields,
)
from shared.deployments import Connection, EvaluatorConfig, Scale
from shared.events.messages import EvaluationErrorType
from shared.flow import FlowError, FlowInputError, LlmCall, NodeExecutionError, load_flow
from shared.flow.flex import OUTPUT, FlexFlow
from shared.flow.flex_executor import FlexExecutor
from shared.flow.llm_gate import Gate, openai_requests_gated
from shared.flow.plan import DEFAULT_VARIANT

KIND = "flex"
DEFAULT_TIMEOUT_SECONDS = 60.0


class FlexEvaluator:
    kind = KIND

    def __init__(self, config: EvaluatorConfig, flow: FlexFlow, executor: FlexExecutor, columns: Mapping[str, str],
                 *, gate: Gate, on_usage: Any, timeout: float) -> None:
        self.name, self.version = config.name, config.version
        # metric -> the field of the returned mapping it reads (None: the whole value)
        self._fields: dict[str, str | None] = (
            {f"{config.name}.{output}": output for output in config.outputs} if config.outputs
            else {config.name: None}
        )
        self.metrics = tuple(self._fields)
        self._scales = {metric: config.scale_of(metric) for metric in self.metrics}
        self._executor = executor
        self._sources = input_sources(flow, columns)
        self._gate, self._on_usage = gate, on_usage
        self.timeout = timeout

    def scale(self, metric: str) -> Scale:
        return self._scales[metric]

    def identity(self, metric: str) -> tuple[str, str]:
        return self.name, self.version

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]:
        try:
            inputs, missing = bind_request(self._sources, request)
        except InputTypeError as exc:
            return self._failed(CONFIGURATION, str(exc).replace("flow input", "entry parameter"))
        if missing:
            return [NotApplicable(metric, f"no {' or '.join(missing)} in this request") for metric in self.metrics]
        try:
            result = await asyncio.wait_for(self._run(inputs, request), self.timeout)
        except TimeoutError:
            # The calls of a run cut short are not known; what they cost is not in the figures.
            return self._failed(TIMEOUT, f"the flex evaluation flow did not finish within {self.timeout:g}s")
        except FlowInputError as exc:
            return self._failed(CONFIGURATION, f"the flex evaluation flow refused its inputs: {exc}")
        except NodeExecutionError as exc:
            usage = self._spend(exc.llm_calls)
            return self._failed(_error_type(exc), f"the flex evaluation flow failed: {exc}", usage)
        except FlowError as exc:
            return self._failed(INTERNAL, f"the flex evaluation flow cannot run: {exc}")
        usage = self._spend(result.llm_calls)
        whole = result.outputs.get(OUTPUT) if result.single_output else result.outputs
        return self._outcomes(whole, result.outputs, usage)

    async def _run(self, inputs: dict[str, Any], request: RequestFields) -> Any:
        # The entry's spans (its run, @trace functions, openai calls) go in the judged request's trace.
        token = otel_context.attach(request.trace_parent)
        try:
            with openai_requests_gated(self._gate):
                return await self._executor.run(inputs, request_id=request.meta.request_id)
        finally:
            otel_context.detach(token)

    def _outcomes(self, whole: Any, fields: Mapping[str, Any], cost: CallCost | None) -> list[Outcome]:
        found: list[Outcome] = []
        for metric, field in self._fields.items():
            hint = " (list its fields under outputs: to score each)" if field is None and isinstance(whole, dict) else ""
            found.append(outcome_of(
                metric, whole if field is None else fields.get(field), self._scales[metric],
                what="the returned value" if field is None else f"field {field!r}", hint=hint,
                missing=f"the flex evaluation flow gave no {field or 'score'} for this request"))
        return _with_usage(found, cost, self.version)

    def _failed(self, error_type: EvaluationErrorType, message: str, cost: CallCost | None = None) -> list[Outcome]:
        return _with_usage([Failed(metric, error_type, message) for metric in self.metrics], cost, self.version)

    def _spend(self, calls: Sequence[LlmCall]) -> CallCost | None:
        for call in calls:
            self._on_usage(_cost([call]), True)
        return _cost(calls) if calls else None


def _error_type(exc: NodeExecutionError) -> EvaluationErrorType:
    """An openai error raised by the entry is the endpoint's failure, not the code's."""
    cause = exc.__cause__
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a dependency of the runtime
        return INTERNAL
    if isinstance(cause, openai.RateLimitError):
        return RATE_LIMITED
    if isinstance(cause, openai.APIError):
        return ENDPOINT_ERROR
    return INTERNAL


def build_flex_evaluator(config: EvaluatorConfig, context: BuildContext) -> FlexEvaluator:
    assert config.flow is not None  # the schema requires flow for this kind
    try:
        flow = load_flow(config.flow)
    except FlowError as exc:
        raise EvaluatorUnavailable(f"the flex evaluation flow does not load: {exc}") from None
    if not isinstance(flow, FlexFlow):
        raise EvaluatorUnavailable(f"{config.flow} is not a flex flow (no flow.flex.yaml)")
    connections = _connections(config.init or flow.sample_init or {}, context)
    try:
        executor = FlexExecutor(flow, {DEFAULT_VARIANT: config.init}, connections=connections)
    except FlowError as exc:
        raise EvaluatorUnavailable(f"the flex evaluation flow cannot be built: {exc}") from None
    return FlexEvaluator(config, flow, executor, context.columns(config), gate=context.judge_calls.slot,
                         on_usage=judge_usage(config, context),
                         timeout=float(config.timeout_seconds or DEFAULT_TIMEOUT_SECONDS))


def _connections(init: Mapping[str, Any], context: BuildContext) -> dict[str, Connection]:
    """connections.yaml, plus each connection an init value names that it lacks, as the judge's
    (prompt flow's examples name ``open_ai_connection``)."""
    evaluation = context.deployment.evaluation
    assert evaluation is not None
    known = dict(context.connections)
    judge = known.get(evaluation.judge.connection)
    named = {value["connection"] for value in init.values()
             if isinstance(value, Mapping) and isinstance(value.get("connection"), str)}
    for name in sorted(named - set(known)):
        if judge is None:
            raise EvaluatorUnavailable(f"connection {name!r} of the flex evaluation flow's init is not in "
                                       "connections.yaml, nor is the judge's")
        known[name] = judge
    return known


__all__ = ["KIND", "FlexEvaluator", "build_flex_evaluator"]
