"""Streaming runs: deltas while the LLM writes, the final result after, cancellation when left early."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.flow import FlowExecutor, FlowInputError, LlmCallError, load_flow
from tests.support.flow_fakes import (
    CHAT_FLOW,
    CHAT_TEMPLATE,
    STANDARD_FLOW,
    FakeChatClient,
    last_user_message,
    write_flow,
)

CONTEXT = "Sampling is a hash of the request id.\n"
ANSWER = "It is a hash of the request id [1]."


async def test_first_delta_arrives_before_the_llm_has_finished() -> None:
    gate = asyncio.Event()
    client = FakeChatClient(ANSWER, gate=gate)
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
    async with executor.stream({"context": CONTEXT}) as stream:
        first = await anext(stream)
        assert first == "It "
        assert stream.llm_calls == []  # the call is still streaming: no usage record yet
        assert stream.time_to_first_token_ms is not None
        gate.set()
        rest = [delta async for delta in stream]
        result = await stream.result()
    assert first + "".join(rest) == ANSWER
    assert result.outputs["answer"] == ANSWER
    assert result.streamed_output == "answer"
    [call] = result.llm_calls
    usage = client.usage_of(client.requests[0])
    assert call.streamed and call.usage_reported
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert client.requests[0]["stream_options"] == {"include_usage": True}
    assert result.time_to_first_token_ms is not None and result.time_to_first_token_ms <= result.duration_ms


async def test_chat_output_of_a_chat_flow_streams() -> None:
    client = FakeChatClient(last_user_message)
    executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
    async with executor.stream({"question": "one two three"}) as stream:
        deltas = [d async for d in stream]
    assert deltas == ["one ", "two ", "three"]
    assert stream.streamed_output == "answer"


async def test_only_the_streamed_output_node_streams(tmp_path: Path) -> None:
    dag = ("inputs:\n  q:\n    type: string\noutputs:\n  final:\n    type: string\n    reference: ${final.output}\n"
           "nodes:\n"
           "- name: draft\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
           "  inputs:\n    model: m\n    question: ${inputs.q}\n  connection: c\n  api: chat\n"
           "- name: final\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
           "  inputs:\n    model: m\n    question: ${draft.output}\n  connection: c\n  api: chat\n")
    client = FakeChatClient(lambda r: "re: " + last_user_message(r))
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "two", dag, {"chat.jinja2": CHAT_TEMPLATE})), {"c": client})
    async with executor.stream({"q": "x"}) as stream:
        deltas = [d async for d in stream]
        result = await stream.result()
    assert "".join(deltas) == "re: re: x"
    assert [bool(r.get("stream")) for r in client.requests] == [False, True]
    assert [c.streamed for c in result.llm_calls] == [False, True]


async def test_an_output_no_llm_streams_arrives_whole_at_the_end(tmp_path: Path) -> None:
    dag = ("inputs:\n  q:\n    type: string\n    is_chat_input: true\n"
           "outputs:\n  reply:\n    type: string\n    reference: ${echo.output}\n    is_chat_output: true\n"
           "nodes:\n- name: echo\n  type: python\n  source:\n    type: code\n    path: echo.py\n"
           "  inputs:\n    q: ${inputs.q}\n")
    code = "from promptflow import tool\n\n@tool\ndef echo(q: str) -> str:\n    return q * 2\n"
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "echo", dag, {"echo.py": code})), {})
    async with executor.stream({"q": "ab"}) as stream:
        assert [d async for d in stream] == ["abab"]


async def test_a_bypassed_streamed_llm_streams_nothing() -> None:
    client = FakeChatClient(ANSWER)
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
    async with executor.stream({"context": ""}) as stream:
        assert [d async for d in stream] == []
        result = await stream.result()
    assert result.outputs["answer"] is None and client.requests == []


async def test_closing_the_stream_cancels_the_llm_call() -> None:
    gate = asyncio.Event()  # never set: the LLM would never finish on its own
    client = FakeChatClient(ANSWER, gate=gate)
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
    stream = executor.stream({"context": CONTEXT})
    assert await anext(stream) == "It "
    await stream.aclose()
    assert stream.cancelled
    [llm_stream] = client.streams
    assert llm_stream.cancelled and llm_stream.closed
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_a_stream_closed_before_iterating_never_calls_the_llm() -> None:
    client = FakeChatClient(ANSWER)
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
    stream = executor.stream({"context": CONTEXT})
    await stream.aclose()
    assert [d async for d in stream] == []
    with pytest.raises(RuntimeError, match="closed before"):
        await stream.result()
    await asyncio.sleep(0)
    assert client.requests == []


async def test_cancelling_the_consumer_cancels_the_run() -> None:
    client = FakeChatClient(ANSWER, gate=asyncio.Event())
    executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
    stream = executor.stream({"context": CONTEXT})
    first_seen = asyncio.Event()

    async def consume() -> None:  # what a request handler does; it is cancelled when the client leaves
        async for _ in stream:
            first_seen.set()

    consumer = asyncio.create_task(consume())
    await first_seen.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await stream.aclose()  # waits for the run to wind down
    assert stream.cancelled
    assert client.streams[0].cancelled and client.streams[0].closed


async def test_input_errors_raise_before_anything_streams() -> None:
    executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": FakeChatClient()})
    with pytest.raises(FlowInputError) as caught:
        executor.stream({"question": 42})
    assert caught.value.field == "question"


async def test_llm_failure_surfaces_from_the_iteration() -> None:
    class APIConnectionError(Exception):
        pass

    client = FakeChatClient(error=APIConnectionError("connection refused"))
    executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
    async with executor.stream({"question": "q"}) as stream:
        with pytest.raises(LlmCallError) as caught:
            async for _ in stream:
                pass
    assert caught.value.error_type == "APIConnectionError"
