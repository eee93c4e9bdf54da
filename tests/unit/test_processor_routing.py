"""Routing a record from its key and headers, and peeking the batch-run id without a full decode."""

from __future__ import annotations

from datetime import UTC, datetime

from services.processor.routing import REQUEST, RESPONSE, peek_run_id, read_route
from shared.events.builders import dict_to_struct, new_meta
from shared.events.codec import encode
from shared.events.messages import InferenceRequest


def _request(run_id: str = "") -> InferenceRequest:
    meta = new_meta(request_id="r-1", deployment="shop", request_start_time=datetime.now(UTC), run_id=run_id)
    return InferenceRequest(meta=meta, inputs=dict_to_struct({"question": "x" * 5000}))


def test_route_reads_type_deployment_trace_and_key() -> None:
    record = encode(_request())
    route = read_route(b"r-1", record.headers)
    assert (route.kind, route.deployment, route.request_id, route.readable) == (REQUEST, "shop", "r-1", True)
    response_headers = [("pp-event-type", b"inference.response"), ("traceparent", b"00-ab-cd-01")]
    route = read_route(b"r-1", dict(response_headers))  # faust may hand a mapping
    assert route.kind == RESPONSE and route.traceparent == "00-ab-cd-01" and route.deployment is None


def test_unreadable_headers_or_key_ask_for_a_decode() -> None:
    assert not read_route(b"r", [("pp-event-type", b"\xff\xfe")]).readable
    assert not read_route(b"\xff", [("pp-event-type", b"inference.request")]).readable
    assert not read_route(b"r", 42).readable
    assert read_route(None, None).request_id is None


def test_peek_finds_the_run_id_without_reading_the_inputs() -> None:
    assert peek_run_id(encode(_request()).value) == ""
    assert peek_run_id(encode(_request(run_id="run-9")).value) == "run-9"


def test_peek_gives_up_on_anything_unexpected() -> None:
    value = encode(_request(run_id="run-9")).value
    assert peek_run_id(b"") is None
    assert peek_run_id(b"\x12\x03abc") is None  # does not start with field 1
    assert peek_run_id(value[:10]) is None  # cut inside the meta
    assert peek_run_id(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff") is None  # runaway varint
    assert peek_run_id("text") is None
