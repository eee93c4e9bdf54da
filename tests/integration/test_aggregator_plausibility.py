"""Events written straight to the topics with absurd numbers (issue 15, finding 2): each is
dead-lettered with its reason, never stored nor counted in a rollup, while its plausible twin is
stored; against real Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from shared.events.builders import new_event_id, new_meta, next_meta
from shared.events.codec import encode, event_key
from shared.events.messages import (
    Evaluation,
    Feedback,
    InferenceResponse,
    InferenceStatus,
    JudgeCall,
    LlmUsage,
)
from shared.settings import PlausibilitySettings
from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    Message,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    running_aggregator,
    wait_caught_up,
)
from tests.support.rollup_recompute import rollup_mismatches

MAX_LATENCY_MS = 60_000.0  # lowered from the default: the judgement is configurable


@pytest.fixture
async def agg(fresh_database: str, unique_name: str) -> AsyncIterator:
    made = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name)
    made = made.model_copy(update={"plausibility": PlausibilitySettings(max_latency_ms=MAX_LATENCY_MS)})
    topics = await create_topics(made)
    yield made
    await delete_topics(made, [getattr(topics, role) for role in CONSUMED])


def _message(role: str, event) -> Message:
    record = encode(event)
    return Message(role, event_key(event), record.value, record.headers)


def _meta(start: datetime):
    return new_meta(request_id=new_event_id(), deployment="demo", request_start_time=start, variant="a")


def _response(start: datetime, *, latency_ms: float = 250.0, prompt_tokens: int = 400) -> InferenceResponse:
    usage = LlmUsage(node="answer", model="gpt-4o", prompt_tokens=prompt_tokens, completion_tokens=100,
                     total_tokens=prompt_tokens + 100)
    return InferenceResponse(meta=next_meta(_meta(start)), status=InferenceStatus.INFERENCE_STATUS_OK,
                             latency_ms=latency_ms, usage=[usage])


def _evaluation(start: datetime, *, score: int = 4, judge_latency_ms: float = 300.0) -> Evaluation:
    event = Evaluation(meta=next_meta(_meta(start)), metric="relevance",
                       judge=JudgeCall(model="judge-1", prompt_version="v1", prompt_tokens=300,
                                       completion_tokens=20, latency_ms=judge_latency_ms))
    event.scored.score = score
    event.scored.reason = "because"
    return event


def _feedback(start: datetime, rating: int) -> Feedback:
    return Feedback(meta=next_meta(_meta(start)), rating=rating, comment="")


async def _fetch(dsn: str, query: str):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_absurd_numbers_are_dead_lettered_with_the_reason_and_never_counted(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    start = datetime.now(UTC) - timedelta(seconds=30)
    absurd = {  # what the detail must name -> the event
        "latency_ms is 100000000000.0": _message("inference", _response(start, latency_ms=1e11)),
        # Plausible by default (2 h), not under this installation's setting.
        "latency_ms is 90000.0, outside the plausible 0..60,000 ms": _message(
            "inference", _response(start, latency_ms=90_000)),
        "usage[0].prompt_tokens is 1000000000000": _message("inference", _response(start, prompt_tokens=10**12)),
        "rating is 2147483647": _message("feedback", _feedback(start, 2**31 - 1)),
        "scored.score is 7": _message("evaluations", _evaluation(start, score=7)),
        "judge.latency_ms is 100000000000.0": _message("evaluations", _evaluation(start, judge_latency_ms=1e11)),
    }
    twins = [  # the same shapes with plausible numbers
        _message("inference", _response(start, latency_ms=250.0, prompt_tokens=400)),
        _message("feedback", _feedback(start, 5)),
        _message("evaluations", _evaluation(start, score=4, judge_latency_ms=300.0)),
    ]
    await produce(settings, [*absurd.values(), *twins])
    async with running_aggregator(settings) as app:
        await wait_caught_up(settings)
        stats = ingestor_of(app).stats

    letters = await _fetch(dsn, "SELECT reason, detail, value FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in letters] == ["implausible-value"] * len(absurd)
    by_value = {r["value"]: r["detail"] for r in letters}
    for named, message in absurd.items():
        assert named in by_value[message.value], (named, by_value[message.value])
    assert "PROMPTPULSE_PLAUSIBILITY__MAX_LATENCY_MS" in by_value[absurd[
        "latency_ms is 90000.0, outside the plausible 0..60,000 ms"].value]
    assert stats.dead_letters == len(absurd)

    # Stored: the twins only.
    responses = await _fetch(dsn, "SELECT latency_ms, prompt_tokens FROM inference_responses")
    assert [tuple(r) for r in responses] == [(250.0, 400)]
    # Feedback is counted at query time from this table: only the twin is there to count.
    assert [r["rating"] for r in await _fetch(dsn, "SELECT rating FROM feedback")] == [5]
    evaluations = await _fetch(dsn, "SELECT score, judge_latency_ms FROM evaluations")
    assert [tuple(r) for r in evaluations] == [(4, 300.0)]
    # Counted: the twins only.
    operations = await _fetch(dsn, "SELECT sum(responses) AS n, sum(latency_sum_ms) AS ms FROM rollup_operations")
    assert tuple(operations[0]) == (1, 250.0)
    tokens = await _fetch(dsn, "SELECT sum(calls) AS calls, sum(prompt_tokens) AS prompt FROM rollup_tokens")
    assert tuple(tokens[0]) == (1, 400)
    quality = await _fetch(dsn, "SELECT sum(scored) AS n, sum(score_sum) AS s FROM rollup_quality")
    assert tuple(quality[0]) == (1, 4)
    judge = await _fetch(dsn, "SELECT sum(calls) AS n FROM rollup_judge_tokens")
    assert judge[0]["n"] == 1
    assert await rollup_mismatches(dsn) == {}
