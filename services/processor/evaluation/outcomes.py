"""Evaluation events: one per (request, metric), scored, not applicable or error.

Every event about a request copies the request's context (request id, start time, deployment,
variant, batch run, trace context) from the response it judges, with a fresh event id. A repeat
after a crash therefore carries the same (request id, metric) identity, which is what the
aggregator deduplicates on. Pass or fail is not decided here.

Each event names its evaluator and version. A scored outcome carries its value on the
evaluator's scale (``Scored.value``, and ``Scored.label`` for label scales) and, for readers that
know only the 1-5 ``Scored.score``, that value placed on 1..5 by ``Scale.compat_score`` (a 1-5
scale maps onto itself; another scale's low end is 1, its high end 5, linearly, rounded half up).
"""

from __future__ import annotations

from services.processor.evaluation.judge.client import CallCost
from services.processor.evaluation.protocol import (
    Evaluator,
    JudgeUsage,
    NotApplicable,
    Outcome,
    Scored,
)
from shared.events.builders import fill_next_meta
from shared.events.messages import Evaluation, EvaluationErrorType, EventMeta, JudgeCall

MAX_MESSAGE_CHARS = 500


def _judge(usage: JudgeUsage | None) -> JudgeCall | None:
    if usage is None:
        return None
    cost = usage.cost
    prompt, completion = (cost.prompt_tokens, cost.completion_tokens) if usage.share is None else usage.share
    return JudgeCall(
        model=cost.model,
        prompt_version=usage.prompt_version,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=cost.latency_ms,
    )


def _event(meta: EventMeta, metric: str, evaluator: str, version: str, usage: JudgeUsage | None) -> Evaluation:
    event = Evaluation(metric=metric, evaluator=evaluator, evaluator_version=version)
    fill_next_meta(event.meta, meta)  # in place: meta=next_meta(meta) copied the header twice
    judge = _judge(usage)
    if judge is not None:
        event.judge.CopyFrom(judge)
    return event


def from_outcome(meta: EventMeta, outcome: Outcome, evaluator: Evaluator) -> Evaluation:
    """The event for one outcome of ``evaluator`` about the request ``meta`` describes."""
    name, version = evaluator.identity(outcome.metric)
    name, version = outcome.evaluator or name, outcome.version or version
    if isinstance(outcome, Scored):
        event = _event(meta, outcome.metric, name, version, outcome.judge)
        event.scored.value = outcome.value
        event.scored.score = evaluator.scale(outcome.metric).compat_score(outcome.value)
        event.scored.reason = outcome.reason
        event.scored.label = outcome.label
        return event
    if isinstance(outcome, NotApplicable):
        event = _event(meta, outcome.metric, name, version, None)
        event.not_applicable.reason = outcome.reason
        return event
    return error(meta, outcome.metric, outcome.error_type, outcome.message, outcome.judge, name, version)


def error(
    meta: EventMeta, metric: str, error_type: EvaluationErrorType, message: str,
    usage: JudgeUsage | None = None, evaluator: str = "", version: str = "",
) -> Evaluation:
    event = _event(meta, metric, evaluator, version, usage)
    event.error.type = error_type
    event.error.message = message[:MAX_MESSAGE_CHARS]
    return event


def token_shares(cost: CallCost, count: int) -> list[tuple[int, int]]:
    """A combined call's tokens split over its ``count`` metrics so that they add up to the
    call's tokens exactly: summing judge tokens over evaluations counts the call once."""
    def split(total: int) -> list[int]:
        base, rest = divmod(total, count)
        return [base + (1 if i < rest else 0) for i in range(count)]

    return list(zip(split(cost.prompt_tokens), split(cost.completion_tokens), strict=True))


__all__ = ["error", "from_outcome", "token_shares"]
