"""What the processor needs of each deployment: its sampling rate, metrics, column mapping, and a
judge client for its judge connection (one client and one circuit breaker per connection, shared
by every deployment that uses it, since an outage is the endpoint's, not the deployment's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.processor.budget import TokenBudget
from services.processor.judge.breaker import CircuitBreaker
from services.processor.judge.client import JudgeClient
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.deployments import ColumnMapping, Connection, Deployment, create_openai_client


@dataclass
class DeploymentJudging:
    name: str
    metrics: tuple[str, ...]
    sampling_rate: float
    combined_call: bool
    column_mapping: ColumnMapping
    judge_model: str
    connection: str
    judge: JudgeClient
    budget: TokenBudget


@dataclass
class JudgeConnections:
    clients: dict[str, JudgeClient] = field(default_factory=dict)
    openai_clients: list[Any] = field(default_factory=list)

    async def close(self) -> None:
        for client in self.openai_clients:
            close = getattr(client, "close", None)
            if close is not None:
                await close()


def build_judging(
    deployments: Mapping[str, Deployment],
    connections: Mapping[str, Connection],
    section: ProcessorSection,
    stats: ProcessorStats,
    *,
    make_client: Callable[[Connection], Any] | None = None,
) -> tuple[dict[str, DeploymentJudging], JudgeConnections, dict[str, str]]:
    """One DeploymentJudging per deployment that has an evaluation section, and the reason for
    each deployment whose judge cannot be set up (an unknown connection, an unset key variable).

    Those are not judged; the others are: one broken deployment never stops the processor.
    """
    make = make_client or (
        lambda connection: create_openai_client(
            connection, max_retries=0, timeout=section.judge_timeout_seconds
        )
    )
    pool = JudgeConnections()
    judging: dict[str, DeploymentJudging] = {}
    unavailable: dict[str, str] = {}
    broken_connections: dict[str, str] = {}
    for name, deployment in sorted(deployments.items()):
        evaluation = deployment.evaluation
        if evaluation is None:
            continue
        connection_name = evaluation.judge.connection
        if connection_name in broken_connections:
            unavailable[name] = broken_connections[connection_name]
            continue
        client = pool.clients.get(connection_name)
        if client is None:
            connection = connections.get(connection_name)
            if connection is None:
                unavailable[name] = f"judge connection {connection_name!r} is not in connections.yaml"
                continue
            try:
                openai_client = make(connection)
            except Exception as exc:  # ConnectionKeyMissingError names the variable, never a key
                broken_connections[connection_name] = f"judge connection {connection_name!r}: {exc}"
                unavailable[name] = broken_connections[connection_name]
                continue
            pool.openai_clients.append(openai_client)
            client = JudgeClient(
                openai_client,
                CircuitBreaker(section.breaker_failure_threshold, section.breaker_open_seconds),
                timeout_seconds=section.judge_timeout_seconds,
                max_attempts=section.judge_max_attempts,
                retry_base_seconds=section.retry_base_seconds,
                retry_max_seconds=section.retry_max_seconds,
                max_tokens=section.judge_max_tokens,
                response_format=section.response_format,
                on_attempt=_attempt_counter(stats, connection_name),
            )
            pool.clients[connection_name] = client
        judging[name] = DeploymentJudging(
            name=name,
            metrics=tuple(evaluation.metrics),
            sampling_rate=float(evaluation.sampling_rate),
            combined_call=evaluation.judge.combined_call,
            column_mapping=deployment.column_mapping,
            judge_model=evaluation.judge.model,
            connection=connection_name,
            judge=client,
            budget=TokenBudget(evaluation.judge.token_budget_per_hour),
        )
    return judging, pool, unavailable


def _attempt_counter(stats: ProcessorStats, connection: str) -> Callable[[str], None]:
    def count(result: str) -> None:
        stats.judge_attempts[(connection, result)] += 1

    return count
