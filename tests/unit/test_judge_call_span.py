"""The judge call's span and counts, as JudgeCalls.call makes them: every attribute and event on a
recording span (a call that succeeds, a call that fails), and on a span the sampler drops, the
same counts and budget spending with nothing built for the span.

The judge is a scripted stand-in for the openai client; the tracer is the OpenTelemetry SDK's.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.budget import TokenBudget
from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget, SpanResult
from services.processor.evaluation.judge.client import JudgeCallFailed, JudgeClient
from services.processor.evaluation.judge.verdict import Verdict, parse_verdict
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.events.builders import new_meta


class Judge:
    def __init__(self, content: str) -> None:
        self.content = content
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kwargs: Any) -> Any:
        return SimpleNamespace(
            model="judge-x-2026", choices=[SimpleNamespace(message=SimpleNamespace(content=self.content))],
            usage=SimpleNamespace(prompt_tokens=120, completion_tokens=7),
        )


def make(content: str, sampler: Any = None) -> tuple[JudgeCalls, JudgeTarget, InMemorySpanExporter, ProcessorStats]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stats = ProcessorStats()
    client = JudgeClient(Judge(content), CircuitBreaker(5, 1.0), timeout_seconds=5, max_attempts=1,
                         retry_base_seconds=0, retry_max_seconds=0, max_tokens=300)
    calls = JudgeCalls(ProcessorSection(judge_max_tokens=300), stats, provider.get_tracer("t"))
    return calls, JudgeTarget("shop", "judge-conn", "judge-x", client, TokenBudget(10_000)), exporter, stats


META = new_meta(request_id="r-7", deployment="shop", request_start_time=None, variant="b", run_id="run-3")


async def call(calls: JudgeCalls, target: JudgeTarget) -> Any:
    return await calls.call(
        target, META, Context(), [{"role": "user", "content": "judge this"}], lambda text: parse_verdict(text),
        metrics=["relevance"], prompt_versions=["relevance-v1"],
        results=lambda v: [SpanResult("relevance", float(v.score), "good", v.reason)],
    )


REQUEST_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "judge-x",
    "gen_ai.request.temperature": 0.0,
    "gen_ai.request.max_tokens": 300,
    "promptpulse.deployment": "shop",
    "promptpulse.request_id": "r-7",
    "promptpulse.judge.connection": "judge-conn",
    "promptpulse.evaluation.metrics": ("relevance",),
    "promptpulse.judge.prompt_versions": ("relevance-v1",),
    "promptpulse.variant": "b",
    "promptpulse.run_id": "run-3",
    "gen_ai.response.model": "judge-x-2026",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 7,
    "promptpulse.judge.attempts": 1,
}


async def test_a_judged_call_records_every_attribute_and_its_result_on_the_span() -> None:
    calls, target, exporter, stats = make('{"score": 4, "reason": "on topic"}')
    reply = await call(calls, target)
    assert reply.parsed == Verdict(4, "on topic")
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat judge-x" and span.kind is SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes.pop("promptpulse.judge.latency_ms") >= 0
    assert attributes == REQUEST_ATTRIBUTES
    (event,) = span.events
    assert event.name == "gen_ai.evaluation.result"
    assert dict(event.attributes or {}) == {
        "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 4.0,
        "gen_ai.evaluation.score.label": "good", "gen_ai.evaluation.explanation": "on topic",
    }
    assert stats.judge_calls[("shop", "ok")] == 1 and target.budget.spent() == 127


async def test_a_failed_call_records_its_usage_error_and_status_on_the_span() -> None:
    calls, target, exporter, stats = make("no verdict here")
    with pytest.raises(JudgeCallFailed):
        await call(calls, target)
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes.pop("promptpulse.judge.latency_ms") >= 0
    assert attributes == {**REQUEST_ATTRIBUTES, "error.type": "unparseable"}
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "JudgeCallFailed: unparseable judge answer: the judge's reply holds no JSON object with a score"
    # use_span records the exception and sets the status from it on the way out
    assert [e.name for e in span.events] == ["exception"]
    assert stats.judge_calls[("shop", "error")] == 1 and target.budget.spent() == 127


async def test_a_sampled_out_call_is_counted_and_spent_with_nothing_built_for_its_span() -> None:
    calls, target, exporter, stats = make('{"score": 2, "reason": "off"}', sampler=ALWAYS_OFF)

    def results(verdict: Verdict) -> list[SpanResult]:
        raise AssertionError("span results built for a span that does not record")

    reply = await calls.call(
        target, META, Context(), [{"role": "user", "content": "judge this"}], lambda text: parse_verdict(text),
        metrics=["relevance"], prompt_versions=["relevance-v1"], results=results,
    )
    assert reply.parsed == Verdict(2, "off")
    assert exporter.get_finished_spans() == ()
    assert stats.judge_calls[("shop", "ok")] == 1
    assert stats.judge_prompt_tokens["shop"] == 120 and stats.judge_completion_tokens["shop"] == 7
    assert target.budget.spent() == 127
    assert calls.calls_in_flight == 0 and calls.slots.taken == [1, 0]
