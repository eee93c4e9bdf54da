"""From a joined request to its evaluation events: one per metric, combined calls counted once.

The judge is a scripted stand-in for the openai client (llmsim has no combined-call mode yet), the
publisher an in-memory list; everything between them is the real code.
"""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget
from services.processor.evaluation.judge.client import JudgeClient
from services.processor.evaluation.kinds.builtin.evaluator import BuiltinJudges
from services.processor.evaluation.pipeline import WORKERS_PER_PLACE, Hold, JudgeJob, JudgeRunner
from services.processor.evaluation.setup import DeploymentEvaluation
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from services.processor.watermark import PartitionWatermark
from shared.deployments import ColumnMapping
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import encode
from shared.events.messages import InferenceRequest, InferenceResponse

TP = namedtuple("TP", "topic partition")
METRICS = ("groundedness", "relevance", "fluency")


class Judge:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kwargs: Any) -> Any:
        self.requests.append(kwargs)
        return SimpleNamespace(
            model="judge-x",
            choices=[SimpleNamespace(message=SimpleNamespace(content=self.replies.pop(0)))],
            usage=SimpleNamespace(prompt_tokens=1001, completion_tokens=95),
        )


class Publisher:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish_evaluations(self, events: list[Any]) -> None:
        for event in events:
            encode(event)  # valid on the wire
        self.events.extend(events)


