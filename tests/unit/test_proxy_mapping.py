"""What a proxied call records (services/gateway/routes/proxy/mapping.py, streams.py): pure units on
bodies and stream events in the OpenAI API's shapes."""

from __future__ import annotations

import json
from typing import Any

from services.gateway.routes.proxy.mapping import read_answer, recorded_inputs, recorded_outputs
from services.gateway.routes.proxy.streams import EventSplitter, StreamAccumulator
from shared.deployments.schema import Proxy
from shared.upstream import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES

SYSTEM_PROXY = Proxy(connection="c")


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [
        {"role": "system", "content": "Rule one."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "developer", "content": [{"type": "text", "text": "Rule two."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ], **extra}


def test_chat_question_is_the_last_user_text_and_context_the_system_messages() -> None:
    inputs = recorded_inputs(CHAT, "m", chat_body(), SYSTEM_PROXY, 100_000)
    assert (inputs["question"], inputs["context"]) == ("What is it?", "Rule one.\n\nRule two.")
    assert inputs["request"] == chat_body() and inputs["api"] == CHAT


def test_responses_question_from_a_string_or_the_last_user_item() -> None:
    body = {"model": "m", "instructions": "Be brief.", "input": "Why?"}
    assert recorded_inputs(RESPONSES, "m", body, SYSTEM_PROXY, 100_000)["question"] == "Why?"
    body["input"] = [{"role": "user", "content": "old"}, {"type": "function_call_output", "call_id": "c", "output": "x"},
                     {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "new"}]}]
    inputs = recorded_inputs(RESPONSES, "m", body, SYSTEM_PROXY, 100_000)
    assert (inputs["question"], inputs["context"]) == ("new", "Be brief.")


def test_context_from_a_named_body_field_or_none() -> None:
    body = chat_body(metadata={"context": "From the app."})
    assert recorded_inputs(CHAT, "m", body, Proxy(connection="c", context="body.metadata.context"),
                           100_000)["context"] == "From the app."
    assert "context" not in recorded_inputs(CHAT, "m", body, Proxy(connection="c", context="none"), 100_000)
    assert "context" not in recorded_inputs(CHAT, "m", body, Proxy(connection="c", context="body.nothing"), 100_000)


