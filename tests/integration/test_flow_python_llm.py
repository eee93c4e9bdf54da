"""A Python node that calls a model itself with the openai package: a `chat {model}` span under the
node's span, and its usage counted with the run's LLM calls (issue 12, point 4). llmsim over real
HTTP on 127.0.0.1; the calls are made by the official openai client, sync and async, streamed or not."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBasedTraceIdRatio, Sampler

from shared.flow import FlowExecutor, NodeExecutionError, load_flow, python_llm
from tests.integration.test_flow_llm import llmsim

pytestmark = pytest.mark.integration

FLOW = """\
inputs:
  question: {type: string}
  base_url: {type: string}
outputs:
  plain: {type: string, reference: "${plain.output}"}
  streamed: {type: string, reference: "${streamed.output}"}
  unreported: {type: string, reference: "${unreported.output}"}
  legacy: {type: string, reference: "${legacy.output}"}
nodes:
- name: plain
  type: python
  source: {type: code, path: plain.py}
  inputs: {question: "${inputs.question}", base_url: "${inputs.base_url}"}
- name: streamed
  type: python
  source: {type: code, path: streamed.py}
  inputs: {question: "${plain.output}", base_url: "${inputs.base_url}"}
- name: unreported
  type: python
  source: {type: code, path: unreported.py}
  inputs: {question: "${inputs.question}", base_url: "${inputs.base_url}"}
- name: legacy
  type: python
  source: {type: code, path: legacy.py}
  inputs: {question: "${inputs.question}", base_url: "${inputs.base_url}"}
"""

LEGACY = """\
from openai import OpenAI
from promptflow import tool


@tool
def ask(question: str, base_url: str) -> str:
    client = OpenAI(base_url=base_url, api_key="sk-not-a-real-key")
    reply = client.completions.create(model="gpt-35-turbo-instruct", prompt=question, max_tokens=20)
    return reply.choices[0].text
"""

PLAIN = """\
from openai import OpenAI
from promptflow.core import tool


@tool
def ask(question: str, base_url: str) -> str:
    client = OpenAI(base_url=base_url, api_key="sk-not-a-real-key")
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    return reply.choices[0].message.content
"""

STREAMED = """\
from openai import AsyncOpenAI
from promptflow import tool


@tool
async def ask(question: str, base_url: str) -> str:
    client = AsyncOpenAI(base_url=base_url, api_key="sk-not-a-real-key")
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": question}], stream=True,
        stream_options={"include_usage": True},
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)
"""

UNREPORTED = """\
from openai import OpenAI
from promptflow import tool


@tool
def ask(question: str, base_url: str) -> str:
    client = OpenAI(base_url=base_url, api_key="sk-not-a-real-key")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": question}], stream=True
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
"""

FAILING = """\
from openai import OpenAI
from promptflow import tool


@tool
def ask(question: str, base_url: str) -> str:
    client = OpenAI(base_url=base_url, api_key="sk-not-a-real-key")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    raise ValueError("the answer was not good enough")
