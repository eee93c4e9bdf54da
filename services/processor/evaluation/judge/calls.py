"""Every judge call of every evaluator goes through one :class:`JudgeCalls`.

It holds what judge calls share across evaluators and deployments: the processor's judge
concurrency cap (at most ``judge_concurrency`` calls in flight, whatever evaluator makes them),
the ``chat {model}`` span in the judged request's trace with the GenAI usage attributes and a
``gen_ai.evaluation.result`` event per metric, the call counters, and the spending of the
deployment's token budget.

The cap serves live judging first: a call made under :data:`REJUDGE_PRIORITY` (the re-judge
agent sets it for its tasks) gets a free place only when no live call waits for one, so
re-judging past traffic fills what live judging leaves of the cap and never delays it more than
the calls already in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.client import (
    CallCost,
    JudgeCallFailed,
    JudgeClient,
    JudgeReply,
)
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.events.messages import EventMeta

T = TypeVar("T")

LIVE, REJUDGE = 0, 1
# The priority of the judge calls made in the current task (tasks inherit it).
REJUDGE_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("judge_priority", default=LIVE)


class TimeIntegral:
    """A count and its time integral (count x seconds), exact between changes: over an interval,
    the integral's change divided by the interval is the count's mean."""

    __slots__ = ("value", "_seconds", "_at")

    def __init__(self, value: int) -> None:
        self.value = value
        self._seconds = 0.0
        self._at = time.monotonic()

    @property
    def seconds(self) -> float:
        self.change(0)
        return self._seconds

    def change(self, by: int) -> None:
        now = time.monotonic()
        self._seconds += self.value * (now - self._at)
        self._at = now
        self.value += by


class PrioritySlots:
    """A semaphore whose waiters are served by priority (LIVE before REJUDGE), each in order."""

    def __init__(self, places: int) -> None:
        self._waiting: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        # Per priority: places taken and the seconds spent waiting for them (bench/rejudge.py
        # reads how long live calls waited beside a re-judge).
        self.taken = [0, 0]
        self.waited_seconds = [0.0, 0.0]
        # The time integral of free places. A place is free only while no call waits for one
        # (release hands it straight to a waiter), so this is the cap left idle for want of
        # calls; the rest of the idle cap is places handed to waiters the loop has not run yet.
        self._free = TimeIntegral(places)

    @property
    def free_seconds(self) -> float:
        return self._free.seconds

    def waiting(self, priority: int) -> int:
        return sum(1 for future in self._waiting[priority] if not future.done())

    async def acquire(self, priority: int) -> None:
        self.taken[priority] += 1
        if self._free.value > 0 and not any(self._waiting):
            self._free.change(-1)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(future)
        began = time.monotonic()
        try:
            await future
            self.waited_seconds[priority] += time.monotonic() - began
        except asyncio.CancelledError:
            self.taken[priority] -= 1
            if future.done() and not future.cancelled():
                self.release()  # handed a place just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting[priority].remove(future)
            raise

    def release(self) -> None:
        for queue in self._waiting:
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the place goes straight to the waiter
                    return
        self._free.change(+1)

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        await self.acquire(REJUDGE_PRIORITY.get())
        try:
            yield
        finally:
            self.release()


@dataclass(frozen=True)
class JudgeTarget:
    """Where one evaluator of one deployment sends its judge calls."""

    deployment: str
    connection: str
    model: str
    client: JudgeClient
    budget: TokenBudget


@dataclass(frozen=True, slots=True)
class SpanResult:
    """One metric's result as the judge span reports it (gen_ai.evaluation.result)."""

    metric: str
    value: float
    label: str
    reason: str


