"""The five built-in metrics as evaluators: our rubrics, the deployment's column mapping, 1-5.

Without ``combined_call`` each built-in metric is an evaluator of its own (one judge call each).
With it, the deployment's built-in metrics form one :class:`BuiltinJudges` that asks for all
the applicable ones in a single call; each outcome still names its own metric as evaluator and
the version of the prompt actually sent (``<metric>-v1``, or ``<metric>-v1+combined-v1`` when
the call covered several), which is what ``judge.prompt_version`` always carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget, SpanResult
from services.processor.evaluation.judge.client import UNPARSEABLE, JudgeCallFailed, JudgeReply
from services.processor.evaluation.judge.verdict import (
    Verdict,
    parse_combined,
    parse_verdict,
)
from services.processor.evaluation.kinds.builtin.plan import JudgeCallPlan, plan_evaluation
from services.processor.evaluation.kinds.builtin.prompts import (
    combined_prompt_version,
    prompt_version,
)
from services.processor.evaluation.kinds.builtin.rubrics import RUBRICS
from services.processor.evaluation.outcomes import token_shares
from services.processor.evaluation.protocol import (
    Failed,
    JudgeUsage,
    NotApplicable,
    Outcome,
    RequestFields,
    Scored,
)
from shared.deployments import ColumnMapping, Scale
from shared.deployments.evaluators import BUILTIN_SCALE

KIND = "builtin"


class BuiltinJudges:
    """One or more built-in metrics of one deployment (several only with combined_call)."""

    kind = KIND

    def __init__(
        self,
        metrics: Sequence[str],
        column_mapping: ColumnMapping,
        target: JudgeTarget,
        calls: JudgeCalls,
        *,
        combined: bool = False,
        max_chars: int = 16_000,
    ) -> None:
        self.metrics = tuple(metrics)
        self._mapping = column_mapping
        self._target = target
        self._calls = calls
        self._combined = combined
        self._max_chars = max_chars

    @property
    def name(self) -> str:
        # A group has no name of its own: its outcomes name their metric (see the docstring).
        return self.metrics[0] if len(self.metrics) == 1 else KIND

    @property
    def version(self) -> str:
        return prompt_version(self.metrics[0]) if len(self.metrics) == 1 else ""

    def scale(self, metric: str) -> Scale:
        return BUILTIN_SCALE

    def identity(self, metric: str) -> tuple[str, str]:
        combined = self._combined and len(self.metrics) > 1
        return metric, combined_prompt_version(metric) if combined else prompt_version(metric)

    async def evaluate(self, request: RequestFields) -> Sequence[Outcome]:
        plan = plan_evaluation(
            self.metrics, self._mapping, request.inputs, request.outputs,
            combined=self._combined, max_chars=self._max_chars,
        )
        by_metric: dict[str, Outcome] = {
            na.metric: NotApplicable(na.metric, na.reason, na.metric, prompt_version(na.metric))
            for na in plan.not_applicable
        }
        if len(plan.calls) == 1:  # the common case; gather would wrap it in a task
            results = [await self._call(request, plan.calls[0])]
        else:
            results = await asyncio.gather(*(self._call(request, call) for call in plan.calls))
        for outcomes in results:
            for outcome in outcomes:
                by_metric[outcome.metric] = outcome
        return [by_metric[metric] for metric in self.metrics]

    async def _call(self, request: RequestFields, call: JudgeCallPlan) -> list[Outcome]:
        metrics = call.metrics
        parse: Callable[[str | None], Any]
        if call.combined:
            parse = lambda text: parse_combined(text, metrics, call.judged)  # noqa: E731
        else:
            parse = lambda text: parse_verdict(text, call.judged)  # noqa: E731
        versions = [call.prompt_versions[m] for m in metrics]
        try:
            reply: JudgeReply[Any] = await self._calls.call(
                self._target, request.meta, request.trace_parent, call.messages, parse,
                metrics=metrics, prompt_versions=versions,
                results=lambda parsed: _span_results(metrics, parsed, call.combined),
            )
        except JudgeCallFailed as failed:
            return [
                Failed(metric, failed.error_type, failed.message, JudgeUsage(failed.cost, version, share),
                       metric, version)
                for metric, version, share in zip(metrics, versions, _shares(failed.cost, metrics), strict=True)
            ]
        verdicts = reply.parsed if call.combined else {metrics[0]: reply.parsed}
        outcomes: list[Outcome] = []
        for metric, version, share in zip(metrics, versions, _shares(reply.cost, metrics), strict=True):
            verdict = verdicts[metric]
            usage = JudgeUsage(reply.cost, version, share)
            if isinstance(verdict, Verdict):
                outcomes.append(Scored(metric, float(verdict.score), verdict.reason, "", usage, metric, version))
            else:
                message = f"unparseable judge answer: {verdict}"
                outcomes.append(Failed(metric, UNPARSEABLE, message, usage, metric, version))
        return outcomes


def _span_results(metrics: Sequence[str], parsed: Any, combined: bool) -> list[SpanResult]:
    verdicts = parsed if combined else {metrics[0]: parsed}
    return [
        SpanResult(metric, float(v.score), RUBRICS[metric].label(v.score), v.reason)
        for metric, v in verdicts.items()
        if isinstance(v, Verdict)
    ]


def _shares(cost: Any, metrics: Sequence[str]) -> list[tuple[int, int] | None]:
    if len(metrics) == 1:
        return [None]
    return list(token_shares(cost, len(metrics)))


__all__ = ["KIND", "BuiltinJudges"]
