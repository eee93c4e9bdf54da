"""Evaluation flows: a prompt flow ``flow.dag.yaml`` evaluation flow, run unchanged per request.

``kind: flow`` with ``flow: <folder>`` runs the folder with the shared flow runtime
(shared/flow/) on each judged request, its inputs bound through the evaluator's columns
(binding.py). Each output of the flow (or each listed under ``outputs``) is a metric
``<evaluator>.<output>``, read as a score on that output's scale (outputs.py): a number, numbers
in strings too, or a label.

- The flow's llm nodes call the judge endpoint: a node's ``connection`` is the connections.yaml
  entry of that name, or the deployment's judge connection when connections.yaml has none of
  that name (so prompt flow's ``open_ai_connection`` runs against the judge as it is). Each of
  their calls waits for a place under the processor's judge concurrency cap, shared with every
  other judge call, and for the connection's circuit breaker; its tokens count as judge tokens: spent from the deployment's judge
  budget, in the judge metrics, and on the outcomes (``judge``, split over the metrics so they
  add up to the run's tokens once).
- A run longer than the evaluator's ``timeout_seconds`` (default 60) is a TIMEOUT error of
  every metric; a node that fails is an INTERNAL error naming the node (an LLM call that failed:
  RATE_LIMITED on HTTP 429, else ENDPOINT_ERROR); an input of the wrong type, CONFIGURATION.
  Either way the deployment's other evaluators run as usual.
- ``aggregation: true`` nodes do not run online (docs/evaluators.md, "Aggregation nodes"):
  each evaluator says which it skips and why in ``aggregation_not_run``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from opentelemetry import context as otel_context

from services.processor.evaluation.context import BuildContext, EvaluatorUnavailable
from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.client import CallCost, classify
from services.processor.evaluation.kinds.flow.binding import (
    InputTypeError,
    bind_request,
    input_sources,
)
from services.processor.evaluation.kinds.flow.outputs import outcome_of
from services.processor.evaluation.outcomes import token_shares
from services.processor.evaluation.protocol import (
    Failed,
    JudgeUsage,
    NotApplicable,
    Outcome,
    RequestFields,
    Scored,
)
from shared.deployments import Connection, EvaluatorConfig, Scale
from shared.events.messages import EvaluationErrorType
from shared.flow import (
    Flow,
    FlowError,
    FlowExecutor,
    FlowInputError,
    LlmCall,
    LlmCallError,
    NodeExecutionError,
    build_clients,
    flow_connections,
    load_flow,
)

log = logging.getLogger(__name__)

KIND = "flow"
DEFAULT_TIMEOUT_SECONDS = 60.0
TIMEOUT = EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT
INTERNAL = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
UNPARSEABLE = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
CONFIGURATION = EvaluationErrorType.EVALUATION_ERROR_TYPE_CONFIGURATION
RATE_LIMITED = EvaluationErrorType.EVALUATION_ERROR_TYPE_RATE_LIMITED
ENDPOINT_ERROR = EvaluationErrorType.EVALUATION_ERROR_TYPE_ENDPOINT_ERROR
AGGREGATION_REASON = (
    "aggregation nodes run once over a whole batch run in prompt flow; online there is no batch, "
    "and the rollups already give each output's average and pass rate per minute"
)

Gate = Callable[[], AbstractAsyncContextManager[Any]]
UsageSink = Callable[[CallCost, bool], None]


class FlowEvaluator:
    kind = KIND

    def __init__(
        self,
        config: EvaluatorConfig,
        flow: Flow,
        executor: FlowExecutor,
        columns: Mapping[str, str],
        *,
        on_usage: UsageSink,
        timeout: float,
    ) -> None:
        self.name, self.version = config.name, config.version
        outputs = config.flow_outputs()
        self._outputs = {f"{config.name}.{output}": output for output in outputs}
        self.metrics = tuple(self._outputs)
        self._scales = {metric: config.scale_of(metric) for metric in self.metrics}
        self._flow, self._executor = flow, executor
        self._sources = input_sources(flow, columns)
        self._on_usage = on_usage
        self.timeout = timeout
        self.aggregation_not_run = flow.aggregation_nodes

    def scale(self, metric: str) -> Scale:
        return self._scales[metric]

    def identity(self, metric: str) -> tuple[str, str]:
        return self.name, self.version

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]:
        try:
            inputs, missing = bind_request(self._sources, request)
        except InputTypeError as exc:
            return self._failed(CONFIGURATION, str(exc))
        if missing:
            reason = f"no {' or '.join(missing)} in this request"
            return [NotApplicable(metric, reason) for metric in self.metrics]
        calls: list[LlmCall] = []
        try:
            result = await asyncio.wait_for(self._run(inputs, request), self.timeout)
        except TimeoutError:
            # The calls of a run cut short are not known; what they cost is not in the figures.
            return self._failed(TIMEOUT, f"the evaluation flow did not finish within {self.timeout:g}s")
        except asyncio.CancelledError:
            raise
        except FlowInputError as exc:
            return self._failed(CONFIGURATION, f"the evaluation flow refused its inputs: {exc}")
        except LlmCallError as exc:
            calls = exc.llm_calls
            usage = self._spend(calls, failed_call=True)
            error_type = RATE_LIMITED if exc.status_code == 429 else ENDPOINT_ERROR
            return self._failed(error_type, f"the evaluation flow's LLM call failed: {exc}", usage)
        except NodeExecutionError as exc:
            usage = self._spend(exc.llm_calls)
            return self._failed(INTERNAL, f"the evaluation flow failed: {exc}", usage)
        except FlowError as exc:
            return self._failed(INTERNAL, f"the evaluation flow cannot run: {exc}")
        calls = result.llm_calls
        usage = self._spend(calls)
        return self._outcomes(result.outputs, usage, inputs)

    async def _run(self, inputs: dict[str, Any], request: RequestFields) -> Any:
        # The flow's spans (workflow, nodes, LLM calls) go in the judged request's own trace.
        token = otel_context.attach(request.trace_parent)
        try:
            return await self._executor.run(inputs, request_id=request.meta.request_id)
        finally:
            otel_context.detach(token)

    def _outcomes(self, outputs: Mapping[str, Any], cost: CallCost | None,
                  inputs: Mapping[str, Any] | None = None) -> list[Outcome]:
        # ``inputs``: the run's inputs, for a subclass whose parser sets judged texts aside (prompty).
        found: list[Outcome] = []
        for metric, output in self._outputs.items():
            found.append(outcome_of(metric, outputs.get(output), self._scales[metric], what=f"output {output!r}",
                                    missing=f"the evaluation flow gave no {output} for this request"))
        return _with_usage(found, cost, self.version)

    def _failed(self, error_type: EvaluationErrorType, message: str, cost: CallCost | None = None) -> list[Outcome]:
        return _with_usage([Failed(metric, error_type, message) for metric in self.metrics], cost, self.version)

    def _spend(self, calls: Sequence[LlmCall], *, failed_call: bool = False) -> CallCost | None:
        """Count the run's LLM calls as judge calls; the run's cost, None when it made none."""
        for call in calls:
            self._on_usage(_cost([call]), True)
        if failed_call:
            self._on_usage(CallCost(model=""), False)
        return _cost(calls) if calls else None


def _cost(calls: Sequence[LlmCall]) -> CallCost:
    # An evaluation flow usually has one llm node; with several, the first one's model names
    # the run (the event has one model field) and the tokens are all of them.
    return CallCost(
        model=calls[0].model if calls else "",
        prompt_tokens=sum(call.prompt_tokens for call in calls),
        completion_tokens=sum(call.completion_tokens for call in calls),
        latency_ms=sum(call.duration_ms for call in calls),
        attempts=len(calls),
    )


def _with_usage(outcomes: list[Outcome], cost: CallCost | None, version: str) -> list[Outcome]:
    """The run's tokens on the outcomes that can carry them (not applicable ones cannot), split
    so that summing them over the events counts the run once."""
    if cost is None:
        return outcomes
    carriers = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, NotApplicable)]
    if not carriers:
        return outcomes
    shares: list[tuple[int, int] | None] = (
        [None] if len(carriers) == 1 else list(token_shares(cost, len(carriers)))
    )
    result = list(outcomes)
    for index, share in zip(carriers, shares, strict=True):
        outcome = result[index]
        usage = JudgeUsage(cost, version, share)
        if isinstance(outcome, Scored):
            result[index] = Scored(outcome.metric, outcome.value, outcome.reason, outcome.label, usage)
        elif isinstance(outcome, Failed):
            result[index] = Failed(outcome.metric, outcome.error_type, outcome.message, usage)
    return result


def build_flow_evaluator(config: EvaluatorConfig, context: BuildContext) -> FlowEvaluator:
    assert config.flow is not None  # the schema requires flow for this kind
    try:
        flow = load_flow(config.flow)
    except FlowError as exc:
        raise EvaluatorUnavailable(f"the evaluation flow does not load: {exc}") from None
    missing = [output for output in config.flow_outputs() if output not in flow.outputs]
    if missing:
        known = ", ".join(flow.outputs) or "none"
        raise EvaluatorUnavailable(f"the evaluation flow has no output {', '.join(missing)} (its outputs: {known})")
    executor = flow_executor(flow, context, what="the evaluation flow")
    evaluator = FlowEvaluator(
        config, flow, executor, context.columns(config), on_usage=judge_usage(config, context),
        timeout=float(config.timeout_seconds or DEFAULT_TIMEOUT_SECONDS),
    )
    if evaluator.aggregation_not_run:
        log.info("deployment %r: evaluation flow %r: aggregation node(s) %s not run online: %s",
                 context.deployment.name, config.name, ", ".join(evaluator.aggregation_not_run), AGGREGATION_REASON)
    return evaluator


def flow_executor(flow: Flow, context: BuildContext, *, what: str) -> FlowExecutor:
    """The executor of an evaluator's flow, its llm nodes calling the judge's endpoints
    (``what`` names the flow in the reason it cannot run)."""
    connections = _connections(flow, context)
    clients = _flow_clients(flow, connections, context)
    try:
        return FlowExecutor(flow, clients, connections=connections)
    except FlowError as exc:
        raise EvaluatorUnavailable(f"{what} cannot run here: {exc}") from None


def judge_usage(config: EvaluatorConfig, context: BuildContext) -> UsageSink:
    """Counts each LLM call of the evaluator's runs as one of its judge calls."""
    target = context.judge_target(config)
    calls = context.judge_calls

    def on_usage(cost: CallCost, ok: bool) -> None:
        calls.count_call(target, cost, ok=ok)

    return on_usage