class JudgeCalls:
    def __init__(self, section: ProcessorSection, stats: ProcessorStats, tracer: Tracer | None = None) -> None:
        self._section = section
        self._stats = stats
        self._tracer = tracer or trace.get_tracer("promptpulse.processor")
        self.slots = PrioritySlots(section.judge_concurrency)
        # Calls in flight and their time integral: over an interval, its change divided by the
        # interval is the mean number of calls in flight (exact, not sampled), and divided by
        # the calls made in it, the mean time a call holds its place (Little's law).
        self._in_flight = TimeIntegral(0)

    @property
    def calls_in_flight(self) -> int:
        return self._in_flight.value

    @property
    def occupied_seconds(self) -> float:
        return self._in_flight.seconds

    async def call(
        self,
        target: JudgeTarget,
        meta: EventMeta,
        parent: Any,
        messages: list[dict[str, str]],
        parse: Callable[[str | None], T],
        *,
        metrics: Sequence[str],
        prompt_versions: Sequence[str],
        results: Callable[[T], Iterable[SpanResult]] | None = None,
    ) -> JudgeReply[T]:
        """One judge call within the concurrency cap; raises JudgeCallFailed when it fails.

        ``parent`` is the request's trace context; ``results`` turns the parsed reply into the
        span's evaluation-result events.
        """
        # The place is taken and released inline rather than through slots.place(): an async
        # context manager per call costs a generator and two frames for nothing.
        slots = self.slots
        await slots.acquire(REJUDGE_PRIORITY.get())
        try:
            self._in_flight.change(+1)
            try:
                # What start_as_current_span does (same defaults: the exception recorded, the
                # status set, the span ended on exit), without its generator-based context
                # manager around use_span (two of them through the ProxyTracer of a process
                # without telemetry).
                span = self._tracer.start_span(f"chat {target.model}", context=parent, kind=SpanKind.CLIENT)
                with trace.use_span(span, end_on_exit=True):
                    # Attributes and events only for a span that records: a sampled-out or no-op
                    # span would drop them, so building them is wasted work. (Set right after the
                    # start rather than passed to it: the samplers in use read no attributes.)
                    recording = span.is_recording()
                    if recording:
                        span.set_attributes(self._span_attributes(target, meta, metrics, prompt_versions))
                    try:
                        reply = await target.client.call(target.model, messages, parse)
                    except JudgeCallFailed as failed:
                        if recording:
                            _record_usage(span, failed.cost)
                            span.set_attribute("error.type", failed.error_name)
                        span.set_status(Status(StatusCode.ERROR, failed.message))
                        self._count(target, failed.cost, ok=False)
                        raise
                    self._count(target, reply.cost, ok=True)
                    if recording:
                        _record_usage(span, reply.cost)
                        for result in results(reply.parsed) if results is not None else ():
                            span.add_event(
                                "gen_ai.evaluation.result",
                                {
                                    "gen_ai.evaluation.name": result.metric,
                                    "gen_ai.evaluation.score.value": float(result.value),
                                    "gen_ai.evaluation.score.label": result.label,
                                    "gen_ai.evaluation.explanation": result.reason,
                                },
                            )
                    return reply
            finally:
                self._in_flight.change(-1)
        finally:
            slots.release()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A place under the cap for a judge call made elsewhere (an evaluation flow's llm nodes
        call the endpoint through the flow runtime); count it with :meth:`count_call`."""
        async with self.slots.place():
            self._in_flight.change(+1)
            try:
                yield
            finally:
                self._in_flight.change(-1)

    def count_call(self, target: JudgeTarget, cost: CallCost, *, ok: bool) -> None:
        """A judge call made in a :meth:`slot`: counted and spent like the calls made here."""
        self._count(target, cost, ok=ok)

    def _count(self, target: JudgeTarget, cost: CallCost, *, ok: bool) -> None:
        stats, name = self._stats, target.deployment
        stats.judge_calls[(name, "ok" if ok else "error")] += 1
        stats.judge_prompt_tokens[name] += cost.prompt_tokens
        stats.judge_completion_tokens[name] += cost.completion_tokens
        stats.judge_latency_seconds_sum[name] += cost.latency_ms / 1000
        stats.judge_latency_count[name] += 1
        target.budget.spend(cost.prompt_tokens + cost.completion_tokens)

    def _span_attributes(
        self, target: JudgeTarget, meta: EventMeta, metrics: Sequence[str], prompt_versions: Sequence[str]
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": target.model,
            "gen_ai.request.temperature": 0.0,
            "gen_ai.request.max_tokens": self._section.judge_max_tokens,
            "promptpulse.deployment": target.deployment,
            "promptpulse.request_id": meta.request_id,
            "promptpulse.judge.connection": target.connection,
            "promptpulse.evaluation.metrics": list(metrics),
            "promptpulse.judge.prompt_versions": list(prompt_versions),
        }
        if meta.variant:
            attributes["promptpulse.variant"] = meta.variant
        if meta.run_id:
            attributes["promptpulse.run_id"] = meta.run_id
        return attributes


def _record_usage(span: trace.Span, cost: CallCost) -> None:
    span.set_attributes({
        "gen_ai.response.model": cost.model,
        "gen_ai.usage.input_tokens": cost.prompt_tokens,
        "gen_ai.usage.output_tokens": cost.completion_tokens,
        "promptpulse.judge.attempts": cost.attempts,
        "promptpulse.judge.latency_ms": cost.latency_ms,
    })


__all__ = ["LIVE", "REJUDGE", "REJUDGE_PRIORITY", "JudgeCalls", "JudgeTarget", "PrioritySlots", "SpanResult"]
