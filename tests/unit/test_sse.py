"""shared/sse.py: the one SSE encoder and parser. The bytes each service's stream sends are
pinned here as they were before the encoders were merged (clients and tests parse them), and
the parser's contract is checked at every chunk boundary. Pure units."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.aggregator.api.stream import StreamEvent
from services.aggregator.api.stream_route import frame as aggregator_frame
from services.gateway.routes.stream import sse_event
from services.llmsim.streaming import DONE, Completion
from shared import sse
from shared.sse import SseEvent, SseParser

pytestmark = pytest.mark.timeout(30)


# -- the bytes of every stream, as they were ---------------------------------------------------


def test_gateway_frames_are_unchanged() -> None:
    assert sse_event("delta", {"delta": 'Größe \u2028 "q"\nx'}) == (
        b'event: delta\ndata: {"delta":"Gr\xc3\xb6\xc3\x9fe \xe2\x80\xa8 \\"q\\"\\nx"}\n\n')
    done = {"outputs": {"answer": "a"}, "request_id": "r1", "variant": "variant_0", "usage": [],
            "time_to_first_token_ms": 212.4}
    assert sse_event("done", done) == (
        b'event: done\ndata: {"outputs":{"answer":"a"},"request_id":"r1","variant":"variant_0",'
        b'"usage":[],"time_to_first_token_ms":212.4}\n\n')
    with pytest.raises(ValueError):
        sse_event("done", {"x": float("nan")})


def test_aggregator_frames_are_unchanged() -> None:
    event = StreamEvent("snapshot", {"deployment": "shop", "at": datetime(2026, 1, 2, 3, 4, tzinfo=UTC), "v": "é"}, 7)
    assert aggregator_frame(event) == (
        b'id: 7\nevent: snapshot\ndata: {"deployment":"shop","at":"2026-01-02T03:04:00+00:00","v":"\xc3\xa9"}\n\n')
    assert sse.retry(3000) == b"retry: 3000\n\n"
    assert sse.comment("keepalive") == b": keepalive\n\n"


def test_llmsim_chunks_are_openai_bytes_unchanged() -> None:
    completion = Completion("chatcmpl-1", 1700000000, "gpt-4o-mini", "Hi é", "stop", 3, 2)
    head = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",' \
           b'"system_fingerprint":"llmsim","choices":'
    assert completion.chunk({"role": "assistant", "content": ""}, None, with_usage_field=True) == head + (
        b'[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}\n\n')
    # OpenAI escapes non-ASCII text in its chunks; so does llmsim.
    assert completion.chunk({"content": "é\n"}, None, with_usage_field=False) == head + (
        b'[{"index":0,"delta":{"content":"\\u00e9\\n"},"logprobs":null,"finish_reason":null}]}\n\n')
    assert completion.usage_chunk() == head + (
        b'[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n')
    assert DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize("value", [
    {"delta": ""}, {"delta": "line one\nsystem:\n\ndata: fake\r\n"}, {"n": 1.5e300, "t": None, "l": [1, "ü", "\u2029"]},
    "plain", ["\x00", "\ud7ff", "😀"], {"nested": {"deep": [{"x": True}]}},
])
def test_json_frame_matches_the_encoders_it_replaced(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert sse.json_frame(value, event="delta") == f"event: delta\ndata: {text}\n\n".encode()
    assert sse.json_frame(value, event="metrics", id=12) == f"id: 12\nevent: metrics\ndata: {text}\n\n".encode()
    assert sse.frame(text) == f"data: {text}\n\n".encode()


# -- encoding: the contract ------------------------------------------------------------------


def test_prompt_flow_serve_format_is_plain_data_frames() -> None:
    # pf flow serve: one unnamed event per chunk, its data a JSON object of the output's chunk.
    assert sse.frame(json.dumps({"answer": "Hello"})) == b'data: {"answer": "Hello"}\n\n'


@pytest.mark.parametrize("data", ["a\nb", "a\r\nb", "a\rb", "a\n\nb\n", "", "\n"])
def test_line_breaks_in_data_come_back_exactly_as_lf(data: str) -> None:
    events = list(SseParser().feed(sse.frame(data, event="x")))
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [SseEvent("x", expected)]


def test_fields_cannot_smuggle_a_line_break() -> None:
    for bad in ({"event": "a\ndata: b"}, {"id": "1\r"}):
        with pytest.raises(ValueError, match="line break"):
            sse.frame("x", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        sse.comment("a\nb")
    assert sse.comment() == b":\n\n"


def test_json_frame_refuses_nan_and_uses_default() -> None:
    with pytest.raises(ValueError):
        sse.json_frame({"x": float("inf")})
    assert sse.json_frame({"at": datetime(2026, 1, 1, tzinfo=UTC)}, default=lambda v: v.isoformat()) == (
        b'data: {"at":"2026-01-01T00:00:00+00:00"}\n\n')


# -- parsing ---------------------------------------------------------------------------------

STREAM = (b"retry: 3000\n\n"
          b"id: 1\nevent: snapshot\ndata: {\"a\":\ndata: 1}\n not a field\n\n"
          b": keepalive\n\n"
          b"event: metrics\r\ndata: {\"b\": 2}\r\n\r\n"
          b"data: plain\rdata: two\r\r"
          b"event: ignored-without-data\n\n"
          b"data: \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\n\n")
EXPECTED = [SseEvent("snapshot", '{"a":\n1}', "1"), SseEvent("metrics", '{"b": 2}', "1"),
            SseEvent("message", "plain\ntwo", "1"), SseEvent("message", "été 😀", "1")]


def test_events_in_one_chunk() -> None:
    assert list(SseParser().feed(STREAM)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_events_split_at_every_boundary(size: int) -> None:
    # size 1 splits every multi-byte character and every CRLF.
    parser = SseParser()
    events = []
    for start in range(0, len(STREAM), size):
        events += parser.feed(STREAM[start:start + size])
    assert events == EXPECTED


def test_event_json_and_long_lines() -> None:
    big = "x" * 300_000  # a snapshot can be large: no line length limit
    parser = SseParser()
    events = []
    payload = f'event: snapshot\ndata: {{"big": "{big}"}}\n\n'.encode()
    for start in range(0, len(payload), 4096):
        events += parser.feed(payload[start:start + 4096])
    assert events[0].json() == {"big": big}


async def test_read_events_drops_an_event_cut_off_by_the_end() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b"event: delta\ndata: 1\n"
        yield b"\nevent: done\ndata: 2"

    assert [e async for e in sse.read_events(chunks())] == [SseEvent("delta", "1")]


def test_every_stream_round_trips_through_the_parser() -> None:
    completion = Completion("c", 1, "m", "x", "stop", 1, 1)
    wire = (sse.retry(3000) + aggregator_frame(StreamEvent("metrics", {"v": "é\n"}, 3)) + sse.comment("keepalive")
            + sse_event("delta", {"delta": "a\r\nb"}) + completion.chunk({"content": "y"}, None, with_usage_field=False)
            + DONE)
    events = list(SseParser().feed(wire))
    assert [(e.name, e.id) for e in events] == [("metrics", "3"), ("delta", "3"), ("message", "3"), ("message", "3")]
    assert events[0].json() == {"v": "é\n"} and events[1].json() == {"delta": "a\r\nb"}
    assert events[2].json()["choices"][0]["delta"] == {"content": "y"} and events[3].data == "[DONE]"
