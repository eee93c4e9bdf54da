"""Records to raw rows or dead letters (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from services.aggregator.ingest.decode import Decoded, RecordDecoder, SamplingPolicy, TimeWindow
from services.aggregator.ingest.rows import EVALUATIONS, FEEDBACK, REQUESTS, RESPONSES, SPANS
from shared.events.builders import dict_to_struct, new_event_id, new_meta, next_meta
from shared.events.codec import encode
from shared.events.messages import (
    Evaluation,
    EvaluationErrorType,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    LlmUsage,
    TokenChunk,
)
from shared.sampling import is_sampled

NOW = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
WINDOW = TimeWindow(earliest=NOW - timedelta(days=30), latest=NOW + timedelta(hours=1))
SPANS_TOPIC = "pp.spans"


class FakeRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list


def _record(event: Any, topic: str = "pp.inference", offset: int = 0) -> FakeRecord:
    encoded = encode(event)
    return FakeRecord(topic, 0, offset, 1_700_000_000_000, b"k", encoded.value, encoded.headers)


def _decode(*records: FakeRecord, rate: float = 0.0) -> Decoded:
    return RecordDecoder(SPANS_TOPIC, SamplingPolicy({}, rate)).decode_batch(list(records), WINDOW)


def _meta(start: datetime = NOW, **kwargs: Any):
    return new_meta(request_id=new_event_id(), deployment="demo", request_start_time=start, **kwargs)


def test_request_payload_is_kept_only_when_sampled_or_part_of_a_batch_run() -> None:
    events = [InferenceRequest(meta=_meta(), inputs=dict_to_struct({"q": "x"})) for _ in range(200)]
    run = InferenceRequest(meta=_meta(run_id="run-1"), inputs=dict_to_struct({"q": "y"}))
    decoded = _decode(*(_record(e) for e in [*events, run]), rate=0.3)
    rows = decoded.rows[REQUESTS]
    for row in rows[:-1]:
        assert row.sampled == is_sampled(row.request_id, 0.3)
        assert (row.inputs is not None) == row.sampled
    assert 20 < sum(r.sampled for r in rows[:-1]) < 100
    assert rows[-1].inputs == '{"q":"y"}' and rows[-1].run_id == "run-1"


def test_response_row_sums_usage_and_names_errors() -> None:
    meta = _meta(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01")
    response = InferenceResponse(
        meta=meta,
        status=InferenceStatus.INFERENCE_STATUS_ERROR,
        latency_ms=120.5,
        usage=[
            LlmUsage(node="a", model="m1", prompt_tokens=10, completion_tokens=2, total_tokens=12),
            LlmUsage(node="b", model="m1", prompt_tokens=5, completion_tokens=1, total_tokens=6),
        ],
    )
    (row,) = _decode(_record(response)).rows[RESPONSES]
    assert (row.status, row.error_type, row.time_to_first_token_ms) == ("error", "unknown", None)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (15, 3, 18)
    assert [u["model"] for u in json.loads(row.usage)] == ["m1", "m1"]
    assert row.trace_id == "ab" * 16
    response.time_to_first_token_ms = 0.0
    (row,) = _decode(_record(response)).rows[RESPONSES]
    assert row.time_to_first_token_ms == 0.0, "a present zero is kept, not taken for absent"


def test_impossible_numbers_are_dead_lettered_with_their_reason() -> None:
    nan = InferenceResponse(meta=_meta(), latency_ms=float("nan"))
    negative = InferenceResponse(meta=_meta(), latency_ms=5, usage=[LlmUsage(model="m", prompt_tokens=-1)])
    decoded = _decode(_record(nan, offset=1), _record(negative, offset=2))
    assert [(d.kafka_offset, d.reason) for d in decoded.dead_letters] == [(1, "implausible-value"), (2, "implausible-value")]
    assert "latency_ms" in decoded.dead_letters[0].detail
    assert not decoded.rows


def test_evaluation_outcomes() -> None:
    meta = _meta()
    scored = Evaluation(meta=next_meta(meta), metric="relevance")
    scored.scored.score, scored.scored.reason = 4, "fine"
    scored.judge.model, scored.judge.prompt_tokens = "judge", 100
    failed = Evaluation(meta=next_meta(meta), metric="groundedness")
    failed.error.type = EvaluationErrorType.EVALUATION_ERROR_TYPE_RATE_LIMITED
    skipped = Evaluation(meta=next_meta(meta), metric="fluency")
    skipped.not_applicable.reason = "no answer"
    rows = _decode(*(_record(e, "pp.evaluations") for e in (scored, failed, skipped))).rows[EVALUATIONS]
    assert [(r.metric, r.outcome, r.score, r.error_type, r.judge_model) for r in rows] == [
        ("relevance", "scored", 4, None, "judge"),
        ("groundedness", "error", None, "rate_limited", None),
        ("fluency", "not_applicable", None, None, None),
    ]


def test_feedback_start_time_from_event_then_request_id_then_event_time() -> None:
    uuid7_id = new_event_id()
    with_start = Feedback(meta=_meta(), rating=1)
    from_id = Feedback(meta=new_meta(request_id=uuid7_id, deployment="demo", request_start_time=None))
    plain_id = Feedback(meta=new_meta(request_id="client-id-42", deployment="demo", request_start_time=None))
    window = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    decoder = RecordDecoder(SPANS_TOPIC, SamplingPolicy({}, 0))
    rows = decoder.decode_batch([_record(e, "pp.feedback") for e in (with_start, from_id, plain_id)], window).rows[FEEDBACK]
    assert [r.start_time_source for r in rows] == ["event", "request_id", "event_time"]
    assert rows[0].request_start_time == NOW
    assert abs(rows[1].request_start_time - datetime.now(UTC)) < timedelta(minutes=1)
    assert rows[2].request_start_time == rows[2].event_time
    assert rows[1].rating is None and rows[0].rating == 1


def test_nul_characters_never_reach_postgres() -> None:
    request = InferenceRequest(meta=_meta(run_id="r"), inputs=dict_to_struct({"k\x00": "a\x00b"}))
    request.client_request_id = "c\x00"
    (row,) = _decode(_record(request)).rows[REQUESTS]
    assert "\x00" not in row.inputs and "\\u0000" not in row.inputs
    assert json.loads(row.inputs) == {"k\ufffd": "a\ufffdb"}
    assert row.client_request_id == "c\ufffd"


def test_time_window() -> None:
    old = InferenceRequest(meta=_meta(NOW - timedelta(days=31)))
    future = InferenceRequest(meta=_meta(NOW + timedelta(days=2)))
    decoded = _decode(_record(old), _record(future, offset=9))
    assert decoded.too_old == 1 and not decoded.rows
    assert [(d.kafka_offset, d.reason) for d in decoded.dead_letters] == [(9, "time-out-of-range")]


def test_events_not_for_the_aggregator_are_skipped_and_garbage_is_dead_lettered() -> None:
    chunk = TokenChunk(meta=_meta(), text="hi")
    garbage = FakeRecord("pp.inference", 2, 5, -1, None, b"\x00\x01", [("pp-event-type", b"inference.request"), ("pp-schema-version", b"1")])
    decoded = _decode(_record(chunk), garbage)
    assert decoded.skipped == 1
    (letter,) = decoded.dead_letters
    assert (letter.reason, letter.kafka_partition, letter.kafka_offset, letter.kafka_timestamp) == ("malformed-body", 2, 5, None)
    assert json.loads(letter.headers)[0] == {"name": "pp-event-type", "value": "inference.request"}


def _spans_record(*spans: Span, service: str = "gateway") -> FakeRecord:
    export = ExportTraceServiceRequest()
    resource = export.resource_spans.add()
    attribute = resource.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", service
    scope = resource.scope_spans.add()
    scope.scope.name = "tests"
    scope.spans.extend(spans)
    return FakeRecord(SPANS_TOPIC, 0, 0, 0, b"t", export.SerializeToString(), [])


def _span(span_id: int, parent: int | None = None, start: datetime = NOW) -> Span:
    span = Span(trace_id=bytes(range(1, 17)), span_id=span_id.to_bytes(8, "big"), name=f"s{span_id}",
                kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=int(start.timestamp()) * 10**9 + 123_456_789)
    span.end_time_unix_nano = span.start_time_unix_nano + 2_500_000
    if parent is not None:
        span.parent_span_id = parent.to_bytes(8, "big")
    span.status.code = Status.STATUS_CODE_ERROR
    attribute = span.attributes.add()
    attribute.key, attribute.value.string_value = "promptpulse.request_id", "req-1"
    event = span.events.add()
    event.name, event.time_unix_nano = "gen_ai.evaluation.result", span.start_time_unix_nano
    return span


def test_spans_become_rows_of_a_tree() -> None:
    rows = _decode(_spans_record(_span(1), _span(2, parent=1))).rows[SPANS]
    root, child = rows
    assert root.trace_id == bytes(range(1, 17)).hex() and root.parent_span_id is None
    assert child.parent_span_id == root.span_id == "0000000000000001"
    assert (child.kind, child.status_code, child.service_name, child.scope_name) == ("client", "error", "gateway", "tests")
    assert child.duration_ms == 2.5 and child.start_time == NOW + timedelta(microseconds=123_456)
    assert child.request_id == "req-1"
    assert json.loads(child.events)[0]["name"] == "gen_ai.evaluation.result"


def test_bad_spans_are_dead_lettered_and_old_spans_skipped() -> None:
    no_ids = Span(name="x", start_time_unix_nano=1)
    decoded = _decode(_spans_record(no_ids), FakeRecord(SPANS_TOPIC, 0, 1, 0, None, b"\xff\xff", []))
    assert [d.reason for d in decoded.dead_letters] == ["invalid-span", "malformed-body"]
    decoded = _decode(_spans_record(_span(1, start=NOW - timedelta(days=40)), _span(2)))
    assert decoded.too_old == 1 and len(decoded.rows[SPANS]) == 1
