"""Secrets never leave a service inside a span.

Instrumented code should not put credentials in attributes, but exception events and error
statuses carry the text of whatever was raised, and an LLM client's "invalid API key
sk-..." error is exactly the kind of text that would. This exporter wrapper masks such values
(with the same patterns as the logs) before any exporter sees them, Kafka's or OTLP's.

Checking is the cost, since almost no span holds a secret: a batch is first ruled out as a
whole (a few substring searches over its texts), then a span by one joined pattern, and only
a span that passes both is checked value by value, as before.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status

from shared.logs import _SECRET_PATTERNS, redact
from shared.telemetry.otlp_wire import plain


def _combined(patterns: Iterable[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One pattern that matches wherever any of ``patterns`` does (None if they cannot be joined).

    No false negatives: when no pattern matches a text, ``redact`` returns it unchanged (each
    substitution sees the text the previous one left, which is then the original).
    """
    parts = []
    for pattern in patterns:
        source, flags = pattern.pattern, pattern.flags & ~re.UNICODE
        if flags == re.IGNORECASE and source.startswith("(?i)"):
            parts.append(f"(?i:{source[4:]})")
        elif flags == 0 and not source.startswith("(?"):
            parts.append(f"(?:{source})")
        else:
            return None
    try:
        return re.compile("|".join(parts))
    except re.error:
        return None


_ANY_SECRET = _combined(_SECRET_PATTERNS)

# Words without which no pattern of shared.logs can match ASCII text (lowercased: the patterns
# that ignore case need them in some case). Valid only for the patterns they were read from,
# so they are used only while shared.logs still has exactly those; for other text (non-ASCII
# text has more case equivalents, e.g. "ſ" for "s") the joined pattern decides.
_PATTERNS_READ = (
    r"()\bpp_[A-Za-z0-9_-]{16,}",
    r"()\bsk-[A-Za-z0-9_-]{16,}",
    r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+",
    r"(?i)(\bbasic\s+)[A-Za-z0-9+/=]{8,}",
    r"(://[^:/@\s]+:)[^@/\s]+(?=@)",
    r"(?i)(\b(?:api[_-]?key|apikey|password|passwd|secret|client[_-]?secret)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+",
)
_REQUIRED_WORDS = ("pp_", "sk-", "bearer", "basic", "://", "api", "passw", "secret")
_WORDS_APPLY = tuple(p.pattern for p in _SECRET_PATTERNS) == _PATTERNS_READ


def _ruled_out(text: str) -> bool:
    """True when ``text`` lacks every word a pattern needs (cheap: a few substring searches)."""
    if not _WORDS_APPLY or not text.isascii():
        return False
    lowered = text.lower()
    return not any(word in lowered for word in _REQUIRED_WORDS)


def might_hold_secret(text: str) -> bool:
    """False only when :func:`shared.logs.redact` would leave ``text`` as it is."""
    if _ruled_out(text):
        return False
    if _ANY_SECRET is not None:
        return _ANY_SECRET.search(text) is not None
    return any(pattern.search(text) for pattern in _SECRET_PATTERNS)


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


def _texts(attributes: Any, out: list[str]) -> None:
    """Append the strings of an attribute mapping (the values :func:`_clean` would redact)."""
    if not attributes:
        return
    for value in plain(attributes).values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, tuple | list) and value and isinstance(value[0], str):
            out.extend(v for v in value if isinstance(v, str))


def _span_texts(span: ReadableSpan, out: list[str]) -> None:
    _texts(span.attributes, out)
    for event in span.events:
        _texts(event.attributes, out)
    if span.status.description is not None:
        out.append(span.status.description)


def _joined(texts: list[str]) -> str:
    # Joined by newlines: no pattern matches across a line break in a way that hides a match
    # inside one text (at worst the join adds a false alarm, which the exact check settles).
    return "\n".join(texts)


def _changed(attributes: Any) -> bool:
    return bool(attributes) and any(_clean(v) != v for v in attributes.values())


def _needs_redaction(span: ReadableSpan) -> bool:
    texts: list[str] = []
    _span_texts(span, texts)
    if not texts or not might_hold_secret(_joined(texts)):
        return False
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


def redact_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """``spans`` with credential-looking values masked (:func:`redact_span` each, unless the
    batch as a whole is ruled out: the usual case, a few substring searches)."""
    texts: list[str] = []
    for span in spans:
        _span_texts(span, texts)
    if _ruled_out(_joined(texts)):
        return list(spans)
    return [redact_span(s) for s in spans]


class RedactingSpanExporter(SpanExporter):
    """Masks credential-looking values, then hands the spans to ``inner``."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(redact_spans(spans))

    def shutdown(self, timeout_millis: float = 30000) -> None:
        # BatchSpanProcessor passes its remaining shutdown time only to exporters that take it.
        if "timeout_millis" in inspect.signature(self.inner.shutdown).parameters:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
