"""An OTLP/HTTP trace export body into plain spans, or an error naming what is wrong.

Two encodings reach ``POST /v1/traces`` (https://opentelemetry.io/docs/specs/otlp/#otlphttp):
binary protobuf (``application/x-protobuf``) and JSON (``application/json``). OTLP's JSON is
protobuf's JSON mapping with one difference: trace and span ids are hex strings, not base64;
they are rewritten to base64 before protobuf's parser sees them. Anything that does not parse,
or parses into ids of the wrong length, is a :class:`BadExport` (a 400), never a crash.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Limits of one decoded value: a span attribute may hold a whole conversation, but a nested
# value deeper than this is not a conversation, it is an attack on the decoder's recursion.
MAX_DEPTH = 16

_REMOTE_KNOWN = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR


class BadExport(ValueError):
    """The body is not a trace export we can read; the message names the problem."""


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class IngestedSpan:
    """One span as sent, with ids in hex and attribute values as plain Python values."""

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    # True or False when the sender said whether the parent is in another process; None when
    # it did not say (older SDKs leave the flags at 0).
    parent_is_remote: bool | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: tuple[SpanEvent, ...]
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An OTLP AnyValue as a JSON-compatible Python value (bytes as base64 text)."""
    if depth > MAX_DEPTH:
        raise BadExport(f"an attribute value is nested deeper than {MAX_DEPTH} levels")
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values, depth + 1)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def attributes(pairs: Any, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        out[pair.key] = any_value(pair.value, depth)
    return out


def _hex_id(raw: bytes, size: int, what: str, *, empty_ok: bool = False) -> str:
    if not raw and empty_ok:
        return ""
    if len(raw) != size or raw == bytes(size):
        raise BadExport(f"{what} must be {size} bytes and not all zero, got {len(raw)} bytes")
    return raw.hex()


def parse_export(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The export request in ``body``, by its content type (parameters such as charset ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    export = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            export.ParseFromString(body)
        except (DecodeError, RecursionError) as error:
            raise BadExport(
                f"the body is not an OTLP ExportTraceServiceRequest in protobuf: {error}"
            ) from None
        return export
    if media == JSON:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as error:
            raise BadExport(f"the body is not JSON: {error}") from None
        if not isinstance(document, dict):
            raise BadExport("the body must be a JSON object (an ExportTraceServiceRequest)")
        _hex_ids_to_base64(document)
        try:
            json_format.ParseDict(document, export, ignore_unknown_fields=True)
        except (json_format.ParseError, RecursionError, TypeError, ValueError) as error:
            raise BadExport(f"the JSON is not an OTLP ExportTraceServiceRequest: {error}") from None
        return export
    raise BadExport(f"content type must be {PROTOBUF} or {JSON}, got {media or 'none'}")


_ID_FIELDS = {
    "traceId": 16,
    "trace_id": 16,
    "spanId": 8,
    "span_id": 8,
    "parentSpanId": 8,
    "parent_span_id": 8,
}


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """Rewrite OTLP JSON's hex ids in spans and links to the base64 protobuf's parser expects."""
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                _rewrite_ids(span)
                for link in _list(span, "links"):
                    _rewrite_ids(link)


def _list(holder: Any, *names: str) -> Iterator[dict[str, Any]]:
    if not isinstance(holder, dict):
        raise BadExport("expected a JSON object in the export")
    for name in names:
        items = holder.get(name)
        if items is None:
            continue
        if not isinstance(items, list):
            raise BadExport(f"{name} must be a list")
        for item in items:
            if not isinstance(item, dict):
                raise BadExport(f"every item of {name} must be an object")
            yield item


def _rewrite_ids(holder: dict[str, Any]) -> None:
    for name, size in _ID_FIELDS.items():
        value = holder.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise BadExport(f"{name} must be a hex string")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise BadExport(
                f"{name} must be hex ({size * 2} hex digits), got {value[:40]!r}"
            ) from None
        if len(raw) != size:
            raise BadExport(f"{name} must be {size * 2} hex digits, got {len(value)}")
        holder[name] = base64.b64encode(raw).decode("ascii")


def spans_of(export: ExportTraceServiceRequest) -> list[IngestedSpan]:
    """Every span of the export, with its resource's attributes; BadExport on a malformed one."""
    out: list[IngestedSpan] = []
    for resource_spans in export.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for message in scope_spans.spans:
                out.append(_span(message, resource, scope))
    return out


def checked_ids(message: SpanMessage) -> tuple[str, str, str]:
    """The span's trace, span and parent ids in hex, once its ids and times pass the checks
    every accepted span must (BadExport naming the first that does not)."""
    trace_id = _hex_id(message.trace_id, 16, "traceId")
    span_id = _hex_id(message.span_id, 8, "spanId")
    parent = _hex_id(message.parent_span_id, 8, "parentSpanId", empty_ok=True)
    if message.end_time_unix_nano < message.start_time_unix_nano:
        raise BadExport(f"span {span_id} ends before it starts")
    if message.start_time_unix_nano == 0:
        raise BadExport(f"span {span_id} has no start time")
    return trace_id, span_id, parent


def check_depth(value: AnyValue, depth: int = 0, strings: list[str] | None = None) -> None:
    """BadExport if ``value`` nests deeper than :data:`MAX_DEPTH` (what :func:`any_value` refuses);
    its strings are appended to ``strings`` on the way, when given."""
    if depth > MAX_DEPTH:
        raise BadExport(f"an attribute value is nested deeper than {MAX_DEPTH} levels")
    kind = value.WhichOneof("value")
    if kind == "string_value":
        if strings is not None:
            strings.append(value.string_value)
    elif kind == "array_value":
        for item in value.array_value.values:
            check_depth(item, depth + 1, strings)
    elif kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            check_depth(pair.value, depth + 1, strings)


def _span(message: SpanMessage, resource: dict[str, Any], scope: str) -> IngestedSpan:
    trace_id, span_id, parent = checked_ids(message)
    remote: bool | None = None
    if message.flags & _REMOTE_KNOWN:
        remote = bool(message.flags & _REMOTE)
    try:
        events = tuple(
            SpanEvent(event.name, event.time_unix_nano, attributes(event.attributes))
            for event in message.events
        )
        span_attributes = attributes(message.attributes)
    except binascii.Error as error:  # pragma: no cover - protobuf hands us bytes, never bad base64
        raise BadExport(str(error)) from None
    return IngestedSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        parent_is_remote=remote,
        name=message.name,
        kind=message.kind,
        start_ns=message.start_time_unix_nano,
        end_ns=message.end_time_unix_nano,
        status_code=message.status.code,
        status_message=message.status.message,
        attributes=span_attributes,
        events=events,
        resource=resource,
        scope=scope,
    )
