"""The event builders' fast paths give exactly what the library calls they replace would."""

from __future__ import annotations

import collections
import enum
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from shared.events.builders import _checked, dict_to_struct, new_event_id, now_timestamp, timestamp
from shared.events.errors import InvalidEventError


class Level(enum.IntEnum):
    HIGH = 3


VALUES: list[dict[str, Any]] = [
    {},
    {"empty_object": {}, "empty_list": []},
    {"a": [[], {}, None, True, False, 0, -1, 2**53, -(2**53), 1.5, -0.0, "é", "x" * 1000, "日本"]},
    {"tuple": (1, "two", (3.0,))},
    {"deep": {"b": {"c": {"d": [1, {"e": "f", "g": [None]}]}}}},
    collections.OrderedDict(a=1, b=collections.OrderedDict(c=[2])),  # not plain types: the checking pass
    {"enum": Level.HIGH, "mixed": [Level.HIGH, {"x": 1}]},
]


def reference_struct(value: dict[str, Any]) -> bytes:
    struct = Struct()
    struct.update(_checked(value, "$"))
    return struct.SerializeToString(deterministic=True)


@pytest.mark.parametrize("value", VALUES)
def test_dict_to_struct_bytes_equal_struct_update(value: dict[str, Any]) -> None:
    assert dict_to_struct(value).SerializeToString(deterministic=True) == reference_struct(value)


def test_empty_containers_stay_present() -> None:
    struct = dict_to_struct({"o": {}, "l": []})
    assert struct.fields["o"].WhichOneof("kind") == "struct_value"
    assert struct.fields["l"].WhichOneof("kind") == "list_value"


@pytest.mark.parametrize(("value", "message"), [
    ({"a": 2**60}, "not a JSON object: $.a: integer 1152921504606846976 does not fit a double exactly"),
    ({"a": [1, {"b": float("nan")}]}, "not a JSON object: $.a[1].b: nan is not a JSON number"),
    ({1: 2}, "not a JSON object: $: key 1 is not a string"),
    ({"a": {2: 1}}, "not a JSON object: $.a: key 2 is not a string"),
    ({"a": object()}, "not a JSON object: $.a: object is not a JSON value"),
    # Every value is checked before any is stored: the integer is named, not the surrogate.
    ({"a": "\ud800", "b": 2**60}, "not a JSON object: $.b: integer 1152921504606846976 does not fit a double exactly"),
])
def test_dict_to_struct_errors_name_the_first_offending_path(value: dict[Any, Any], message: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        dict_to_struct(value)
    assert str(caught.value) == message


def test_timestamp_equals_from_datetime() -> None:
    draw = random.Random(7)
    for _ in range(5000):
        zone = timezone(timedelta(minutes=draw.randint(-1439, 1439)))
        moment = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=draw.randint(-10**16, 10**17))).astimezone(zone)
        expected = Timestamp()
        expected.FromDatetime(moment)
        assert timestamp(moment) == expected, moment


def test_timestamp_beyond_year_9999_still_refused() -> None:
    with pytest.raises(OverflowError):
        timestamp(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))


def test_now_timestamp_is_now_to_the_microsecond() -> None:
    before = datetime.now(UTC)
    stamp = now_timestamp()
    after = datetime.now(UTC)
    assert stamp.nanos % 1000 == 0
    assert before - timedelta(milliseconds=1) <= stamp.ToDatetime(tzinfo=UTC) <= after


def test_new_event_id_holds_the_time_and_74_random_bits() -> None:
    import time

    before = time.time_ns() // 1_000_000
    values = [uuid.UUID(new_event_id()).int for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert all(before <= value >> 80 <= after for value in values)  # unix ms: ids sort by time
    random_bits = (1 << 76) - 1 & ~(0b11 << 62)  # rand_a (bits 64-75) and rand_b (0-61)
    varied = 0
    for value in values:
        varied |= value ^ values[0]
    assert varied & random_bits == random_bits  # each random bit takes both values
    assert varied & ~random_bits & ((1 << 80) - 1) == 0  # version and variant never vary


def test_new_event_id_is_a_uuid7_in_canonical_text() -> None:
    for _ in range(1000):
        text = new_event_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("now_ns", [1_700_000_000_123_456_789, 1_700_000_000_000_000_000, 1_700_000_001_000_999])
def test_fill_next_meta_writes_the_bytes_next_meta_did(monkeypatch: pytest.MonkeyPatch, now_ns: int) -> None:
    # The processor fills each evaluation's meta in place (fill_next_meta) instead of building it
    # apart and copying it in; the event on the wire must not change. Same clock, same random bytes:
    from shared.events import builders
    from shared.events.messages import Evaluation, EventMeta

    monkeypatch.setattr(builders.time, "time_ns", lambda: now_ns)
    monkeypatch.setattr(builders.os, "urandom", lambda n: bytes(range(n)))
    request = builders.new_meta(
        request_id="r1", deployment="shop", request_start_time=datetime(2026, 12, 7, 6, 0, tzinfo=UTC),
        variant="b", run_id="run-1", traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="k=v",
    )
    request.event_time.nanos = 999  # the response's own time, which the evaluation's replaces
    before = EventMeta()  # what next_meta did before it was written in terms of fill_next_meta
    before.CopyFrom(request)
    before.event_id = new_event_id()
    before.event_time.CopyFrom(now_timestamp())
    built = Evaluation(meta=before, metric="relevance", evaluator="relevance", evaluator_version="v1")
    filled = Evaluation(metric="relevance", evaluator="relevance", evaluator_version="v1")
    builders.fill_next_meta(filled.meta, request)

    assert filled.SerializeToString(deterministic=True) == built.SerializeToString(deterministic=True)
    assert builders.next_meta(request) == before
