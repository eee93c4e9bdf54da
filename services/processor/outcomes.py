"""Evaluation events: one per (request, metric), scored, not applicable or error.

Every event about a request copies the request's context (request id, start time, deployment,
variant, batch run, trace context) from the response it judges, with a fresh event id. A repeat
after a crash therefore carries the same (request id, metric) identity, which is what the
aggregator deduplicates on. Pass or fail is not decided here.
"""

from __future__ import annotations

from services.processor.judge.client import CallCost
from shared.events.builders import next_meta
from shared.events.messages import Evaluation, EvaluationErrorType, EventMeta, JudgeCall

MAX_MESSAGE_CHARS = 500


def _judge(cost: CallCost | None, prompt_version: str, share: tuple[int, int] | None = None) -> JudgeCall | None:
    if cost is None:
        return None
    prompt, completion = (cost.prompt_tokens, cost.completion_tokens) if share is None else share
    return JudgeCall(
        model=cost.model,
        prompt_version=prompt_version,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_ms=cost.latency_ms,
    )


def _event(meta: EventMeta, metric: str, judge: JudgeCall | None) -> Evaluation:
    event = Evaluation(meta=next_meta(meta), metric=metric)
    if judge is not None:
        event.judge.CopyFrom(judge)
    return event


def scored(
    meta: EventMeta, metric: str, score: int, reason: str, cost: CallCost, prompt_version: str,
    share: tuple[int, int] | None = None,
) -> Evaluation:
    event = _event(meta, metric, _judge(cost, prompt_version, share))
    event.scored.score = score
    event.scored.reason = reason
    return event


def not_applicable(meta: EventMeta, metric: str, reason: str) -> Evaluation:
    event = _event(meta, metric, None)
    event.not_applicable.reason = reason
    return event


def error(
    meta: EventMeta, metric: str, error_type: EvaluationErrorType, message: str,
    cost: CallCost | None = None, prompt_version: str = "", share: tuple[int, int] | None = None,
) -> Evaluation:
    event = _event(meta, metric, _judge(cost, prompt_version, share))
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
