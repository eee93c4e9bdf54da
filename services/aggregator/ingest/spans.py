"""OTLP spans (one ``ExportTraceServiceRequest`` per Kafka message) to span rows.

A trace may arrive in several messages and a message may be redelivered; rows are keyed by
(trace id, span id, start time), so every copy after the first is skipped on insert.
Span links are not stored (nothing reads them yet); events and attributes are, as JSON.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from services.aggregator.ingest.rows import SpanRow
from services.aggregator.ingest.values import (
    InvalidValue,
    clean_text,
    from_unix_nanos,
    identifier,
    json_text,
)

# Attributes a PromptPulse service may put on a span to tie it to a request.
REQUEST_ID_ATTRIBUTE = "promptpulse.request_id"
DEPLOYMENT_ATTRIBUTE = "promptpulse.deployment"
_MAX_NAME = 1000
_MAX_MESSAGE = 4000


class SpanDecodeError(ValueError):
    """The message is not an OTLP trace export we can store; ``reason`` goes to dead_letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def any_value(value: AnyValue) -> Any:
    return _value_of(value, value.WhichOneof("value"))


def _value_of(value: AnyValue, which: str | None) -> Any:
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON has no NaN; keep the fact, as text
    return getattr(value, which)


def attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs[:]:  # [:]: see decode_spans
        value = kv.value
        which = value.WhichOneof("value")
        # The common kinds read directly: upb's getattr by a computed name costs three times more.
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = _value_of(value, which)
    return out


# Enum lookups by name are slow in protobuf's Python API; a span has two of them.
# The names a span's kind and status are stored under (spans.kind, spans.status_code).
KIND_NAMES = {value: name.removeprefix("SPAN_KIND_").lower() for name, value in Span.SpanKind.items()}
STATUS_NAMES = {value: name.removeprefix("STATUS_CODE_").lower() for name, value in Status.StatusCode.items()}


def _optional_text(value: Any) -> str | None:
    return clean_text(value, _MAX_NAME) if isinstance(value, str) and value else None


_new = tuple.__new__
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def decode_spans(value: bytes | None) -> list[SpanRow]:
    """Every span in the message. Raises SpanDecodeError for a message that is not an OTLP
    export or holds a span without valid ids or start time."""
    if not value:
        raise SpanDecodeError("empty-body", "spans record has no value")
    export = ExportTraceServiceRequest()
    try:
        export.ParseFromString(value)
    except Exception as exc:  # DecodeError, or others from the upb backend
        raise SpanDecodeError("malformed-body", f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
    rows: list[SpanRow] = []
    # Repeated fields are iterated as [:] (a list): plain iteration ends each loop with an
    # IndexError that upb formats a message for, and that costs more than a short loop.
    for resource_spans in export.resource_spans[:]:
        resource = attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        service_name = clean_text(service, _MAX_NAME) if isinstance(service, str) else ""
        resource_json = json_text(resource)
        for scope_spans in resource_spans.scope_spans[:]:
            scope = clean_text(scope_spans.scope.name, _MAX_NAME)
            for span in scope_spans.spans[:]:
                rows.append(_row(span, service_name, scope, resource_json))
    return rows


def _row(span: Span, service_name: str, scope: str, resource_json: str) -> SpanRow:
    # Runs for two events in three: each protobuf field is read once (every read of a nested
    # message builds a Python object), and the common cases skip helper calls.
    trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        raise SpanDecodeError("invalid-span", f"trace id of {len(trace_id)} bytes")
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        raise SpanDecodeError("invalid-span", f"span id of {len(span_id)} bytes")
    if parent_id and len(parent_id) != 8:
        raise SpanDecodeError("invalid-span", f"parent span id of {len(parent_id)} bytes")
    start_nanos = span.start_time_unix_nano
    if start_nanos <= 0:
        raise SpanDecodeError("invalid-span", "span has no start time")
    # A span exported unfinished or with a clock step backwards: keep it, zero long.
    end_nanos = span.end_time_unix_nano
    if end_nanos < start_nanos:
        end_nanos = start_nanos
    attrs = attributes(span.attributes)
    request_id = _optional_text(attrs.get(REQUEST_ID_ATTRIBUTE))
    deployment = _optional_text(attrs.get(DEPLOYMENT_ATTRIBUTE))
    try:
        if request_id is not None:
            identifier(request_id, REQUEST_ID_ATTRIBUTE)
        if deployment is not None:
            identifier(deployment, DEPLOYMENT_ATTRIBUTE)
        events = span.events
        events_json = _events_json(events) if events else "[]"
        attributes_json = json_text(attrs)
    except InvalidValue as exc:
        raise SpanDecodeError("invalid-span", str(exc)) from None
    status = span.status
    name, message = span.name, status.message
    # tuple.__new__ with the values in column order: SpanRow's own __new__ is a Python
    # function, and this runs for two events in three.
    return _new(SpanRow, (
        from_unix_nanos(start_nanos),
        trace_id.hex(),
        span_id.hex(),
        parent_id.hex() if parent_id else None,
        name if len(name) <= _MAX_NAME and "\x00" not in name else clean_text(name, _MAX_NAME),
        KIND_NAMES.get(span.kind, "unspecified"),
        from_unix_nanos(end_nanos),
        (end_nanos - start_nanos) / 1e6,
        STATUS_NAMES.get(status.code, "unset"),
        clean_text(message, _MAX_MESSAGE) if message else "",
        service_name,
        scope,
        attributes_json,
        events_json,
        resource_json,
        request_id,
        deployment,
    ))


def _events_json(events: Any) -> str:
    return json_text(
        [
            {
                "name": event.name,
                "time": from_unix_nanos(event.time_unix_nano).isoformat(),
                "attributes": attributes(event.attributes),
            }
            for event in events
        ]
    )
