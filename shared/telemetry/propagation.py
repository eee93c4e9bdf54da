"""W3C trace context through Kafka headers, and messaging spans around a send and a process.

A trace crosses a Kafka hop like this::

    with producer_span(topics.inference, key=request_id) as outgoing:
        await producer.send(topics.inference, value, key=request_id, headers=outgoing.headers)

    async for record in consumer:
        with consumer_span(record, group_id="processor"):
            ...  # spans started here are children of the producer's ``send`` span

Span names and attributes follow the OpenTelemetry messaging conventions (``send {topic}``
PRODUCER, ``process {topic}`` CONSUMER, ``messaging.*``). The consumer span's parent is the
producer span, so one trace shows a request from the gateway through the judge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
TRACER_NAME = "promptpulse.kafka"

KafkaHeaders = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None

# Kafka headers only ever carry the W3C trace context (never baggage, which could carry
# arbitrary user data onto a topic), whatever the global HTTP propagator is.
_PROPAGATOR = TraceContextTextMapPropagator()


class _HeaderGetter(Getter[KafkaHeaders]):
    """Reads Kafka headers as aiokafka (pairs) or faust (mapping) hand them over."""

    @staticmethod
    def _pairs(carrier: KafkaHeaders) -> Iterable[tuple[Any, Any]]:
        if carrier is None:
            return ()
        return carrier.items() if isinstance(carrier, Mapping) else carrier

    def get(self, carrier: KafkaHeaders, key: str) -> list[str] | None:
        values = []
        try:
            for name, value in self._pairs(carrier):
                if name == key and isinstance(value, bytes | bytearray | memoryview):
                    values.append(bytes(value).decode("ascii"))
        except (TypeError, ValueError):
            # Malformed headers mean "no parent", never a crashed consumer.
            return None
        return values or None

    def keys(self, carrier: KafkaHeaders) -> list[str]:
        try:
            return [name for name, _ in self._pairs(carrier)]
        except (TypeError, ValueError):
            return []


_GETTER = _HeaderGetter()


def inject_headers(
    headers: KafkaHeaders = None, *, context: Context | None = None
) -> list[tuple[str, bytes | None]]:
    """``headers`` plus ``traceparent``/``tracestate`` of the current (or given) context.

    Trace headers already in ``headers`` are replaced, so re-publishing a record never leaves
    two parents on it. With no active span, no trace headers are added.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    pairs = header_list(headers)
    if carrier:
        pairs = [(k, v) for k, v in pairs if k not in _TRACE_HEADERS]
        pairs.extend((k, v.encode("ascii")) for k, v in carrier.items())
    return pairs


def header_list(headers: KafkaHeaders) -> list[tuple[str, bytes | None]]:
    """Headers as aiokafka's list of ``(name, bytes)`` pairs."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v) for k, v in items]


def extract_context(headers: KafkaHeaders, *, context: Context | None = None) -> Context:
    """The context carried in Kafka headers, on top of ``context`` (default: the current one).

    Without a valid ``traceparent`` the base context comes back unchanged, so a record from a
    producer that does not trace simply starts (or joins) the consumer's own trace.
    """
    base = context if context is not None else otel_context.get_current()
    return _PROPAGATOR.extract(headers, context=base, getter=_GETTER)


def _tracer(tracer: Tracer | None) -> Tracer:
    return tracer if tracer is not None else trace.get_tracer(TRACER_NAME)


def _key_text(key: Any) -> str | None:
    if key is None:
        return None
    if isinstance(key, bytes | bytearray | memoryview):
        try:
            return bytes(key).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(key).hex()
    return str(key)


@dataclass
class OutgoingMessage:
    """What a producer span hands the caller: headers to send, and the span itself."""

    span: Span
    headers: list[tuple[str, bytes | None]]

    def record_metadata(self, metadata: Any) -> None:
        """Add the partition and offset from aiokafka's RecordMetadata once the send is acked."""
        self.span.set_attribute("messaging.destination.partition.id", str(metadata.partition))
        self.span.set_attribute("messaging.kafka.offset", metadata.offset)


@contextmanager
def producer_span(
    topic: str,
    key: Any = None,
    headers: KafkaHeaders = None,
    *,
    client_id: str | None = None,
    tracer: Tracer | None = None,
) -> Iterator[OutgoingMessage]:
    """A ``send {topic}`` PRODUCER span, current inside the block, with headers carrying it."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    key_text = _key_text(key)
    if key_text is not None:
        attributes["messaging.kafka.message.key"] = key_text
    if client_id:
        attributes["messaging.client.id"] = client_id
    with _tracer(tracer).start_as_current_span(
        f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield OutgoingMessage(span=span, headers=inject_headers(headers))


class RecordLike(Protocol):
    """The fields of aiokafka's ConsumerRecord (and faust's Message) a consumer span reads."""

    topic: str
    partition: int
    offset: int
    key: Any
    headers: Any


@contextmanager
def consumer_span(
    record: RecordLike,
    *,
    group_id: str | None = None,
    client_id: str | None = None,
    operation: Literal["process", "receive"] = "process",
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """A ``process {topic}`` CONSUMER span for one record, child of the span that produced it."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }
    key_text = _key_text(getattr(record, "key", None))
    if key_text is not None:
        attributes["messaging.kafka.message.key"] = key_text
    value = getattr(record, "value", None)
    if isinstance(value, bytes | bytearray):
        attributes["messaging.message.body.size"] = len(value)
    if group_id:
        attributes["messaging.consumer.group.name"] = group_id
    if client_id:
        attributes["messaging.client.id"] = client_id
    parent = extract_context(getattr(record, "headers", None))
    with _tracer(tracer).start_as_current_span(
        f"{operation} {record.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span
