"""Prompty evaluators: a prompt flow ``.prompty`` file (examples/prompty/eval-*) judging each request.

``kind: prompty`` with ``prompty: <file>`` runs the file as the flow runtime deploys one (a flow
of one llm node, shared/flow/prompty/deployment.py) per judged request, its inputs bound from
the request through the columns (kinds/flow/binding.py). Where the model is: the file's
``model.configuration.connection`` when connections.yaml has it, else the deployment's judge
connection, which replaces the file's endpoint settings (``${env:AZURE_OPENAI_ENDPOINT}`` ...);
the model is the file's (``azure_deployment`` or ``model``). The call waits for a judge slot and
the connection's circuit breaker and counts as a judge call, as an evaluation flow's llm node does.

The answer is read on the evaluator's scale:

- a text answer (no ``outputs`` listed): the same unsteerable parser as rubrics
  (judge/verdict.py ``parse_scaled``: the last JSON object with a score, or a label on a labels
  scale, outside any copy of the judged texts; nothing read from prose);
- a JSON answer (``response_format: json_object``): with ``outputs`` listed, each field is a metric
  ``<evaluator>.<field>``, read as evaluation flow outputs are (kinds/flow/outputs.py); without,
  the answer object is read as a judge's verdict (``score``/``label`` and ``reason``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.processor.evaluation.context import BuildContext, EvaluatorUnavailable
from services.processor.evaluation.judge.client import CallCost
from services.processor.evaluation.judge.verdict import UnparseableVerdict, parse_scaled
from services.processor.evaluation.kinds.flow.evaluator import (
    DEFAULT_TIMEOUT_SECONDS,
    UNPARSEABLE,
    FlowEvaluator,
    _with_usage,
    flow_executor,
    judge_usage,
)
from services.processor.evaluation.kinds.flow.outputs import outcome_of
from services.processor.evaluation.protocol import Failed, Outcome, Scored
from shared.deployments import EvaluatorConfig
from shared.flow import FlowError
from shared.flow.prompty import load_prompty, load_prompty_flow

KIND = "prompty"
SINGLE_OUTPUT = "output"


class PromptyEvaluator(FlowEvaluator):
    kind = KIND

    def __init__(self, config: EvaluatorConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # metric -> the JSON answer's field it reads (None: the whole answer)
        self._fields: dict[str, str | None] = (
            {f"{config.name}.{field}": field for field in config.outputs} if config.outputs else {config.name: None}
        )
        self.metrics = tuple(self._fields)
        self._scales = {metric: config.scale_of(metric) for metric in self.metrics}

    def _outcomes(self, outputs: Mapping[str, Any], cost: CallCost | None,
                  inputs: Mapping[str, Any] | None = None) -> list[Outcome]:
        judged = [value for value in (inputs or {}).values() if isinstance(value, str) and value.strip()]
        found: list[Outcome] = []
        for metric, field in self._fields.items():
            answer = outputs.get(SINGLE_OUTPUT) if field is None else outputs.get(field)
            scale = self._scales[metric]
            if field is None and isinstance(answer, str):
                try:
                    verdict = parse_scaled(answer, scale, judged)
                except UnparseableVerdict as exc:
                    found.append(Failed(metric, UNPARSEABLE, f"the prompty's answer: {exc}"))
                    continue
                found.append(Scored(metric, verdict.value, verdict.reason, verdict.label))
                continue
            found.append(outcome_of(metric, answer, scale, what=f"the prompty's {field or 'answer'}",
                                    missing=f"the prompty gave no {field or 'answer'} for this request"))
        return _with_usage(found, cost, self.version)


def build_prompty_evaluator(config: EvaluatorConfig, context: BuildContext) -> PromptyEvaluator:
    assert config.prompty is not None  # the schema requires prompty for this kind
    evaluation = context.deployment.evaluation
    assert evaluation is not None
    try:
        named = load_prompty(config.prompty).model.config_value("connection")
    except FlowError as exc:
        raise EvaluatorUnavailable(f"the prompty does not load: {exc}") from None
    init = None
    if not (isinstance(named, str) and named in context.connections):
        # Written for `pf` with ${env:...} endpoint settings, or naming prompt flow's
        # open_ai_connection: the judge's connection serves it.
        init = {"model": {"configuration": {"connection": evaluation.judge.connection}}}
    try:
        flow = load_prompty_flow({"default": (config.prompty, init)}, name=config.name,
                                 connections=context.connections)
    except FlowError as exc:
        raise EvaluatorUnavailable(f"the prompty cannot run here: {exc}") from None
    known = set(flow.outputs) - {SINGLE_OUTPUT}
    missing = [field for field in config.outputs or () if field not in known]
    if missing:
        raise EvaluatorUnavailable(f"the prompty answers no {', '.join(missing)} "
                                   f"(its JSON outputs: {', '.join(sorted(known)) or 'none: a text answer'})")
    executor = flow_executor(flow, context, what="the prompty")
    return PromptyEvaluator(config, flow, executor, context.columns(config), on_usage=judge_usage(config, context),
                            timeout=float(config.timeout_seconds or DEFAULT_TIMEOUT_SECONDS))


__all__ = ["KIND", "PromptyEvaluator", "build_prompty_evaluator"]