def _connections(flow: Flow, context: BuildContext) -> dict[str, Connection]:
    """connections.yaml, plus each connection the flow names that it lacks, as the judge's."""
    evaluation = context.deployment.evaluation
    assert evaluation is not None
    known = dict(context.connections)
    judge = known.get(evaluation.judge.connection)
    named = flow_connections(flow) | {
        name for node_name in flow.node_order for node in flow.all_nodes(node_name) for name in node.connections.values()
    }
    for name in sorted(named - set(known)):
        if judge is None:
            raise EvaluatorUnavailable(f"connection {name!r} of the evaluation flow is not in connections.yaml, "
                                       "nor is the judge's")
        known[name] = judge
    return known


def _flow_clients(flow: Flow, connections: Mapping[str, Connection], context: BuildContext) -> dict[str, Any]:
    """One LLM endpoint per connection the flow's llm nodes name, each call in a judge slot."""
    section = context.section
    names = sorted(flow_connections(flow))
    try:
        # The endpoint's own retries (backoff, Retry-After) stand in for the judge client's; the
        # flow runtime's aiohttp path, as the gateway's flows use (docs/flows.md, "LLM calls").
        clients = build_clients(
            connections, names, session=context.resources.shared_llm_session(),
            max_retries=section.judge_max_attempts - 1, timeout=section.judge_timeout_seconds,
        )
    except Exception as exc:  # ConnectionKeyMissingError names the variable, never a key
        raise EvaluatorUnavailable(f"the evaluation flow's connections: {exc}") from None
    context.resources.llm_clients.extend(clients.values())
    for name, client in clients.items():
        # The breaker of the connection actually called, shared with its judge calls.
        breaker = context.judge_client(connections[name].name).breaker
        clients[name] = gated(client, context.judge_calls.slot, breaker)
    return clients


