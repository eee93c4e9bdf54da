"""What the processor needs of each deployment: its sampling rate, token budget and evaluators.

One judge client and one circuit breaker per judge connection, shared by every deployment and
evaluator that uses it (an outage is the endpoint's, not the deployment's). Built-in metrics
become :class:`BuiltinJudges`; every other evaluator is made by its kind's factory in
``kinds.KINDS``. An evaluator that cannot be set up (its code does not import, its rubric's
connection is unknown) becomes an UnavailableEvaluator: its metrics get CONFIGURATION errors,
the deployment's other evaluators run. A deployment whose own judge connection cannot be set up
is not judged at all (reported in ``unavailable``), as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.processor.evaluation.context import (
    BuildContext,
    EvaluationResources,
    EvaluatorUnavailable,
)
from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget
from services.processor.evaluation.judge.client import JudgeClient
from services.processor.evaluation.kinds import KINDS
from services.processor.evaluation.kinds.builtin.evaluator import BuiltinJudges
from services.processor.evaluation.protocol import Evaluator, UnavailableEvaluator
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.deployments import Connection, Deployment, create_openai_client
from shared.sampling import sampler

log = logging.getLogger(__name__)


@dataclass
class DeploymentEvaluation:
    name: str
    sampling_rate: float
    budget: TokenBudget
    judge: JudgeClient  # the deployment's evaluation.judge (its breaker state shows in /health)
    evaluators: tuple[Evaluator, ...]
    # is_sampled at sampling_rate, for the request id as its key bytes (the per-event check).
    sampled: Callable[[bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sampled = sampler(self.sampling_rate)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(metric for evaluator in self.evaluators for metric in evaluator.metrics)


class _Clients:
    """Judge clients by connection name, made on first use; remembers connections that fail."""

    def __init__(
        self, connections: Mapping[str, Connection], section: ProcessorSection, stats: ProcessorStats,
        make: Callable[[Connection], Any], resources: EvaluationResources,
    ) -> None:
        self._connections, self._section, self._stats = connections, section, stats
        self._make, self._resources = make, resources
        self._broken: dict[str, str] = {}

    def get(self, name: str) -> JudgeClient:
        """The client of connection ``name``; raises EvaluatorUnavailable saying why not."""
        if name in self._broken:
            raise EvaluatorUnavailable(self._broken[name])
        client = self._resources.clients.get(name)
        if client is not None:
            return client
        connection = self._connections.get(name)
        if connection is None:
            raise EvaluatorUnavailable(f"judge connection {name!r} is not in connections.yaml")
        try:
            openai_client = self._make(connection)
        except Exception as exc:  # ConnectionKeyMissingError names the variable, never a key
            self._broken[name] = f"judge connection {name!r}: {exc}"
            raise EvaluatorUnavailable(self._broken[name]) from None
        self._resources.llm_clients.append(openai_client)
        section = self._section
        client = JudgeClient(
            openai_client,
            CircuitBreaker(section.breaker_failure_threshold, section.breaker_open_seconds),
            timeout_seconds=section.judge_timeout_seconds,
            max_attempts=section.judge_max_attempts,
            retry_base_seconds=section.retry_base_seconds,
            retry_max_seconds=section.retry_max_seconds,
            max_tokens=section.judge_max_tokens,
            response_format=section.response_format,
            on_attempt=_attempt_counter(self._stats, name),
        )
        self._resources.clients[name] = client
        return client


def build_judging(
    deployments: Mapping[str, Deployment],
    connections: Mapping[str, Connection],
    section: ProcessorSection,
    stats: ProcessorStats,
    *,
    make_client: Callable[[Connection], Any] | None = None,
    judge_calls: JudgeCalls | None = None,
) -> tuple[dict[str, DeploymentEvaluation], EvaluationResources, dict[str, str]]:
    """One DeploymentEvaluation per deployment that has an evaluation section, and the reason for
    each deployment whose judge cannot be set up (an unknown connection, an unset key variable).

    Those are not judged; the others are: one broken deployment never stops the processor.
    """
    make = make_client or (
        lambda connection: create_openai_client(
            connection, max_retries=0, timeout=section.judge_timeout_seconds
        )
    )
    calls = judge_calls or JudgeCalls(section, stats)
    resources = EvaluationResources()
    clients = _Clients(connections, section, stats, make, resources)
    judging: dict[str, DeploymentEvaluation] = {}
    unavailable: dict[str, str] = {}
    for name, deployment in sorted(deployments.items()):
        evaluation = deployment.evaluation
        if evaluation is None:
            continue
        try:
            client = clients.get(evaluation.judge.connection)
        except EvaluatorUnavailable as exc:
            unavailable[name] = str(exc)
            continue
        budget = TokenBudget(evaluation.judge.token_budget_per_hour)
        context = BuildContext(
            deployment=deployment, section=section, stats=stats, judge_calls=calls, budget=budget,
            judge_client=clients.get, resources=resources, connections=connections,
        )
        judging[name] = DeploymentEvaluation(
            name=name,
            sampling_rate=float(evaluation.sampling_rate),
            budget=budget,
            judge=client,
            evaluators=_evaluators(deployment, context, JudgeTarget(
                name, evaluation.judge.connection, evaluation.judge.model, client, budget
            )),
        )
    return judging, resources, unavailable


def _evaluators(deployment: Deployment, context: BuildContext, target: JudgeTarget) -> tuple[Evaluator, ...]:
    evaluation = deployment.evaluation
    assert evaluation is not None
    section = context.section
    configs = evaluation.all_evaluators()
    builtins = [c.name for c in configs if c.kind == "builtin"]
    made: list[Evaluator] = []
    combined = evaluation.judge.combined_call
    if builtins:
        groups = [builtins] if combined else [[metric] for metric in builtins]
        made += [
            BuiltinJudges(group, deployment.column_mapping, target, context.judge_calls,
                          combined=combined, max_chars=section.judged_text_max_chars)
            for group in groups
        ]
    for config in configs:
        if config.kind == "builtin":
            continue
        factory = KINDS.get(config.kind)
        try:
            if factory is None:
                raise EvaluatorUnavailable(f"evaluator kind {config.kind} is not available in this processor")
            made.append(factory(config, context))
        except EvaluatorUnavailable as exc:
            log.error("deployment %r: evaluator %r cannot run: %s; its metrics get configuration errors",
                      deployment.name, config.name, exc)
            made.append(UnavailableEvaluator(
                config.name, config.version, config.kind, config.metrics(), config.effective_scale, str(exc)
            ))
    return tuple(made)


def _attempt_counter(stats: ProcessorStats, connection: str) -> Callable[[str], None]:
    def count(result: str) -> None:
        stats.judge_attempts[(connection, result)] += 1

    return count


__all__ = ["DeploymentEvaluation", "EvaluationResources", "build_judging"]