"""


def _flow(folder: Path, unreported: str = UNREPORTED) -> Path:
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(FLOW)
    (folder / "plain.py").write_text(PLAIN)
    (folder / "streamed.py").write_text(STREAMED)
    (folder / "unreported.py").write_text(unreported)
    (folder / "legacy.py").write_text(LEGACY)
    return folder


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_python_nodes_llm_calls_are_spans_under_the_node_and_counted(tmp_path: Path) -> None:
    provider, exporter = _provider()
    async with llmsim() as sim:
        executor = FlowExecutor(load_flow(_flow(tmp_path / "f")), {}, tracer_provider=provider)
        result = await executor.run({"question": "How are requests sampled?", "base_url": f"{sim.base_url}/v1"})

    calls = {call.node: call for call in result.llm_calls}
    assert set(calls) == {"plain", "streamed", "unreported", "legacy"}
    for node in ("plain", "streamed", "legacy"):
        assert calls[node].usage_reported and calls[node].prompt_tokens > 0 and calls[node].completion_tokens > 0
        assert calls[node].total_tokens == calls[node].prompt_tokens + calls[node].completion_tokens
    assert calls["streamed"].request_model == "gpt-4o"
    # A stream without stream_options.include_usage: the endpoint reported nothing, so nothing is guessed.
    assert not calls["unreported"].usage_reported and calls["unreported"].total_tokens == 0
    assert result.usage_by_model()["gpt-4o"]["total_tokens"] == calls["streamed"].total_tokens

    spans = exporter.get_finished_spans()
    nodes = {span.name.split(" ", 1)[1]: span for span in spans if span.name.startswith("execute_tool ")}
    chats = [span for span in spans if span.name.startswith(("chat ", "text_completion "))]
    assert len(chats) == 4
    for chat in chats:
        parent = next(name for name, node in nodes.items() if node.context.span_id == chat.parent.span_id)
        assert chat.context.trace_id == nodes[parent].context.trace_id
        assert chat.attributes["gen_ai.operation.name"] in ("chat", "text_completion")
        for span_event in chat.events:  # contents are never captured
            assert "How are requests sampled?" not in str(dict(span_event.attributes or {}))
        assert "How are requests sampled?" not in str(dict(chat.attributes))
    plain_chat = next(c for c in chats if nodes["plain"].context.span_id == c.parent.span_id)
    assert plain_chat.attributes["gen_ai.usage.input_tokens"] == calls["plain"].prompt_tokens


async def test_calls_count_with_tracing_off(tmp_path: Path) -> None:
    # No SDK provider (tracing not configured): the usage still reaches the run's LLM calls.
    from opentelemetry.trace import NoOpTracerProvider

    async with llmsim() as sim:
        executor = FlowExecutor(load_flow(_flow(tmp_path / "f")), {}, tracer_provider=NoOpTracerProvider())
        result = await executor.run({"question": "How are requests sampled?", "base_url": f"{sim.base_url}/v1"})
    calls = {call.node: call for call in result.llm_calls}
    assert set(calls) == {"plain", "streamed", "unreported", "legacy"}
    assert calls["plain"].usage_reported and calls["plain"].total_tokens > 0


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, ParentBasedTraceIdRatio(0.0)], ids=["always_off", "ratio_0"])
async def test_calls_count_when_the_sampler_drops_their_spans(tmp_path: Path, sampler: Sampler) -> None:
    # OTEL_TRACES_SAMPLER may sample a request out (docs/proxy.md, "Throughput and tracing"): its
    # spans do not record, but the usage of its Python nodes' calls is read from their spans.
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with llmsim() as sim:
        executor = FlowExecutor(load_flow(_flow(tmp_path / "f")), {}, tracer_provider=provider)
        result = await executor.run({"question": "How are requests sampled?", "base_url": f"{sim.base_url}/v1"})
    calls = {call.node: call for call in result.llm_calls}
    assert set(calls) == {"plain", "streamed", "unreported", "legacy"}
    for node in ("plain", "streamed", "legacy"):
        assert calls[node].usage_reported and calls[node].total_tokens > 0
    assert exporter.get_finished_spans() == ()  # the counting spans are exported nowhere


async def test_a_node_that_fails_after_its_call_still_counts_the_tokens_it_spent(tmp_path: Path) -> None:
    provider, _ = _provider()
    async with llmsim() as sim:
        executor = FlowExecutor(load_flow(_flow(tmp_path / "f", unreported=FAILING)), {}, tracer_provider=provider)
        with pytest.raises(NodeExecutionError) as failure:
            await executor.run({"question": "q", "base_url": f"{sim.base_url}/v1"})
    assert failure.value.node == "unreported"
    assert any(call.node == "unreported" and call.usage_reported for call in failure.value.llm_calls)


def test_spans_start_only_inside_a_python_node_and_go_to_that_runs_provider() -> None:
    # The instrumentation's tracer: outside a node (a judge's call, say) it makes no span at all,
    # so loading a flow with Python nodes changes nothing else in the process.
    provider, exporter = _provider()
    tracer = python_llm._NodeTracerProvider().get_tracer("opentelemetry.instrumentation.openai_v2")
    outside = tracer.start_span("chat outside")
    assert not outside.is_recording()
    with python_llm.node_llm_calls("node", provider):
        with tracer.start_as_current_span("chat inside"):
            pass
    assert [span.name for span in exporter.get_finished_spans()] == ["chat inside"]
