"""The judge token budget stops sampling when spent; the judge call is a span in the request's trace."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

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


async def test_judge_budget_stops_sampling_when_spent(tmp_path: Path) -> None:
    # One relevance call costs a few hundred tokens with these prompts: 300 is spent by the first.
    async with stage(tmp_path, {"shop": {"budget": 300}, "rich": {}}) as st:
        async with st.processor() as service, Producer(st.kafka) as producer:
            first = request_event("first", "shop", QA)
            await producer.send(st.topics.inference, [first, response_event(first, {"answer": ANSWER})])
            await read_evaluations(st.kafka, st.topics, 1, settle=0)
            assert service.judging["shop"].budget.exhausted()
            later = []
            for i in range(20):
                for deployment in ("shop", "rich"):
                    request = request_event(f"{deployment}-{i}", deployment, QA)
                    later += [request, response_event(request, {"answer": ANSWER})]
            await producer.send(st.topics.inference, later)
            found = await read_evaluations(st.kafka, st.topics, 21, settle=0.5)
            await wait_for(lambda: service.stats.budget_skipped["shop"] == 20, 20, "20 skipped requests")
    judged = sorted(e.meta.request_id for e in found)
    assert judged == sorted(["first", *[f"rich-{i}" for i in range(20)]])  # the other deployment goes on
    assert service.stats.budget_skipped == {"shop": 20}
    assert len(service.intake.pending) == 0  # skipped requests leave no state behind


async def test_judge_call_is_a_span_in_the_requests_trace(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    gateway_span = "00f067aa0ba902b7"
    traceparent = f"00-{trace_id}-{gateway_span}-01"
    async with stage(tmp_path, {"shop": {"metrics": ["relevance", "fluency"]}}) as st:
        async with st.processor(tracer=provider.get_tracer("test")), Producer(st.kafka) as producer:
            request = request_event("traced", "shop", QA, traceparent=traceparent)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = await read_evaluations(st.kafka, st.topics, 2)
    spans = [s for s in exporter.get_finished_spans() if s.name == "chat llmsim-judge"]
    assert len(spans) == 2
    scores = {e.metric: e.scored.score for e in found}
    for span in spans:
        assert format(span.context.trace_id, "032x") == trace_id
        assert format(span.parent.span_id, "016x") == gateway_span
        assert span.kind == SpanKind.CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
        (event,) = [e for e in span.events if e.name == "gen_ai.evaluation.result"]
        metric = event.attributes["gen_ai.evaluation.name"]
        assert event.attributes["gen_ai.evaluation.score.value"] == scores[metric]
        assert event.attributes["gen_ai.evaluation.score.label"]
        assert event.attributes["gen_ai.evaluation.explanation"]
    # The evaluation events carry the request's trace context too.
    assert {e.meta.traceparent for e in found} == {traceparent}


async def test_a_request_the_gateway_sampled_out_is_judged_without_spans(tmp_path: Path) -> None:
    # OTEL_TRACES_SAMPLER in the gateway (docs/proxy.md, "Throughput and tracing"): the request's
    # trace context says "not sampled", so the judge spans follow it (parent-based, the processor's
    # default sampler) and record nothing, but the request is judged and the judge's tokens counted.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    async with stage(tmp_path, {"shop": {"metrics": ["relevance", "fluency"]}}) as st:
        async with st.processor(tracer=provider.get_tracer("test")), Producer(st.kafka) as producer:
            request = request_event("untraced", "shop", QA, traceparent=traceparent)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = await read_evaluations(st.kafka, st.topics, 2)
    assert sorted(e.metric for e in found) == ["fluency", "relevance"]
    for evaluation in found:
        assert evaluation.WhichOneof("outcome") == "scored", evaluation
        assert evaluation.judge.prompt_tokens > 0 and evaluation.judge.completion_tokens > 0
        assert evaluation.meta.traceparent == traceparent  # the trace id stays with the scores
    assert exporter.get_finished_spans() == ()