def test_long_texts_are_cut_and_a_body_too_large_even_then_is_left_out() -> None:
    proxy = Proxy(connection="c", recorded_text_max_chars=64)
    image = "data:image/png;base64," + "A" * 10_000
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}]}
    inputs = recorded_inputs(CHAT, "m", body, proxy, 100_000)
    url = inputs["request"]["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith(image[:64]) and url.endswith(f"[{len(image) - 64} more characters not recorded]")
    many = {"model": "m", "messages": [{"role": "user", "content": "x" * 60}] * 100}
    inputs = recorded_inputs(CHAT, "m", many, proxy, 1_000)
    assert "request" not in inputs and "larger than 1000 bytes" in inputs["request_not_recorded"]
    assert inputs["question"] == "x" * 60


def test_n_choices_are_all_recorded_and_the_first_judged() -> None:
    answer = {"model": "m-2024", "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}, "choices": [
        {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"},
        {"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "length"},
    ]}
    reading = read_answer(CHAT, answer)
    assert (reading.model, reading.usage.total_tokens if reading.usage else None) == ("m-2024", 12)
    assert recorded_outputs(CHAT, reading.choices, 1000) == {"answer": "first", "choices": [
        {"index": 0, "text": "first", "finish_reason": "length"},
        {"index": 1, "text": "second", "finish_reason": "stop"}]}


def test_tool_calls_only_leave_no_answer() -> None:
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
              "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}
    assert recorded_outputs(CHAT, read_answer(CHAT, answer).choices, 100) == {
        "tool_calls": [{"name": "f", "arguments": "{}"}]}
    response = {"status": "completed", "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, "output": [
        {"type": "reasoning", "summary": []},
        {"type": "function_call", "name": "g", "arguments": "{\"a\":1}", "call_id": "x"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}]}
    reading = read_answer(RESPONSES, response)
    assert recorded_outputs(RESPONSES, reading.choices, 100) == {
        "answer": "Done.", "tool_calls": [{"name": "g", "arguments": "{\"a\":1}"}]}
    assert (reading.usage.prompt_tokens, reading.usage.completion_tokens) == (3, 4)  # type: ignore[union-attr]


def test_completions_and_embeddings() -> None:
    assert recorded_inputs(COMPLETIONS, "m", {"prompt": ["one", "two"]}, SYSTEM_PROXY, 1000)["question"] == "one"
    reading = read_answer(EMBEDDINGS, {"data": [{"embedding": [0.1]}, {"embedding": [0.2]}],
                                       "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    assert recorded_outputs(EMBEDDINGS, reading.choices, 100, reading.embeddings) == {"embeddings": 2}
    assert reading.usage is not None and (reading.usage.prompt_tokens, reading.usage.completion_tokens) == (4, 0)


def sse(data: dict[str, Any] | str, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def test_the_splitter_yields_whole_events_across_reads() -> None:
    stream = sse({"a": 1}) + sse("[DONE]")
    splitter = EventSplitter()
    got = [e for cut in (stream[:5], stream[5:17], stream[17:]) for e in splitter.feed(cut)]
    assert got == [sse({"a": 1}), sse("[DONE]")] and splitter.rest() == b""
    assert EventSplitter().feed(b"data: 1\r\n\r\n") == [b"data: 1\n\n"]


def test_chat_chunks_with_tool_calls_and_the_usage_chunk_the_proxy_asked_for() -> None:
    reader = StreamAccumulator(CHAT, drop_usage_chunk=True)
    chunks = [
        {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 1, "delta": {"content": "other"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{\"q"}}]}}]},
        {"choices": [{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\":1}"}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}},
    ]
    results = [reader.feed(sse(c)) for c in chunks]
    assert results == [("Hel", True), (None, True), ("lo", True), (None, True), (None, True), (None, False)]
    assert reader.feed(sse("[DONE]")) == (None, True)
    assert recorded_outputs(CHAT, reader.result(), 100) == {"answer": "Hello", "choices": [
        {"index": 0, "text": "Hello", "finish_reason": "stop"},
        {"index": 1, "text": "other", "tool_calls": [{"name": "f", "arguments": "{\"q\":1}"}]}]}
    assert reader.usage is not None and reader.usage.total_tokens == 5 and reader.model == "m"
    kept = StreamAccumulator(CHAT, drop_usage_chunk=False)
    assert kept.feed(sse(chunks[-1])) == (None, True)  # the client asked for usage itself


def test_responses_events_deltas_and_the_completed_response() -> None:
    reader = StreamAccumulator(RESPONSES, drop_usage_chunk=False)
    final = {"model": "m-1", "status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2},
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi there"}]}]}
    events = [("response.created", {"response": {"model": "m-1", "status": "in_progress", "output": []}}),
              ("response.output_text.delta", {"delta": "Hi"}), ("response.output_text.delta", {"delta": " there"}),
              ("response.completed", {"response": final})]
    deltas = [reader.feed(sse({"type": kind, **data}, kind))[0] for kind, data in events]
    assert deltas == [None, "Hi", " there", None]
    assert recorded_outputs(RESPONSES, reader.result(), 100) == {"answer": "Hi there"}
    assert reader.usage is not None and reader.usage.total_tokens == 3
    cut = StreamAccumulator(RESPONSES, drop_usage_chunk=False)  # a client that left before the end
    cut.feed(sse({"type": "response.output_text.delta", "delta": "Hi"}))
    assert recorded_outputs(RESPONSES, cut.result(), 100) == {"answer": "Hi"}
