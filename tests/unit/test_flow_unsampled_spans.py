"""A flow run under a span its trace does not record (a sampled-out request) starts no
``invoke_workflow`` or ``chat`` span of its own, with the same result; under a sampled span, or
with a sampler that may record the child of an unsampled span, the spans are as before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.flow import FlowExecutor, FlowResult, load_flow
from shared.flow.telemetry import unrecorded_child
from tests.support.flow_fakes import STANDARD_FLOW, FakeChatClient

CONTEXT = "Sampling is a hash of the request id.\n"
SPAN_NAMES = {"invoke_workflow standard", "execute_tool select_facts", "render_prompt format_facts",
              "chat gpt-3.5-turbo"}


class CountingParentBased(ParentBased):
    """The SDK's ParentBased, remembering the name of every span it was asked about."""

    def __init__(self, root: Sampler, **delegates: Sampler) -> None:
        super().__init__(root, **delegates)
        self.asked: list[str] = []

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str, *args: Any,
                      **kwargs: Any) -> SamplingResult:
        self.asked.append(name)
        return super().should_sample(parent_context, trace_id, name, *args, **kwargs)


def recorder(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def caller(sampled: bool) -> Context:
    """A caller's traceparent, sampled or not (the server span follows it under ParentBased)."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id=0x5B8AA5A2D2C872E8321CF37308D69DF2, span_id=0x051581BF3CB55C13, is_remote=True, trace_flags=flags)))


async def run_under_server_span(provider: TracerProvider, sampled: bool) -> tuple[FlowResult, trace.Span]:
    client = FakeChatClient("It is a hash [1].")
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    with provider.get_tracer("gateway").start_as_current_span("POST /score", context=caller(sampled)) as server:
        result = await executor.run({"context": CONTEXT}, variant="variant_1")
    return result, server


def comparable(result: FlowResult) -> tuple[Any, ...]:
    calls = [(c.node, c.model, c.prompt_tokens, c.completion_tokens, c.total_tokens, c.finish_reason)
             for c in result.llm_calls]
    return result.outputs, calls, [(n.name, n.status) for n in result.nodes]


def names(spans: Sequence[Any]) -> set[str]:
    return {span.name for span in spans}


async def test_no_workflow_or_chat_span_is_started_under_an_unsampled_server_span() -> None:
    sampler = CountingParentBased(ALWAYS_ON)
    provider, exporter = recorder(sampler)
    result, server = await run_under_server_span(provider, sampled=False)
    assert not server.is_recording()
    assert exporter.get_finished_spans() == ()
    # Asked about the server span, once for the probe of its delegates, and about the Python and
    # prompt nodes' spans (started as before); never about the run's or the LLM call's.
    assert "invoke_workflow standard" not in sampler.asked
    assert "chat gpt-3.5-turbo" not in sampler.asked
    assert {"POST /score", "execute_tool select_facts", "render_prompt format_facts"} <= set(sampler.asked)
    sampled_result, _ = await run_under_server_span(recorder(ParentBased(ALWAYS_ON))[0], sampled=True)
    assert comparable(result) == comparable(sampled_result)


async def test_spans_are_as_before_under_a_sampled_server_span() -> None:
    provider, exporter = recorder(ParentBased(ALWAYS_ON))
    _, server = await run_under_server_span(provider, sampled=True)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == SPAN_NAMES | {"POST /score"}
    run = spans["invoke_workflow standard"]
    assert run.parent is not None and run.parent.span_id == server.get_span_context().span_id
    chat = spans["chat gpt-3.5-turbo"]
    assert chat.parent is not None and chat.parent.span_id == run.context.span_id
    assert chat.attributes is not None and chat.attributes["gen_ai.response.model"] == "gpt-3.5-turbo-0613"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0


async def test_a_sampler_that_records_children_of_unsampled_spans_gets_every_span() -> None:
    # Built in code (no OTEL_TRACES_SAMPLER does this): the caller's unsampled trace is not
    # recorded at the server span, but every span the process starts under it is.
    sampler = ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON)
    provider, exporter = recorder(sampler)
    _, server = await run_under_server_span(provider, sampled=False)
    assert not server.is_recording()
    assert names(exporter.get_finished_spans()) == SPAN_NAMES


async def test_a_sampler_not_based_on_the_parent_gets_every_span() -> None:
    provider, exporter = recorder(ALWAYS_ON)
    outside = TracerProvider(sampler=ALWAYS_OFF).get_tracer("elsewhere")
    client = FakeChatClient("It is a hash [1].")
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    with outside.start_as_current_span("unsampled parent") as parent:
        assert not parent.is_recording() and parent.get_span_context().is_valid
        assert not unrecorded_child(executor.tracer)
        await executor.run({"context": CONTEXT}, variant="variant_1")
    assert names(exporter.get_finished_spans()) == SPAN_NAMES


def test_no_current_span_starts_a_root_span_as_before() -> None:
    provider, _ = recorder(ParentBased(ALWAYS_ON))
    assert not unrecorded_child(provider.get_tracer("flows"))  # the processor: no server span


async def test_the_request_ratio_sampler_skips_the_spans_of_an_unsampled_request_only() -> None:
    from shared.telemetry.sampling import SAMPLING_KEY, RequestRatioSampler

    for rate, recorded in ((0.0, False), (1.0, True)):
        provider, exporter = recorder(RequestRatioSampler(rate))
        executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": FakeChatClient("It is.")},
                                tracer_provider=provider)
        gateway = provider.get_tracer("gateway")
        with gateway.start_as_current_span("POST /score", attributes={SAMPLING_KEY: "0190aaaa"}) as server:
            assert server.is_recording() is recorded
            assert unrecorded_child(executor.tracer) is not recorded
            await executor.run({"context": CONTEXT}, variant="variant_1")
        assert names(exporter.get_finished_spans()) == (SPAN_NAMES | {"POST /score"} if recorded else set())
