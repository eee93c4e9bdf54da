"""Making events: fresh ids and times, the request context, and JSON objects as Structs."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from shared.events.errors import InvalidEventError
from shared.events.messages import EventMeta

# Integers beyond this do not survive a double (Struct numbers are doubles), so they are
# refused rather than silently rounded.
_MAX_EXACT_INTEGER = 2**53
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799  # 0001-01-01, 9999-12-31T23:59:59 UTC


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562) as text: unique, and ordered by creation time.

    Time order keeps consecutive inserts on neighbouring index pages, where a random UUIDv4
    would touch a random page of the dedup index for every event.
    """
    unix_ms = time.time_ns() // 1_000_000
    rand = os.urandom(10)  # 80 bits; 74 are used
    # 48 bits of time, version 7 over the high nibble of rand_a, variant 0b10 over the top of
    # rand_b, written as bytes and hex: the text of str(uuid.UUID(...)) without building a UUID
    # or an 128-bit int (several ids per request on the gateway's hot path: 2.9 -> 1.5 us).
    hex_ = ((unix_ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
            + bytes((0x70 | rand[0] & 0x0F, rand[1], 0x80 | rand[2] & 0x3F)) + rand[3:]).hex()
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def timestamp(moment: datetime | None = None) -> Timestamp:
    """``moment`` (timezone-aware) as a Timestamp; now when omitted.

    A naive datetime is refused: protobuf would read it as UTC, which is wrong on any machine
    whose local zone is not UTC, and silently so.
    """
    if moment is None:
        return now_timestamp()
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidEventError(f"naive datetime {moment!r}: give it a timezone")
    # What Timestamp.FromDatetime gives, in exact integer arithmetic (timedelta) instead of its
    # calendar.timegm over a time tuple.
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    if not _FIRST_SECOND <= seconds <= _LAST_SECOND:  # beyond years 1-9999: FromDatetime says so
        Timestamp().FromDatetime(moment)
    return Timestamp(seconds=seconds, nanos=delta.microseconds * 1000)


def now_timestamp() -> Timestamp:
    """Now as a Timestamp, to the microsecond like ``timestamp(datetime.now(UTC))``, read from
    the clock directly: FromDatetime's calendar arithmetic is most of an event header's cost."""
    seconds, nanos = _now()
    return Timestamp(seconds=seconds, nanos=nanos)


def _now() -> tuple[int, int]:
    """(seconds, nanos) of now, to the microsecond."""
    micros = time.time_ns() // 1000
    return micros // 1_000_000, micros % 1_000_000 * 1000


def to_datetime(stamp: Timestamp) -> datetime:
    """A Timestamp as a timezone-aware UTC datetime (microsecond precision)."""
    return stamp.ToDatetime(tzinfo=UTC)


def new_meta(
    *,
    request_id: str,
    deployment: str,
    request_start_time: datetime | Timestamp | None,
    variant: str = "",
    run_id: str = "",
    traceparent: str = "",
    tracestate: str = "",
) -> EventMeta:
    """The header of a new event about one request, with a fresh event id and event time.

    ``request_start_time`` may be None only for feedback, which may not know it.
    """
    meta = EventMeta(
        event_id=new_event_id(),
        event_time=now_timestamp(),
        request_id=request_id,
        deployment=deployment,
        variant=variant,
        run_id=run_id,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    if isinstance(request_start_time, datetime):
        meta.request_start_time.CopyFrom(timestamp(request_start_time))
    elif request_start_time is not None:
        meta.request_start_time.CopyFrom(request_start_time)
    return meta


def next_meta(meta: EventMeta) -> EventMeta:
    """The same request context as ``meta`` with a fresh event id and time: the header for the
    next event about the same request (e.g. the response after the request)."""
    follow_up = EventMeta()
    fill_next_meta(follow_up, meta)
    return follow_up


def fill_next_meta(target: EventMeta, meta: EventMeta) -> None:
    """Make ``target`` (an event's own ``meta``) what :func:`next_meta` returns, in place: an
    event built with ``meta=next_meta(...)`` copies the header twice (the processor makes one
    per evaluation, docs/processor.md "Session 10")."""
    target.CopyFrom(meta)
    target.event_id = new_event_id()
    stamp = target.event_time
    stamp.seconds, stamp.nanos = _now()  # now_timestamp's, set on the field rather than copied in


def dict_to_struct(mapping: Mapping[str, Any]) -> Struct:
    """A JSON object (str keys; str, number, bool, None, list and dict values) as a Struct.

    Raises InvalidEventError naming the first offending path: NaN and infinity (JSON has no
    such numbers, so Postgres jsonb and any JSON reader would reject the event later), integers
    a double cannot hold exactly, and non-JSON types.
    """
    struct = Struct()
    try:
        # One pass that checks and fills (every request and response event's inputs/outputs);
        # it knows only plain JSON types and gives up at anything else, valid or not.
        _fill_struct(struct, mapping)
        return struct
    except (TypeError, ValueError):
        pass
    # The checking pass: subclasses (an OrderedDict, an IntEnum) and the error naming the path.
    struct = Struct()
    try:
        struct.update(_checked(mapping, "$"))
    except (TypeError, ValueError) as exc:  # defensive: _checked should have caught it
        raise InvalidEventError(f"not a JSON object: {exc}") from exc
    return struct


def _fill_struct(struct: Struct, mapping: Mapping[str, Any]) -> None:
    fields = struct.fields
    for key, item in mapping.items():
        if type(key) is not str:
            raise TypeError(key)
        _fill_value(fields[key], item)


def _fill_value(target: Value, value: Any) -> None:
    """What Struct.update does for one value (Clear() included: it makes an empty dict or list
    a present struct_value or list_value), for exact JSON types only."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif value is None:
        target.null_value = 0  # type: ignore[assignment]
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if abs(value) > _MAX_EXACT_INTEGER:
            raise ValueError(value)
        target.number_value = value
    elif kind is float:
        if not math.isfinite(value):
            raise ValueError(value)
        target.number_value = value
    elif kind is dict:
        target.struct_value.Clear()
        _fill_struct(target.struct_value, value)
    elif kind is list or kind is tuple:
        target.list_value.Clear()
        values = target.list_value.values
        for item in value:
            _fill_value(values.add(), item)
    else:
        raise TypeError(kind)


def struct_to_dict(struct: Struct) -> dict[str, Any]:
    """A Struct as plain JSON values. Whole numbers come back as int (Struct stores every
    number as a double, so 3 would otherwise come back as 3.0)."""
    return _restore_ints(json_format.MessageToDict(struct))


def _checked(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise InvalidEventError(f"{path}: key {key!r} is not a string")
        return {key: _checked(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_checked(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_EXACT_INTEGER:
            raise InvalidEventError(f"{path}: integer {value} does not fit a double exactly")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEventError(f"{path}: {value} is not a JSON number")
        return value
    raise InvalidEventError(f"{path}: {type(value).__name__} is not a JSON value")


def _restore_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _restore_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore_ints(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT_INTEGER:
        return int(value)
    return value
