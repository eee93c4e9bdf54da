"""The evaluation pipeline: judging joined requests off the stream's path, with bounded concurrency.

The stream hands each joined request over as a :class:`JudgeJob` and moves on; workers take jobs
from a bounded queue, run every evaluator of the deployment on the request (concurrently; judge
calls are capped at ``judge_concurrency`` in flight by JudgeCalls), publish one evaluation per
metric, wait for the broker's acknowledgement and only then release the job's offsets. There are
``WORKERS_PER_PLACE`` workers per place under the cap, so that while one waits for the broker
(the publisher gathers for up to ``publish_linger_ms``) another holds its place: with one worker
per place the cap was 87-91% used (docs/processor.md, "Session 9"). A slow judge fills the queue,
and a full queue pauses the stream (back-pressure, never dropped work). What an evaluator is and
returns: protocol.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faust.types import TP
from opentelemetry.context import Context

from services.processor.evaluation import outcomes
from services.processor.evaluation.judge.calls import JudgeCalls
from services.processor.evaluation.protocol import (
    Evaluator,
    Failed,
    NotApplicable,
    Outcome,
    RequestFields,
    StructFields,
)
from services.processor.evaluation.setup import DeploymentEvaluation
from services.processor.publisher import Publisher
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from services.processor.watermark import PartitionWatermark
from shared.events.messages import (
    Evaluation,
    EvaluationErrorType,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
)
from shared.retry import Backoff, Jitter
from shared.telemetry import extract_context

log = logging.getLogger(__name__)

# Workers per place under the judge cap: a worker waiting for the broker's acknowledgement leaves
# its place to another (a delivery task per job did the same at ~14% more CPU per streamed event).
# Eight, not two: every job also waits for the publisher's gathering (50 ms) and a sync code
# evaluator's job for its thread's tick (20 ms), judge call or not, so at the stream's own pace
# (~6,000 judged requests/s with an instant judge) some 400 jobs are between judge and broker;
# with two per place the stream waited for room in the queue 45-63% of the time (docs/processor.md,
# "Session 11"). An idle worker costs a task waiting on the queue, nothing per event.
WORKERS_PER_PLACE = 8

INTERNAL = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
_OK = InferenceStatus.INFERENCE_STATUS_OK


@dataclass(slots=True)
class Hold:
    """An offset a job keeps uncommitted until its outcomes are published."""

    tp: TP
    watermark: PartitionWatermark
    offset: int


@dataclass(slots=True)
class JudgeJob:
    judging: DeploymentEvaluation
    request: InferenceRequest
    response: InferenceResponse
    traceparent: str | None
    holds: list[Hold]


class JudgeRunner:
    def __init__(
        self,
        section: ProcessorSection,
        publisher: Publisher,
        stats: ProcessorStats,
        release: Callable[[list[Hold]], None],
        judge_calls: JudgeCalls,
    ) -> None:
        self._section = section
        self._publisher = publisher
        self._stats = stats
        self._release = release
        self.judge_calls = judge_calls
        self._queue: asyncio.Queue[JudgeJob] = asyncio.Queue(maxsize=section.judge_queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self.jobs_running = 0
        self.intake_waiting = 0  # stream waiting for room in the full queue (back-pressure)

    @property
    def calls_in_flight(self) -> int:
        return self.judge_calls.calls_in_flight

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"judge-worker-{i}")
                for i in range(WORKERS_PER_PLACE * self._section.judge_concurrency)
            ]

    def submit(self, job: JudgeJob) -> Awaitable[None] | None:
        """Queue ``job``; when the queue is full, return an awaitable that waits for room."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            return self._wait_for_room(job)
        return None

    async def _wait_for_room(self, job: JudgeJob) -> None:
        # While this waits the stream takes nothing in, by design: the stall detector reads
        # ``intake_waiting`` so that back-pressure is never reported as a stalled partition.
        self.intake_waiting += 1
        try:
            await self._queue.put(job)
        finally:
            self.intake_waiting -= 1

    async def drain(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every queued and running job; True if all finished."""
        try:
            await asyncio.wait_for(self._queue.join(), seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:  # a job stopped mid-publish keeps its offsets held
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self.jobs_running += 1
            try:
                await self.run(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker; the job's offsets stay held
                log.exception("judging request %s failed", job.response.meta.request_id)
            finally:
                self.jobs_running -= 1
                self._queue.task_done()

    async def run(self, job: JudgeJob) -> None:
        """Judge one request, publish its outcomes, then release its offsets."""
        events = await self.evaluate(job)
        await self._publish(events)
        for event in events:
            self._stats.outcomes[(job.judging.name, event.metric, _outcome_name(event))] += 1
        self._release(job.holds)

    async def evaluate(self, job: JudgeJob) -> list[Evaluation]:
        """One event per metric of every evaluator of ``job.judging``, never an exception (the
        re-judge agent judges through this too, with the one evaluator it re-judges)."""
        try:
            return await self._evaluate(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Still one outcome per metric: an internal error is visible and counted, a
            # missing outcome would not be.
            log.exception("evaluating request %s failed", job.response.meta.request_id)
            meta = job.response.meta
            return [
                outcomes.from_outcome(meta, Failed(metric, INTERNAL, "the processor failed to evaluate this request"), e)
                for e in job.judging.evaluators
                for metric in e.metrics
            ]

    async def publish(self, events: list[Evaluation]) -> None:
        """Publish ``events``, retrying while the broker is away; returns once acknowledged."""
        await self._publish(events)

    async def _publish(self, events: list[Evaluation]) -> None:
        backoff = Backoff(0.2, 10.0, Jitter.PROPORTIONAL)
        while True:
            try:
                await self._publisher.publish_evaluations(events)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: keep the offsets held and try again
                self._stats.publish_retries += 1
                wait = backoff.next()
                log.warning("cannot publish evaluations yet (%r); retrying in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    async def _evaluate(self, job: JudgeJob) -> list[Evaluation]:
        deployment, response = job.judging, job.response
        meta = response.meta
        evaluators = deployment.evaluators
        if response.status != _OK:
            status = InferenceStatus.Name(response.status).removeprefix("INFERENCE_STATUS_").lower()
            detail = f": {response.error_type}" if response.error_type else ""
            reason = f"the request did not complete ({status}{detail}), so there is no answer to judge"
            return [
                outcomes.from_outcome(meta, NotApplicable(metric, reason), evaluator)
                for evaluator in evaluators
                for metric in evaluator.metrics
            ]
        request = RequestFields(
            StructFields(job.request.inputs), StructFields(response.outputs), meta,
            _parent_context(job.traceparent or meta.traceparent),
        )
        if len(evaluators) == 1:  # the common case; gather would wrap it in a task
            results = [await _run_one(evaluators[0], request)]
        else:
            results = await _run_all(evaluators, request)
        return [
            outcomes.from_outcome(meta, outcome, evaluator)
            for evaluator, produced in zip(evaluators, results, strict=True)
            for outcome in produced
        ]


async def _run_all(evaluators: tuple[Evaluator, ...], request: RequestFields) -> list[list[Outcome]]:
    """Every evaluator at once, the first in this task and each other in a task of its own: what
    gather does, less its task for the first and its gathering future (per judged request). The
    loop's create_task, not ensure_future: the same task without ensure_future's checks (3.9 ->
    3.0 µs per task, docs/processor.md "Session 10")."""
    loop = asyncio.get_running_loop()
    others = [loop.create_task(_run_one(evaluator, request)) for evaluator in evaluators[1:]]
    try:
        results = [await _run_one(evaluators[0], request)]
        for task in others:
            results.append(await task)
    except BaseException:  # cancelled: the others stop too, as gather's would
        for task in others:
            task.cancel()
        raise
    return results


async def _run_one(evaluator: Evaluator, request: RequestFields) -> list[Outcome]:
    """Exactly one outcome per metric of ``evaluator``, whatever it does: an exception or a
    missing outcome is an INTERNAL error of that metric, never a missing event (the kinds turn
    their user code's exceptions into errors with more detail themselves)."""
    try:
        produced = list(await evaluator.evaluate(request))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("evaluator %r failed on request %s", evaluator.name, request.meta.request_id)
        message = "the processor failed to evaluate this request"
        return [Failed(metric, INTERNAL, message) for metric in evaluator.metrics]
    by_metric = {outcome.metric: outcome for outcome in produced}
    return [
        by_metric.get(metric) or Failed(metric, INTERNAL, f"evaluator {evaluator.name!r} gave no outcome")
        for metric in evaluator.metrics
    ]


def _outcome_name(event: Evaluation) -> str:
    kind = event.WhichOneof("outcome")
    if kind == "error":
        name = EvaluationErrorType.Name(event.error.type).removeprefix("EVALUATION_ERROR_TYPE_").lower()
        return f"error:{name}"
    return kind or "none"


def _parent_context(traceparent: str | None) -> Context:
    if not traceparent:
        return Context()
    # An empty base context: the judge span's parent is the request's trace, never whatever
    # happens to be current in the worker task.
    return extract_context([("traceparent", traceparent.encode("ascii", "replace"))], context=Context())


__all__ = ["WORKERS_PER_PLACE", "Hold", "JudgeJob", "JudgeRunner"]
