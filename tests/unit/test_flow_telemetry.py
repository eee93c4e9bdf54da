"""Spans of flow runs: names, parents, GenAI attributes, streaming span lifetime, no secrets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from shared.flow import FlowExecutor, LlmCallError, NodeExecutionError, load_flow
from shared.flow.telemetry import redact
from tests.support.flow_fakes import STANDARD_FLOW, FakeChatClient, span_recorder, write_flow

CONTEXT = "Sampling is a hash of the request id.\n"


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_run_span_has_one_child_per_executed_node() -> None:
    provider, exporter = span_recorder()
    client = FakeChatClient("It is a hash [1].")
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    await executor.run({"context": CONTEXT}, variant="variant_1")
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"invoke_workflow standard", "execute_tool select_facts", "render_prompt format_facts",
                          "chat gpt-3.5-turbo"}  # the bypassed refuse node has none
    root = spans["invoke_workflow standard"]
    assert root.parent is None
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "standard"
    assert root.attributes["promptpulse.flow.variant"] == "variant_1"
    for name, span in spans.items():
        if span is not root:
            assert span.parent is not None and span.parent.span_id == root.context.span_id, name
            assert span.context.trace_id == root.context.trace_id
    tool = spans["execute_tool select_facts"]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "select_facts"
    chat = spans["chat gpt-3.5-turbo"]
    usage = client.usage_of(client.requests[0])
    assert chat.kind is SpanKind.CLIENT
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-3.5-turbo",
        "gen_ai.response.model": "gpt-3.5-turbo-0613",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "promptpulse.flow.node": "answer",
        "promptpulse.flow.node_variant": "variant_1",
    }
    assert {k: chat.attributes.get(k) for k in expected} == expected
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"]) == ("stop",)


async def test_streaming_chat_span_ends_when_the_stream_ends() -> None:
    provider, exporter = span_recorder()
    gate = asyncio.Event()
    client = FakeChatClient("a b c", gate=gate)
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    async with executor.stream({"context": CONTEXT}) as stream:
        await anext(stream)
        finished = {s.name for s in exporter.get_finished_spans()}
        assert "chat gpt-3.5-turbo" not in finished and "invoke_workflow standard" not in finished
        gate.set()
        async for _ in stream:
            pass
        await stream.result()
    spans = by_name(exporter.get_finished_spans())
    chat = spans["chat gpt-3.5-turbo"]
    assert chat.attributes["promptpulse.llm.streamed"] is True
    assert chat.attributes["promptpulse.time_to_first_chunk_ms"] >= 0
    assert chat.attributes["gen_ai.usage.output_tokens"] == 3
    root = spans["invoke_workflow standard"]
    assert chat.end_time is not None and root.end_time is not None and chat.end_time <= root.end_time


async def test_cancelled_stream_marks_spans_cancelled_not_failed() -> None:
    provider, exporter = span_recorder()
    client = FakeChatClient("a b c", gate=asyncio.Event())
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    stream = executor.stream({"context": CONTEXT})
    await anext(stream)
    await stream.aclose()
    spans = by_name(exporter.get_finished_spans())
    for name in ("chat gpt-3.5-turbo", "invoke_workflow standard"):
        assert spans[name].attributes["promptpulse.cancelled"] is True
        assert spans[name].status.status_code is not StatusCode.ERROR


async def test_failed_tool_marks_its_span_and_the_run_span(tmp_path: Path) -> None:
    provider, exporter = span_recorder()
    dag = ("inputs: {}\noutputs:\n  a:\n    type: string\n    reference: ${boom.output}\nnodes:\n"
           "- name: boom\n  type: python\n  source:\n    type: code\n    path: boom.py\n  inputs: {}\n")
    code = "from promptflow import tool\n\n@tool\ndef boom():\n    raise RuntimeError('no')\n"
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "boom", dag, {"boom.py": code})), {},
                            tracer_provider=provider)
    with pytest.raises(NodeExecutionError):
        await executor.run({})
    spans = by_name(exporter.get_finished_spans())
    for name in ("execute_tool boom", "invoke_workflow boom"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert spans[name].attributes["error.type"] == "RuntimeError"


async def test_no_key_reaches_a_span() -> None:
    provider, exporter = span_recorder()
    secret = "sk-proj-Zq8v2L0s9XyTtW4uB7nM1aQ3"

    class AuthenticationError(Exception):
        status_code = 401

    client = FakeChatClient(error=AuthenticationError(f"Incorrect API key provided: {secret}"))
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}, tracer_provider=provider)
    with pytest.raises(LlmCallError) as caught:
        await executor.run({"context": CONTEXT})
    assert secret not in str(caught.value)
    dumped = "".join(span.to_json() for span in exporter.get_finished_spans())
    assert "AuthenticationError" in dumped
    assert secret not in dumped and "sk-proj" not in dumped
    json.loads(exporter.get_finished_spans()[0].to_json())  # spans are well-formed


def test_redact_removes_key_like_tokens_and_bounds_length() -> None:
    assert redact("bad key sk-abc123 here") == "bad key [redacted] here"
    assert redact("token " + "A" * 40) == "token [redacted]"
    assert redact("normal message about 42 things") == "normal message about 42 things"
    assert len(redact("x " * 1000)) == 500
