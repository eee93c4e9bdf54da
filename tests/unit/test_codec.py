"""The event codec: every event type round-trips with every field and headers are right (a record
that is not a valid event: test_codec_bad_records.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.message import Message

from shared.events import builders
from shared.events.builders import (
    dict_to_struct,
    new_event_id,
    new_meta,
    next_meta,
    struct_to_dict,
    timestamp,
    to_datetime,
)
from shared.events.codec import (
    EVENT_TYPES,
    decode,
    decode_alert_json,
    encode,
    event_key,
    type_name,
)
from shared.events.errors import InvalidEventError
from shared.events.headers import deployment, event_type, traceparent
from shared.events.messages import (
    Alert,
    AlertState,
    AlertStatistic,
    Evaluation,
    EvaluationErrorType,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    JudgeCall,
    LlmUsage,
    TokenChunk,
)

START = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def meta(**overrides):
    fields = dict(
        request_id="req-1",
        deployment="support-bot",
        request_start_time=START,
        variant="v2",
        run_id="run-7",
        traceparent=TRACEPARENT,
        tracestate="vendor=abc",
    )
    fields.update(overrides)
    return new_meta(**fields)


def judge() -> JudgeCall:
    return JudgeCall(
        model="gpt-4o-mini",
        prompt_version="groundedness@3",
        prompt_tokens=812,
        completion_tokens=41,
        latency_ms=930.5,
    )


def samples() -> dict[str, Message]:
    """One event per type and per evaluation outcome, with every field set to a non-default."""
    return {
        "request": InferenceRequest(
            meta=meta(),
            inputs=dict_to_struct({"question": "Où est mon colis ?", "k": 3, "tags": ["a", None]}),
            client_request_id="client-42",
            streaming=True,
        ),
        "token": TokenChunk(
            meta=meta(),
            output="answer",
            sequence=4,
            token_offset=120,
            token_count=8,
            text=" your parcel is",
        ),
        "response": InferenceResponse(
            meta=meta(),
            status=InferenceStatus.INFERENCE_STATUS_ERROR,
            error_type="llm_rate_limited",
            error_message="429 from the model endpoint",
            latency_ms=1234.5,
            time_to_first_token_ms=210.25,
            usage=[
                LlmUsage(
                    node="answer",
                    model="gpt-4o",
                    prompt_tokens=300,
                    completion_tokens=50,
                    total_tokens=350,
                ),
                LlmUsage(
                    node="rewrite",
                    model="gpt-4o-mini",
                    prompt_tokens=2**40,
                    completion_tokens=1,
                    total_tokens=2**40 + 1,
                ),
            ],
            outputs=dict_to_struct({"answer": "Tomorrow.", "nested": {"ok": True}}),
        ),
        "scored": Evaluation(
            meta=meta(),
            metric="groundedness",
            judge=judge(),
            scored=Evaluation.Scored(
                score=4, reason="Supported by the context.", value=0.75, label="supported"
            ),
            evaluator="groundedness",
            evaluator_version="3f2a9c01",
            rejudge_id="rj-1",
        ),
        "not_applicable": Evaluation(
            meta=meta(),
            metric="groundedness",
            judge=judge(),
            not_applicable=Evaluation.NotApplicable(reason="no context column"),
            evaluator="groundedness",
            evaluator_version="3f2a9c01",
            rejudge_id="rj-1",
        ),
        "error": Evaluation(
            meta=meta(),
            metric="relevance",
            judge=judge(),
            error=Evaluation.Error(
                type=EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE,
                message="no score in judge output",
            ),
            evaluator="relevance",
            evaluator_version="3f2a9c01",
            rejudge_id="rj-1",
        ),
        "feedback": Feedback(
            meta=meta(), rating=-1, comment="wrong parcel", labels={"relevance": 2.0}
        ),
        "alert": Alert(
            event_id=new_event_id(),
            event_time=timestamp(),
            monitor_id="support-bot/groundedness",
            deployment="support-bot",
            variant="v2",
            metric="groundedness",
            statistic=AlertStatistic.ALERT_STATISTIC_PASS_RATE,
            state=AlertState.ALERT_STATE_FIRING,
            window_start=timestamp(START),
            window_end=timestamp(START + timedelta(minutes=15)),
            value=0.62,
            threshold=0.8,
            sample_count=57,
            confidence_low=0.49,
            confidence_high=0.74,
            message="pass rate 0.62 < 0.80 over 15 min",
            pass_score=3,
            silenced=True,
        ),
    }


def unset_fields(message: Message, path: str = "") -> list[str]:
    """Paths of fields left at their default, so 'every field survives' cannot pass vacuously."""
    missing = []
    for field in message.DESCRIPTOR.fields:
        name = path + field.name
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            if message.WhichOneof(oneof.name) != field.name:
                continue  # another member of a real oneof is set
        value = getattr(message, field.name)
        if field.is_repeated:
            if not value:
                missing.append(name)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                for index, item in enumerate(value):
                    missing += unset_fields(item, f"{name}[{index}].")
        elif field.message_type is not None:
            if not message.HasField(field.name):
                missing.append(name)
            elif not field.message_type.full_name.startswith("google.protobuf."):
                missing += unset_fields(value, name + ".")
        elif value == field.default_value:
            missing.append(name)
    return missing


SAMPLES = samples()


@pytest.mark.parametrize("kind", SAMPLES)
def test_every_event_round_trips_with_all_fields(kind):
    event = SAMPLES[kind]
    assert unset_fields(event) == []

    record = encode(event)
    decoded = decode(record.value, record.headers)

    assert type(decoded) is type(event)
    assert decoded == event


def test_every_event_type_and_outcome_has_a_sample():
    assert {type_name(e) for e in SAMPLES.values()} == set(EVENT_TYPES)
    outcomes = {e.WhichOneof("outcome") for e in SAMPLES.values() if isinstance(e, Evaluation)}
    assert outcomes == {f.name for f in Evaluation.DESCRIPTOR.oneofs_by_name["outcome"].fields}


def test_request_event_headers_carry_type_version_deployment_and_trace():
    record = encode(SAMPLES["scored"])

    assert record.headers == [
        ("pp-event-type", b"evaluation"),
        ("pp-schema-version", b"1"),
        ("pp-deployment", b"support-bot"),
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=abc"),
    ]
    assert event_type(record.headers) == "evaluation"
    assert deployment(record.headers) == "support-bot"
    assert traceparent(record.headers) == TRACEPARENT


def test_unknown_trace_context_and_start_time_are_left_out():
    feedback = Feedback(
        meta=new_meta(request_id="req-9", deployment="support-bot", request_start_time=None),
        rating=5,
    )

    record = encode(feedback)

    assert [name for name, _ in record.headers] == [
        "pp-event-type",
        "pp-schema-version",
        "pp-deployment",
    ]
    decoded = decode(record.value, record.headers)
    assert not decoded.meta.HasField("request_start_time")
    assert decoded.rating == 5


def test_alert_is_canonical_json_any_client_can_read():
    alert = SAMPLES["alert"]
    record = encode(alert)

    body = json.loads(record.value)  # plain json, no protobuf needed

    assert body["monitorId"] == "support-bot/groundedness"
    assert body["state"] == "ALERT_STATE_FIRING"
    assert body["statistic"] == "ALERT_STATISTIC_PASS_RATE"
    assert body["sampleCount"] == 57  # a JSON number, not a string
    assert body["windowStart"] == "2025-03-01T12:00:00.123456Z"
    assert record.headers[:3] == [
        ("pp-event-type", b"alert"),
        ("pp-schema-version", b"1"),
        ("pp-deployment", b"support-bot"),
    ]
    assert decode_alert_json(record.value) == alert


def test_alert_json_writes_zero_values_and_ignores_unknown_fields():
    alert = Alert()
    alert.CopyFrom(SAMPLES["alert"])
    alert.value = 0.0
    record = encode(alert)
    assert json.loads(record.value)["value"] == 0.0

    newer = json.loads(record.value) | {"fieldFromTheFuture": {"x": 1}}
    assert decode_alert_json(json.dumps(newer).encode()) == alert


def test_alert_json_reads_a_state_from_the_future_as_unspecified():
    # A newer aggregator may add alert states; an older reader must not dead-letter the alert.
    newer = json.loads(encode(SAMPLES["alert"]).value) | {"state": "ALERT_STATE_SNOOZED"}

    alert = decode_alert_json(json.dumps(newer).encode())

    assert alert.state == AlertState.ALERT_STATE_UNSPECIFIED
    assert alert.monitor_id == SAMPLES["alert"].monitor_id


def test_event_key_is_request_id_or_monitor_id():
    assert event_key(SAMPLES["token"]) == b"req-1"
    assert event_key(SAMPLES["alert"]) == b"support-bot/groundedness"


def test_encode_refuses_events_that_break_the_contract():
    # A score off the 1-5 scale is no contract breach: an evaluator may have its own scale, so
    # shared/plausibility.py judges it (tests/unit/test_plausibility.py).
    encode(Evaluation(meta=meta(), metric="m", scored=Evaluation.Scored(score=6)))
    with pytest.raises(InvalidEventError, match="no outcome"):
        encode(Evaluation(meta=meta(), metric="m"))
    with pytest.raises(InvalidEventError, match="no request_id"):
        encode(TokenChunk(meta=meta(request_id="")))
    with pytest.raises(InvalidEventError, match="no request_start_time"):
        encode(InferenceRequest(meta=meta(request_start_time=None)))
    with pytest.raises(InvalidEventError, match="no monitor_id"):
        encode(Alert(event_id="e", event_time=timestamp(), deployment="d"))
    with pytest.raises(InvalidEventError, match="not an event"):
        encode(LlmUsage(model="x"))


def test_event_ids_are_unique_uuid7_ordered_by_time(monkeypatch):
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}

    clock = iter([1_700_000_000_000_000_000, 1_700_000_000_001_000_000])
    monkeypatch.setattr(builders.time, "time_ns", lambda: next(clock))
    earlier, later = new_event_id(), new_event_id()
    assert earlier < later
    assert uuid.UUID(earlier).int >> 80 == 1_700_000_000_000


def test_next_meta_keeps_the_request_context_with_a_new_identity():
    first = meta()
    follow_up = next_meta(first)

    assert follow_up.event_id != first.event_id
    assert follow_up.request_id == first.request_id
    assert follow_up.request_start_time == first.request_start_time
    assert follow_up.traceparent == TRACEPARENT
    assert to_datetime(follow_up.request_start_time) == START


def test_timestamps_refuse_naive_datetimes_and_keep_the_zone():
    paris = timezone(timedelta(hours=1))
    assert to_datetime(timestamp(datetime(2025, 1, 1, 13, 0, tzinfo=paris))) == datetime(
        2025, 1, 1, 12, 0, tzinfo=UTC
    )
    with pytest.raises(InvalidEventError, match="naive"):
        timestamp(datetime(2025, 1, 1))


def test_struct_round_trip_restores_whole_numbers():
    document = {"s": "é", "i": 3, "f": 2.5, "b": False, "n": None, "l": [1, {"x": -7}], "d": {}}
    assert struct_to_dict(dict_to_struct(document)) == document
    assert isinstance(struct_to_dict(dict_to_struct({"i": 3}))["i"], int)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"x": float("nan")}, r"\$\.x"),
        ({"x": [1, float("inf")]}, r"\$\.x\[1\]"),
        ({"x": {"y": object()}}, r"\$\.x\.y"),
        ({"x": 2**60}, r"\$\.x"),
        ({1: "one"}, r"key 1"),
        ({"when": datetime(2025, 1, 1)}, r"\$\.when: datetime"),
    ],
)
def test_struct_refuses_what_json_cannot_hold(document, path):
    with pytest.raises(InvalidEventError, match=path):
        dict_to_struct(document)
