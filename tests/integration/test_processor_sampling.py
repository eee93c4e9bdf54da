"""Sampling and join against the real broker, with llmsim as the judge."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from shared.events.messages import InferenceStatus
from shared.sampling import is_sampled
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    Producer,
    read_evaluations,
    request_event,
    response_event,
    stage,
    wait_for,
)

RATE = 0.1
REQUESTS = 2000


def _pairs(ids: list[str], deployment: str, **request_kwargs: str) -> list:
    events = []
    for request_id in ids:
        request = request_event(request_id, deployment, QA, **request_kwargs)
        events += [request, response_event(request, {"answer": ANSWER})]
    return events


async def test_sampling_rate_holds_over_2000_requests_and_is_the_same_every_time(tmp_path: Path) -> None:
    ids = [f"req-{i:05d}" for i in range(REQUESTS)]
    expected = {request_id for request_id in ids if is_sampled(request_id, RATE)}
    # Binomial(2000, 0.1): sd ~ 13.4; 4.5 sd keeps a false failure below one in 100,000 runs.
    spread = 4.5 * math.sqrt(REQUESTS * RATE * (1 - RATE))
    assert abs(len(expected) - REQUESTS * RATE) <= spread  # the function itself is unbiased here

    async with stage(tmp_path, {"shop": {"metrics": ["fluency"], "sampling_rate": RATE}}, partitions=4) as st:
        async with Producer(st.kafka) as producer:
            await producer.send(st.topics.inference, _pairs(ids, "shop"))
        async with st.processor() as first:
            found = await read_evaluations(st.kafka, st.topics, len(expected), settle=1.0)
            await wait_for(lambda: first.stats.events == 2 * REQUESTS, 30, "every event handled")
        judged = Counter(e.meta.request_id for e in found)
        assert set(judged) == expected
        assert set(judged.values()) == {1}  # one outcome per (request, metric)
        assert all(e.WhichOneof("outcome") == "scored" for e in found)
        assert first.stats.unsampled == 2 * (REQUESTS - len(expected))
        assert first.stats.judge_triggers == len(expected)
        assert first.stats.sampled_requests == len(expected)  # state kept only for sampled ones

        # A second, independent group over the same events reaches the same decisions.
        async with st.processor(group_id=f"{st.prefix}second") as second:
            found = await read_evaluations(st.kafka, st.topics, 2 * len(expected), settle=1.0)
            assert second.stats.judge_triggers == len(expected)
        judged = Counter(e.meta.request_id for e in found)
        assert set(judged) == expected and set(judged.values()) == {2}


async def test_batch_run_requests_are_judged_in_full(tmp_path: Path) -> None:
    batch_ids = [f"batch-{i}" for i in range(40)]
    live_ids = [f"live-{i}" for i in range(40)]
    assert sum(is_sampled(i, RATE) for i in batch_ids) < 20  # most would be skipped by the hash
    expected = set(batch_ids) | {i for i in live_ids if is_sampled(i, RATE)}
    async with stage(tmp_path, {"shop": {"metrics": ["fluency"], "sampling_rate": RATE}}) as st:
        async with Producer(st.kafka) as producer:
            await producer.send(st.topics.inference, _pairs(batch_ids, "shop", run_id="run-7"))
            await producer.send(st.topics.inference, _pairs(live_ids, "shop"))
        async with st.processor():
            found = await read_evaluations(st.kafka, st.topics, len(expected), settle=0.5)
    assert {e.meta.request_id for e in found} == expected
    assert {e.meta.run_id for e in found if e.meta.request_id.startswith("batch-")} == {"run-7"}


async def test_unsampled_and_foreign_events_are_skipped_without_state(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {"sampling_rate": 0.0}, "judged": {"sampling_rate": 1.0}}) as st:
        async with Producer(st.kafka) as producer:
            await producer.send(st.topics.inference, _pairs([f"s-{i}" for i in range(50)], "shop"))
            await producer.send(st.topics.inference, _pairs(["other-1"], "no-such-deployment"))
            await producer.send(st.topics.inference, _pairs(["j-1"], "judged"))
        async with st.processor() as service:
            found = await read_evaluations(st.kafka, st.topics, 1, settle=0.5)
            await wait_for(lambda: service.stats.events == 104, 20, "every event handled")
        assert [e.meta.request_id for e in found] == ["j-1"]
        assert service.stats.unsampled == 100
        assert service.stats.unjudged_deployment == 2
        assert len(service.intake.pending) == 0


async def test_response_is_the_trigger_and_a_missing_response_expires(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}) as st:
        async with st.processor(request_ttl_seconds=1.0) as service, Producer(st.kafka) as producer:
            waiting = request_event("waits-forever", "shop", QA)
            await producer.send(st.topics.inference, [waiting])
            await wait_for(lambda: len(service.intake.pending) == 1, 20, "the request to be stored")
            # No response: nothing is judged, and the request's offset holds the commit back.
            await wait_for(lambda: service.stats.expired_requests == 1, 20, "the request to expire")
            assert len(service.intake.pending) == 0
            assert service.stats.judge_triggers == 0
            # A response after expiry finds nothing to join and is counted, not judged.
            await producer.send(st.topics.inference, [response_event(waiting, {"answer": ANSWER})])
            await wait_for(lambda: service.stats.orphan_responses == 1, 20, "the late response")
            assert service.stats.outcome_total() == 0


async def test_a_failed_request_gets_not_applicable_outcomes(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {"metrics": ["relevance", "fluency"]}}) as st:
        async with st.processor(), Producer(st.kafka) as producer:
            request = request_event("failed-1", "shop", QA)
            failed = response_event(request, {}, status=InferenceStatus.INFERENCE_STATUS_ERROR, error_type="llm_timeout")
            await producer.send(st.topics.inference, [request, failed])
            found = await read_evaluations(st.kafka, st.topics, 2)
    assert sorted((e.metric, e.WhichOneof("outcome")) for e in found) == [
        ("fluency", "not_applicable"), ("relevance", "not_applicable"),
    ]
    assert "llm_timeout" in found[0].not_applicable.reason
