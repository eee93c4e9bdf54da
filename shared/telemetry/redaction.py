"""Secrets never leave a service inside a span.

Instrumented code should not put credentials in attributes, but exception events and error
statuses carry the text of whatever was raised, and an LLM client's "invalid API key
sk-..." error is exactly the kind of text that would. This exporter wrapper masks such values
(with the same patterns as the logs) before any exporter sees them, Kafka's or OTLP's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from shared.logs import redact


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list) and value and isinstance(value[0], str):
        return tuple(redact(v) for v in value)
    return value


def _clean_attributes(attributes: Any) -> dict[str, Any] | None:
    if not attributes:
        return None
    return {k: _clean(v) for k, v in attributes.items()}


def _changed(attributes: Any) -> bool:
    return bool(attributes) and any(_clean(v) != v for v in attributes.values())


def _needs_redaction(span: ReadableSpan) -> bool:
    description = span.status.description
    return (
        _changed(span.attributes)
        or any(_changed(e.attributes) for e in span.events)
        or (description is not None and redact(description) != description)
    )


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """The span itself when it holds nothing secret-looking, else a masked copy."""
    if not _needs_redaction(span):
        return span
    status = span.status
    if status.description is not None:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_clean_attributes(span.attributes),
        events=[Event(e.name, _clean_attributes(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Masks credential-looking values, then hands the spans to ``inner``."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([redact_span(s) for s in spans])

    def shutdown(self, timeout_millis: float = 30000) -> None:
        # BatchSpanProcessor passes its remaining shutdown time only to exporters that take it.
        if "timeout_millis" in inspect.signature(self.inner.shutdown).parameters:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
