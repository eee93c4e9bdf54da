"""Judging joined requests off the stream's path, with bounded concurrency.

The stream hands each joined request over as a :class:`JudgeJob` and moves on; ``judge_concurrency``
workers take jobs from a bounded queue, make the judge calls (at most ``judge_concurrency`` calls
in flight), publish one evaluation per metric, wait for the broker's acknowledgement and only
then release the job's offsets. A slow judge fills the queue, and a full queue pauses the stream
(back-pressure, never dropped work).

Each judge call is a ``chat {model}`` span in the judged request's own trace (its parent is the
trace context the gateway put on the response event), carrying the GenAI usage attributes and a
``gen_ai.evaluation.result`` event per metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TP
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.processor import outcomes
from services.processor.evaluators.plan import JudgeCallPlan, StructFields, plan_evaluation
from services.processor.evaluators.rubrics import RUBRICS
from services.processor.evaluators.verdict import (
    Verdict,
    parse_combined,
    parse_verdict,
)
from services.processor.judge.client import UNPARSEABLE, CallCost, JudgeCallFailed
from services.processor.judges import DeploymentJudging
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
    judging: DeploymentJudging
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
        tracer: Tracer | None = None,
    ) -> None:
        self._section = section
        self._publisher = publisher
        self._stats = stats
        self._release = release
        self._tracer = tracer or trace.get_tracer("promptpulse.processor")
        self._queue: asyncio.Queue[JudgeJob] = asyncio.Queue(maxsize=section.judge_queue_size)
        self._slots = asyncio.Semaphore(section.judge_concurrency)
        self._workers: list[asyncio.Task[None]] = []
        self.calls_in_flight = 0
        self.jobs_running = 0
        self.intake_waiting = 0  # stream waiting for room in the full queue (back-pressure)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"judge-worker-{i}")
                for i in range(self._section.judge_concurrency)
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
        for worker in self._workers:
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
        try:
            events = await self._evaluate(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Still one outcome per metric: an internal error is visible and counted, a
            # missing outcome would not be.
            log.exception("evaluating request %s failed", job.response.meta.request_id)
            meta = job.response.meta
            events = [
                outcomes.error(meta, metric, INTERNAL, "the processor failed to evaluate this request")
                for metric in job.judging.metrics
            ]
        await self._publish(events)
        for event in events:
            self._stats.outcomes[(job.judging.name, event.metric, _outcome_name(event))] += 1
        self._release(job.holds)

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
        judging, response = job.judging, job.response
        meta = response.meta
        if response.status != _OK:
            status = InferenceStatus.Name(response.status).removeprefix("INFERENCE_STATUS_").lower()
            detail = f": {response.error_type}" if response.error_type else ""
            reason = f"the request did not complete ({status}{detail}), so there is no answer to judge"
            return [outcomes.not_applicable(meta, metric, reason) for metric in judging.metrics]
        plan = plan_evaluation(
            judging.metrics,
            judging.column_mapping,
            StructFields(job.request.inputs),
            StructFields(response.outputs),
            combined=judging.combined_call,
            max_chars=self._section.judged_text_max_chars,
        )
        by_metric: dict[str, Evaluation] = {
            na.metric: outcomes.not_applicable(meta, na.metric, na.reason) for na in plan.not_applicable
        }
        parent = _parent_context(job.traceparent or meta.traceparent)
        if len(plan.calls) == 1:  # the common case; gather would wrap it in a task
            results = [await self._call(job, plan.calls[0], parent)]
        else:
            results = await asyncio.gather(*(self._call(job, call, parent) for call in plan.calls))
        for events in results:
            for event in events:
                by_metric[event.metric] = event
        return [by_metric[metric] for metric in judging.metrics]

    async def _call(self, job: JudgeJob, call: JudgeCallPlan, parent: Context) -> list[Evaluation]:
        judging, meta = job.judging, job.response.meta
        metrics = call.metrics
        if call.combined:
            parse: Callable[[str | None], Any] = lambda text: parse_combined(text, metrics, call.judged)  # noqa: E731
        else:
            parse = lambda text: parse_verdict(text, call.judged)  # noqa: E731
        async with self._slots:
            self.calls_in_flight += 1
            try:
                with self._tracer.start_as_current_span(
                    f"chat {judging.judge_model}",
                    context=parent,
                    kind=SpanKind.CLIENT,
                    attributes=_span_attributes(judging, job, call, self._section),
                ) as span:
                    try:
                        reply = await judging.judge.call(judging.judge_model, call.messages, parse)
                    except JudgeCallFailed as failed:
                        _record_usage(span, failed.cost)
                        span.set_attribute("error.type", failed.error_name)
                        span.set_status(Status(StatusCode.ERROR, failed.message))
                        self._count_call(judging, failed.cost, ok=False)
                        shares = _shares(failed.cost, metrics)
                        return [
                            outcomes.error(
                                meta, metric, failed.error_type, failed.message, failed.cost,
                                call.prompt_versions[metric], share,
                            )
                            for metric, share in zip(metrics, shares, strict=True)
                        ]
                    _record_usage(span, reply.cost)
                    self._count_call(judging, reply.cost, ok=True)
                    verdicts = reply.parsed if call.combined else {metrics[0]: reply.parsed}
                    shares = _shares(reply.cost, metrics)
                    events = []
                    for metric, share in zip(metrics, shares, strict=True):
                        verdict = verdicts[metric]
                        version = call.prompt_versions[metric]
                        if isinstance(verdict, Verdict):
                            events.append(
                                outcomes.scored(meta, metric, verdict.score, verdict.reason, reply.cost, version, share)
                            )
                            _evaluation_result(span, metric, verdict)
                        else:
                            message = f"unparseable judge answer: {verdict}"
                            events.append(
                                outcomes.error(meta, metric, UNPARSEABLE, message, reply.cost, version, share)
                            )
                    return events
            finally:
                self.calls_in_flight -= 1

    def _count_call(self, judging: DeploymentJudging, cost: CallCost, *, ok: bool) -> None:
        stats = self._stats
        stats.judge_calls[(judging.name, "ok" if ok else "error")] += 1
        stats.judge_prompt_tokens[judging.name] += cost.prompt_tokens
        stats.judge_completion_tokens[judging.name] += cost.completion_tokens
        stats.judge_latency_seconds_sum[judging.name] += cost.latency_ms / 1000
        stats.judge_latency_count[judging.name] += 1
        judging.budget.spend(cost.prompt_tokens + cost.completion_tokens)


def _shares(cost: CallCost, metrics: tuple[str, ...]) -> list[tuple[int, int] | None]:
    if len(metrics) == 1:
        return [None]
    return list(outcomes.token_shares(cost, len(metrics)))


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


def _span_attributes(
    judging: DeploymentJudging, job: JudgeJob, call: JudgeCallPlan, section: ProcessorSection
) -> dict[str, Any]:
    meta = job.response.meta
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": judging.judge_model,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.max_tokens": section.judge_max_tokens,
        "promptpulse.deployment": judging.name,
        "promptpulse.request_id": meta.request_id,
        "promptpulse.judge.connection": judging.connection,
        "promptpulse.evaluation.metrics": list(call.metrics),
        "promptpulse.judge.prompt_versions": [call.prompt_versions[m] for m in call.metrics],
    }
    if meta.variant:
        attributes["promptpulse.variant"] = meta.variant
    if meta.run_id:
        attributes["promptpulse.run_id"] = meta.run_id
    return attributes


def _record_usage(span: trace.Span, cost: CallCost) -> None:
    span.set_attribute("gen_ai.response.model", cost.model)
    span.set_attribute("gen_ai.usage.input_tokens", cost.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", cost.completion_tokens)
    span.set_attribute("promptpulse.judge.attempts", cost.attempts)
    span.set_attribute("promptpulse.judge.latency_ms", cost.latency_ms)


def _evaluation_result(span: trace.Span, metric: str, verdict: Verdict) -> None:
    span.add_event(
        "gen_ai.evaluation.result",
        {
            "gen_ai.evaluation.name": metric,
            "gen_ai.evaluation.score.value": float(verdict.score),
            "gen_ai.evaluation.score.label": RUBRICS[metric].label(verdict.score),
            "gen_ai.evaluation.explanation": verdict.reason,
        },
    )


__all__ = ["Hold", "JudgeJob", "JudgeRunner"]
