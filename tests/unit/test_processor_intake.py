"""The per-event path: routing, sampling, join, hand-over and offsets (judging and Kafka faked)."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime
from typing import Any

import pytest

from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.client import CallCost
from services.processor.evaluation.outcomes import token_shares
from services.processor.evaluation.setup import DeploymentEvaluation
from services.processor.intake import Intake
from services.processor.stats import ProcessorStats
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import encode
from shared.events.messages import InferenceRequest, InferenceResponse
from shared.sampling import is_sampled

TP = namedtuple("TP", "topic partition")
P0 = TP("inference", 0)


class FakeRunner:
    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def submit(self, job: Any) -> None:
        self.jobs.append(job)


class FakePublisher:
    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []

    async def dead_letter(self, **kwargs: Any) -> None:
        self.letters.append(kwargs)


def judging(rate: float = 1.0, budget: int | None = None) -> DeploymentEvaluation:
    # The intake reads the sampling rate and the budget; judging itself is not reached here.
    return DeploymentEvaluation(
        name="shop", sampling_rate=rate, budget=TokenBudget(budget), judge=None,  # type: ignore[arg-type]
        evaluators=(),
    )


def make_intake(rate: float = 1.0, budget: int | None = None) -> tuple[Intake, FakeRunner, FakePublisher]:
    runner, publisher = FakeRunner(), FakePublisher()
    intake = Intake(
        {"shop": judging(rate, budget)}, runner, publisher, ProcessorStats(),  # type: ignore[arg-type]
        request_ttl_seconds=60, inference_topic="inference",
    )
    return intake, runner, publisher


def pair(request_id: str, run_id: str = "") -> tuple[Any, Any]:
    meta = new_meta(request_id=request_id, deployment="shop", request_start_time=datetime.now(UTC), run_id=run_id)
    request = InferenceRequest(meta=meta, inputs=dict_to_struct({"q": "why?"}))
    response = InferenceResponse(meta=next_meta(meta), status=1, outputs=dict_to_struct({"a": "because"}))
    return encode(request), encode(response)


def feed(intake: Intake, offset: int, key: str, record: Any, tp: TP = P0) -> Any:
    return intake.handle(tp, offset, key.encode(), record.value, record.headers)


async def test_sampled_request_waits_for_its_response_then_is_handed_to_judging() -> None:
    intake, runner, _ = make_intake()
    request, response = pair("r1")
    assert feed(intake, 0, "r1", request) is None
    assert len(intake.pending) == 1 and runner.jobs == []
    assert intake.watermarks.get(P0).commit_point() == 0  # the pending request holds the commit
    feed(intake, 1, "r1", response)
    (job,) = runner.jobs
    assert job.request.meta.request_id == "r1" and [h.offset for h in job.holds] == [0, 1]
    assert intake.watermarks.get(P0).commit_point() == 0
    intake.release(job.holds)
    assert intake.watermarks.get(P0).commit_point() == 2


async def test_unsampled_events_finish_at_once_and_leave_no_state() -> None:
    intake, runner, _ = make_intake(rate=0.0)
    request, response = pair("r1")
    feed(intake, 0, "r1", request)
    feed(intake, 1, "r1", response)
    assert runner.jobs == [] and len(intake.pending) == 0
    assert intake.stats.unsampled == 2
    assert intake.watermarks.get(P0).commit_point() == 2


async def test_batch_run_requests_are_sampled_whatever_the_rate() -> None:
    intake, runner, _ = make_intake(rate=0.0)
    request, response = pair("r1", run_id="run-1")
    feed(intake, 0, "r1", request)
    feed(intake, 1, "r1", response)
    assert len(runner.jobs) == 1


async def test_the_decision_follows_the_shared_sampling_function() -> None:
    intake, runner, _ = make_intake(rate=0.3)
    ids = [f"id-{i}" for i in range(300)]
    for n, request_id in enumerate(ids):
        request, response = pair(request_id)
        feed(intake, 2 * n, request_id, request)
        feed(intake, 2 * n + 1, request_id, response)
    assert [job.request.meta.request_id for job in runner.jobs] == [i for i in ids if is_sampled(i, 0.3)]


async def test_redelivered_events_are_not_handled_twice() -> None:
    intake, runner, _ = make_intake()
    request, response = pair("r1")
    feed(intake, 0, "r1", request)
    feed(intake, 1, "r1", response)
    feed(intake, 0, "r1", request)  # a re-seek after a rebalance that kept the partition
    feed(intake, 1, "r1", response)
    assert len(runner.jobs) == 1 and intake.stats.redelivered == 2


async def test_an_undecodable_sampled_record_is_dead_lettered_and_holds_until_sent() -> None:
    intake, runner, publisher = make_intake()
    headers = [("pp-event-type", b"inference.request"), ("pp-schema-version", b"1"), ("pp-deployment", b"shop")]
    assert intake.handle(P0, 0, b"r1", b"\x0a\xff garbage", headers) is None
    assert intake.watermarks.get(P0).commit_point() == 0
    await intake.drain_dead_letters(1)
    (letter,) = publisher.letters
    assert letter["reason"] == "malformed-body" and letter["offset"] == 0
    assert intake.watermarks.get(P0).commit_point() == 1
    assert intake.stats.dead_letters == {"malformed-body": 1}


class BrokenRunner(FakeRunner):
    def submit(self, job: Any) -> None:
        raise RuntimeError("a bug in the hand-over")


async def test_a_record_the_intake_fails_on_is_dead_lettered_not_raised() -> None:
    # The consumer's loop calls handle directly (faust_app.py): an exception would stop the
    # fetcher and crash the worker on every restart at the same record.
    intake, _, publisher = make_intake()
    intake.runner = BrokenRunner()  # type: ignore[assignment]
    request, response = pair("r1")
    assert feed(intake, 0, "r1", request) is None
    assert feed(intake, 1, "r1", response) is None  # the response's hand-over raises
    await intake.drain_dead_letters(1)
    (letter,) = publisher.letters
    assert letter["reason"] == "processor-error" and letter["offset"] == 1
    assert "a bug in the hand-over" in letter["detail"]
    assert intake.stats.dead_letters == {"processor-error": 1}
    # Only the dead letter is released; the response still holds its own offset, so the
    # committed offset stays before it (as a job whose judging failed would keep it).
    assert intake.watermarks.get(P0).commit_point() == 0


async def test_other_event_types_are_ignored_without_decoding() -> None:
    intake, runner, publisher = make_intake()
    intake.handle(P0, 0, b"r1", b"not even protobuf", [("pp-event-type", b"token.chunk"), ("pp-deployment", b"shop")])
    assert intake.stats.ignored == 1 and publisher.letters == []


async def test_a_spent_budget_skips_the_request_and_releases_it() -> None:
    intake, runner, _ = make_intake(budget=100)
    intake.judging["shop"].budget.spend(100)
    request, response = pair("r1")
    feed(intake, 0, "r1", request)
    feed(intake, 1, "r1", response)
    assert runner.jobs == [] and intake.stats.budget_skipped == {"shop": 1}
    assert intake.watermarks.get(P0).commit_point() == 2


async def test_assignment_drops_moved_partitions_and_scales_the_budget() -> None:
    intake, _, _ = make_intake(budget=600)
    request, _ = pair("r1")
    feed(intake, 0, "r1", request, tp=TP("inference", 1))
    intake.on_assigned([TP("inference", 0), TP("inference", 2), TP("leader", 0)], partition_count=6)
    assert len(intake.pending) == 0  # partition 1 went to another worker, which re-reads it
    assert intake.judging["shop"].budget.limit() == pytest.approx(200)


def test_budget_counts_a_rolling_hour() -> None:
    now = [0.0]
    budget = TokenBudget(1000, clock=lambda: now[0])
    budget.spend(600)
    now[0] = 1800
    budget.spend(400)
    assert budget.exhausted()
    now[0] = 3601  # the first minute's spend has rolled out of the hour
    assert budget.spent() == 400 and not budget.exhausted()
    assert not TokenBudget(None).exhausted()


def test_combined_call_tokens_are_split_to_add_up_once() -> None:
    cost = CallCost(model="m", prompt_tokens=1001, completion_tokens=82)
    shares = token_shares(cost, 4)
    assert sum(p for p, _ in shares) == 1001 and sum(c for _, c in shares) == 82
    assert max(p for p, _ in shares) - min(p for p, _ in shares) <= 1