def gated(client: Any, gate: Gate, breaker: CircuitBreaker | None = None) -> Any:
    """``client`` whose every request waits for ``gate`` (a judge slot) first, then for the
    connection's circuit breaker, and tells the breaker how the endpoint answered.

    The flow runtime's llm nodes send every request, retries included, through the endpoint's
    ``post`` (shared/flow/llm_http.py; an ``openai`` client's ``post`` likewise); this client is
    the evaluator's own, so nothing else goes through the gate twice. A streamed
    response would free its slot once its headers arrive: evaluation flows are never streamed.
    The order (slot, then breaker) is the judge client's, so the two never wait on each other.
    """
    post = client.post

    async def post_in_a_slot(*args: Any, **kwargs: Any) -> Any:
        async with gate():
            if breaker is None:
                return await post(*args, **kwargs)
            probe = await breaker.acquire()
            try:
                answer = await post(*args, **kwargs)
            except asyncio.CancelledError:
                breaker.record_neutral(probe)
                raise
            except Exception as exc:
                # A 429 or a refused request says nothing of the endpoint's health; a timeout,
                # a 5xx or no connection does (the judge client's own classification).
                if classify(exc).health == "failure":
                    breaker.record_failure()
                else:
                    breaker.record_neutral(probe)
                raise
            breaker.record_success()
            return answer

    setattr(client, "post", post_in_a_slot)  # noqa: B010 - an instance attribute over the method
    return client


__all__ = ["AGGREGATION_REASON", "KIND", "FlowEvaluator", "build_flow_evaluator", "flow_executor", "gated", "judge_usage"]