def setup(replies: list[str], combined: bool, inputs: dict[str, Any]) -> tuple[JudgeRunner, JudgeJob, Judge, Publisher, ProcessorStats, list]:
    judge = Judge(replies)
    client = JudgeClient(
        judge, CircuitBreaker(5, 1.0), timeout_seconds=5, max_attempts=1, retry_base_seconds=0,
        retry_max_seconds=0, max_tokens=400,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stats = ProcessorStats()
    calls = JudgeCalls(ProcessorSection(), stats, provider.get_tracer("t"))
    budget = TokenBudget(None)
    target = JudgeTarget("shop", "c", "judge-x", client, budget)
    mapping = ColumnMapping(question="inputs.q", context="inputs.ctx", answer="outputs.a")
    groups = [METRICS] if combined else [(m,) for m in METRICS]
    judging = DeploymentEvaluation(
        name="shop", sampling_rate=1.0, budget=budget, judge=client,
        evaluators=tuple(BuiltinJudges(g, mapping, target, calls, combined=combined) for g in groups),
    )
    meta = new_meta(
        request_id="r1", deployment="shop", request_start_time=datetime.now(UTC),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    request = InferenceRequest(meta=meta, inputs=dict_to_struct(inputs))
    response = InferenceResponse(meta=next_meta(meta), status=1, outputs=dict_to_struct({"a": "Thirty days."}))
    mark = PartitionWatermark()
    mark.see(0)
    mark.see(1)
    mark.hold(0)
    mark.hold(1)
    job = JudgeJob(judging, request, response, None, [Hold(TP("t", 0), mark, 0), Hold(TP("t", 0), mark, 1)])
    publisher, released = Publisher(), []

    def release(holds: list[Hold]) -> None:
        released.extend(holds)
        for hold in holds:
            hold.watermark.release(hold.offset)

    runner = JudgeRunner(ProcessorSection(), publisher, stats, release, calls)
    runner.exporter = exporter  # type: ignore[attr-defined]
    return runner, job, judge, publisher, stats, released


async def test_a_combined_call_scores_every_metric_and_counts_its_tokens_once() -> None:
    reply = json.dumps({m: {"score": s, "reason": f"{m} ok"} for m, s in zip(METRICS, (5, 4, 3), strict=True)})
    inputs = {"q": "How long for a refund?", "ctx": "Refunds within thirty days."}
    runner, job, judge, publisher, stats, released = setup([reply], combined=True, inputs=inputs)
    await runner.run(job)
    assert len(judge.requests) == 1  # one call for three metrics
    assert [(e.metric, e.scored.score) for e in publisher.events] == [("groundedness", 5), ("relevance", 4), ("fluency", 3)]
    assert sum(e.judge.prompt_tokens for e in publisher.events) == 1001
    assert sum(e.judge.completion_tokens for e in publisher.events) == 95
    assert {e.judge.prompt_version for e in publisher.events} == {
        "groundedness-v1+combined-v1", "relevance-v1+combined-v1", "fluency-v1+combined-v1",
    }
    assert stats.judge_prompt_tokens["shop"] == 1001  # the budget and metrics count it once too
    assert job.judging.budget.spent() == 1096
    assert job.holds[0].watermark.commit_point() == 2 and len(released) == 2
    (span,) = runner.exporter.get_finished_spans()
    assert span.name == "chat judge-x"
    assert format(span.context.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert [e.attributes["gen_ai.evaluation.name"] for e in span.events] == list(METRICS)


async def test_separate_calls_each_carry_their_own_tokens() -> None:
    replies = ['{"score": 5, "reason": "a"}', '{"score": 4, "reason": "b"}', '{"score": 3, "reason": "c"}']
    inputs = {"q": "How long for a refund?", "ctx": "Refunds within thirty days."}
    runner, job, judge, publisher, stats, _ = setup(replies, combined=False, inputs=inputs)
    await runner.run(job)
    assert len(judge.requests) == 3
    assert [e.judge.prompt_tokens for e in publisher.events] == [1001, 1001, 1001]
    assert [e.judge.prompt_version for e in publisher.events] == ["groundedness-v1", "relevance-v1", "fluency-v1"]


async def test_combined_call_leaves_out_metrics_that_do_not_apply() -> None:
    reply = json.dumps({"relevance": {"score": 4, "reason": "ok"}, "fluency": {"score": 5, "reason": "ok"}})
    runner, job, judge, publisher, _, _ = setup([reply], combined=True, inputs={"q": "How long?"})
    await runner.run(job)
    outcomes = {e.metric: e.WhichOneof("outcome") for e in publisher.events}
    assert outcomes == {"groundedness": "not_applicable", "relevance": "scored", "fluency": "scored"}
    asked = judge.requests[0]["messages"][-1]["content"]
    assert "<metrics>relevance, fluency</metrics>" in asked and "<context>" not in asked


async def test_a_combined_reply_missing_a_metric_gives_that_metric_an_error() -> None:
    reply = json.dumps({"groundedness": {"score": 5}, "relevance": {"score": 4}})
    inputs = {"q": "How long for a refund?", "ctx": "Refunds within thirty days."}
    runner, job, _, publisher, _, _ = setup([reply], combined=True, inputs=inputs)
    await runner.run(job)
    by_metric = {e.metric: e for e in publisher.events}
    assert by_metric["fluency"].WhichOneof("outcome") == "error"
    assert "fluency" in by_metric["fluency"].error.message
    assert by_metric["relevance"].scored.score == 4


class HeldPublisher(Publisher):
    """Acknowledges a publish only when the test says so (a broker taking its time)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[asyncio.Future[None]] = []

    async def publish_evaluations(self, events: list[Any]) -> None:
        acknowledged = asyncio.get_running_loop().create_future()
        self.waiting.append(acknowledged)
        await acknowledged
        await super().publish_evaluations(events)


async def test_a_job_is_judged_while_another_waits_for_the_broker_at_a_cap_of_one() -> None:
    workers = WORKERS_PER_PLACE  # at a cap of one
    assert workers >= 2  # with one, no job is judged while another waits for the broker
    jobs = workers + 1
    reply = json.dumps({m: {"score": 4, "reason": "ok"} for m in METRICS})
    inputs = {"q": "How long for a refund?", "ctx": "Refunds within thirty days."}
    runner, job, judge, _, stats, released = setup([reply] * jobs, combined=True, inputs=inputs)
    publisher = HeldPublisher()
    # One place under the cap: the next job is judged while the first waits for the broker only
    # if a worker waiting for the broker does not hold the cap's only place.
    runner = JudgeRunner(ProcessorSection(judge_concurrency=1), publisher, stats, released.extend, runner.judge_calls)
    runner.start()
    try:
        for _ in range(jobs):
            runner.submit(job)
        for _ in range(200):
            if len(judge.requests) == workers:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        # Every worker's job judged, all waiting for the broker; the last job waits for a worker.
        assert len(judge.requests) == workers and len(publisher.waiting) == workers
        assert released == [] and runner.jobs_running == workers and runner.queued == 1
        assert runner.calls_in_flight == 0  # waiting for the broker holds no place under the cap
        publisher.waiting[0].set_result(None)
        for _ in range(200):
            if len(publisher.waiting) == jobs:
                break
            await asyncio.sleep(0.005)
        assert len(released) == 2 and len(judge.requests) == jobs  # the first job's holds, once acknowledged
        for waiting in publisher.waiting[1:]:
            waiting.set_result(None)
        assert await runner.drain(1.0)
        assert len(released) == 2 * jobs and runner.jobs_running == 0
        assert len(publisher.events) == jobs * len(METRICS)
    finally:
        await runner.stop()
