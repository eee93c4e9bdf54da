"""What an evaluator kind's factory gets to build an evaluator: :class:`BuildContext`.

A factory is ``(EvaluatorConfig, BuildContext) -> Evaluator`` (registered in ``kinds.KINDS``);
it raises :class:`EvaluatorUnavailable` with a reason a user can act on when the evaluator
cannot run (the reason becomes the CONFIGURATION error of its every outcome). Whatever it opens
(module namespaces, pools) it registers with ``resources.closers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from services.processor.evaluation.code_threads import CodeThreads
from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget
from services.processor.evaluation.judge.client import JudgeClient
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.deployments import Connection, Deployment, EvaluatorConfig
from shared.upstream import upstream_session


class EvaluatorUnavailable(Exception):
    """This evaluator cannot run here; the message says why (no secrets in it)."""


@dataclass
class EvaluationResources:
    """What evaluators hold open: judge clients per connection, the code evaluators' thread pool
    (made when the first code evaluator is built, so deployments without one never pay for it),
    and whatever else the kinds opened; closed when the processor stops."""

    clients: dict[str, JudgeClient] = field(default_factory=dict)
    llm_clients: list[Any] = field(default_factory=list)  # judges' openai clients, evaluation flows' endpoints
    # The pool evaluation flows' llm nodes share (shared/flow/llm_http.py), opened on first use.
    llm_session: aiohttp.ClientSession | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)
    code_pool: ThreadPoolExecutor | None = None
    code_calls: CodeThreads | None = None

    def shared_llm_session(self) -> aiohttp.ClientSession:
        if self.llm_session is None:
            self.llm_session = upstream_session()
        return self.llm_session

    def code_threads(self, size: int) -> CodeThreads:
        if self.code_calls is None:
            self.code_pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="code-evaluator")
            self.code_calls = CodeThreads(self.code_pool, size)
        return self.code_calls

    async def close(self) -> None:
        for client in self.llm_clients:
            close = getattr(client, "close", None)
            if close is not None:
                await close()
        for closer in reversed(self.closers):
            result = closer()
            if hasattr(result, "__await__"):
                await result
        self.closers.clear()
        if self.llm_session is not None:  # after the endpoints that call through it
            await self.llm_session.close()
            self.llm_session = None
        if self.code_pool is not None:
            # A hung code evaluator's thread cannot be stopped: do not wait for it.
            self.code_pool.shutdown(wait=False, cancel_futures=True)
            self.code_pool = None
            self.code_calls = None


@dataclass
class BuildContext:
    deployment: Deployment
    section: ProcessorSection
    stats: ProcessorStats
    judge_calls: JudgeCalls
    budget: TokenBudget  # the deployment's judge token budget, shared by all its judges
    judge_client: Callable[[str], JudgeClient]  # by connection name; raises EvaluatorUnavailable
    resources: EvaluationResources
    # connections.yaml by name: an evaluation flow's llm and Python nodes name their connections.
    connections: Mapping[str, Connection] = field(default_factory=dict)

    def columns(self, config: EvaluatorConfig) -> dict[str, str]:
        """Evaluator input -> ``inputs.x`` / ``outputs.y`` (Deployment.evaluator_columns)."""
        return self.deployment.evaluator_columns(config)

    def judge_target(self, config: EvaluatorConfig) -> JudgeTarget:
        """The evaluator's judge: its own connection and model, each defaulting to the
        deployment's evaluation.judge."""
        evaluation = self.deployment.evaluation
        assert evaluation is not None
        connection = (config.judge.connection if config.judge else None) or evaluation.judge.connection
        model = (config.judge.model if config.judge else None) or evaluation.judge.model
        return JudgeTarget(self.deployment.name, connection, model, self.judge_client(connection), self.budget)


__all__ = ["BuildContext", "EvaluationResources", "EvaluatorUnavailable"]
