"""Events to Kafka records and back.

Internal topics carry protobuf binary. The alerts topic carries protobuf's canonical JSON, so
any Kafka client can read alerts without our schema. Every record gets headers naming its event
type, schema version, deployment and trace context, so a consumer can route or skip it without
decoding the body.

Producing::

    record = encode(event)
    await producer.send(topic, value=record.value, key=event_key(event), headers=record.headers)

Consuming (a decode failure is a counted, dead-lettered record, never a crashed consumer)::

    try:
        event = decode(message.value, message.headers)
    except EventDecodeError as exc:
        dead_letter(message, reason=exc.reason)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, TypeVar

from google.protobuf import json_format

from shared.events.errors import EventDecodeError, InvalidEventError
from shared.events.headers import (
    DEPLOYMENT_HEADER,
    EVENT_TYPE_HEADER,
    SCHEMA_VERSION_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    Headers,
    event_type,
    schema_version,
)
from shared.events.messages import (
    Alert,
    Evaluation,
    Event,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    TokenChunk,
)
from shared.events.validation import validate

# Written on every record. Stays "1" through compatible changes (see the proto's header).
SCHEMA_VERSION = "1"
SUPPORTED_SCHEMA_VERSIONS = frozenset({"1"})

E = TypeVar("E", bound=Event)

# The event type names are part of the wire contract (the pp-event-type header).
EVENT_TYPES: dict[str, type[Event]] = {
    "inference.request": InferenceRequest,
    "inference.response": InferenceResponse,
    "token.chunk": TokenChunk,
    "evaluation": Evaluation,
    "feedback": Feedback,
    "alert": Alert,
}
_TYPE_NAMES: dict[type[Event], str] = {cls: name for name, cls in EVENT_TYPES.items()}


class EncodedEvent(NamedTuple):
    """A Kafka record's value and headers (the header list aiokafka's ``send`` takes)."""

    value: bytes
    headers: list[tuple[str, bytes]]


def type_name(event: Event) -> str:
    """The event's type as written in the ``pp-event-type`` header."""
    try:
        return _TYPE_NAMES[type(event)]
    except KeyError:
        raise InvalidEventError(f"{type(event).__name__} is not an event") from None


def encode(event: Event) -> EncodedEvent:
    """Validate ``event`` and turn it into a record value and headers.

    Raises InvalidEventError when the event breaks the contract (see shared.events.validation),
    so a bad event is a bug at its producer, never a poison record on the topic.
    """
    name = type_name(event)
    validate(event)
    if isinstance(event, Alert):
        value = encode_alert_json(event)
    else:
        # Deterministic: Struct is a map, and equal events should give equal bytes.
        value = event.SerializeToString(deterministic=True)
    return EncodedEvent(value, event_headers(event, name))


def event_headers(event: Event, name: str | None = None) -> list[tuple[str, bytes]]:
    """The headers ``encode`` writes for ``event``: type, schema version, and the deployment and
    trace context when known."""
    headers = [
        (EVENT_TYPE_HEADER, (name or type_name(event)).encode()),
        (SCHEMA_VERSION_HEADER, SCHEMA_VERSION.encode()),
    ]
    if isinstance(event, Alert):
        known = [(DEPLOYMENT_HEADER, event.deployment)]
    else:
        meta = event.meta
        known = [
            (DEPLOYMENT_HEADER, meta.deployment),
            (TRACEPARENT_HEADER, meta.traceparent),
            (TRACESTATE_HEADER, meta.tracestate),
        ]
    headers.extend((key, text.encode()) for key, text in known if text)
    return headers


def event_key(event: Event) -> bytes:
    """The Kafka key: the request id (one request's events stay in order on one partition), or
    the monitor id for an alert."""
    if isinstance(event, Alert):
        return event.monitor_id.encode()
    return event.meta.request_id.encode()


def decode(value: bytes | None, headers: Headers) -> Event:
    """The event in a Kafka record, validated.

    Raises EventDecodeError, and nothing else, for any record that is not a valid event of a
    known type and supported schema version; its ``reason`` says which check failed.
    """
    if headers is not None and not isinstance(headers, Mapping):
        # Read twice below: a one-shot iterator would lose the version header on the way.
        try:
            headers = list(headers)
        except TypeError as exc:
            raise EventDecodeError("malformed-header", f"headers: {exc}") from exc
    name = event_type(headers)
    if name is None:
        raise EventDecodeError("missing-event-type", f"no {EVENT_TYPE_HEADER} header")
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise EventDecodeError("unknown-event-type", f"{EVENT_TYPE_HEADER}={name!r}")
    version = schema_version(headers)
    if version is None:
        raise EventDecodeError("missing-schema-version", f"no {SCHEMA_VERSION_HEADER} header")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise EventDecodeError("unsupported-schema-version", f"{name} version {version!r}")
    if cls is Alert:
        return decode_alert_json(value)
    body = _body(value, name)
    event = cls()
    try:
        event.ParseFromString(body)
    # protobuf raises DecodeError for bad bytes, but a broken Struct or string can surface as
    # other types depending on the backend (upb, python); a consumer must never crash on input.
    except Exception as exc:
        raise EventDecodeError("malformed-body", f"{name}: {exc}") from exc
    return _validated(event, name)


def encode_alert_json(alert: Alert) -> bytes:
    """An alert as protobuf's canonical JSON (UTF-8, one line). Fields at their zero value are
    written too, so a reader finds ``"value": 0.0`` rather than a missing key."""
    text = json_format.MessageToJson(alert, indent=None, always_print_fields_with_no_presence=True)
    return text.encode()


def decode_alert_json(value: bytes | None) -> Alert:
    """An alert from its JSON, validated; works without headers. Fields unknown to this version
    are ignored, so newer producers do not break older readers.

    Raises EventDecodeError, and nothing else.
    """
    body = _body(value, "alert")
    alert = Alert()
    try:
        # ignore_unknown_fields also reads an enum name added later as its zero value.
        json_format.Parse(body.decode("utf-8"), alert, ignore_unknown_fields=True)
    except Exception as exc:  # ParseError, UnicodeDecodeError, RecursionError on deep nesting...
        raise EventDecodeError("malformed-body", f"alert: {exc}") from exc
    return _validated(alert, "alert")


def _body(value: object, name: str) -> bytes:
    if value is None or (isinstance(value, bytes | bytearray | memoryview) and len(value) == 0):
        raise EventDecodeError("empty-body", f"{name} record has no value")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise EventDecodeError("malformed-body", f"{name} value is {type(value).__name__}")
    return bytes(value)


def _validated(event: E, name: str) -> E:
    try:
        validate(event)
    except InvalidEventError as exc:
        raise EventDecodeError("invalid-event", f"{name}: {exc}") from exc
    return event
