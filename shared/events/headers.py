"""Kafka headers of an event: read them to route or skip a record without decoding its body.

Accepts headers the way Kafka clients hand them over: aiokafka's sequence of
``(name, bytes)`` pairs, a mapping (faust), or None when a record has no headers. When a name
repeats, the last value wins, as with the Java client's ``lastHeader``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.events.errors import EventDecodeError

EVENT_TYPE_HEADER = "pp-event-type"
SCHEMA_VERSION_HEADER = "pp-schema-version"
DEPLOYMENT_HEADER = "pp-deployment"
# W3C names, so OpenTelemetry's Kafka propagation reads and writes the same headers.
TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None


def header(headers: Headers, name: str) -> str | None:
    """The header's value as text, or None when absent.

    Raises EventDecodeError("malformed-header") when the headers are not name/bytes pairs or
    the value is not UTF-8.
    """
    if headers is None:
        return None
    try:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        found = None
        for key, value in pairs:
            if key == name:
                found = value
        if found is None:  # Kafka allows a header with a null value: same as absent
            return None
        if not isinstance(found, bytes | bytearray | memoryview):
            raise TypeError(f"value is {type(found).__name__}, not bytes")
        return bytes(found).decode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError("malformed-header", f"header {name!r}: {exc}") from exc


def event_type(headers: Headers) -> str | None:
    """The event type (e.g. ``inference.request``), or None when the record has none."""
    return header(headers, EVENT_TYPE_HEADER)


def schema_version(headers: Headers) -> str | None:
    return header(headers, SCHEMA_VERSION_HEADER)


def deployment(headers: Headers) -> str | None:
    return header(headers, DEPLOYMENT_HEADER)


def traceparent(headers: Headers) -> str | None:
    return header(headers, TRACEPARENT_HEADER)
