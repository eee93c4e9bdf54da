"""A span exporter that publishes finished spans to the spans topic as OTLP protobuf.

Each export batch becomes one Kafka message per trace: the value is an
``ExportTraceServiceRequest`` holding that trace's spans, the key is the trace id (32 hex
characters), so all of a trace's messages land on one partition, in order, and the aggregator
can store a trace without a cross-partition join. A trace whose spans end in different
batches arrives as several messages; the consumer upserts by (trace id, span id). A trace too
big for one message is split in halves until each part fits.

Threading. BatchSpanProcessor calls :meth:`export` on its own worker thread, and aiokafka's
producer belongs to one event loop. The exporter runs a private event loop on a daemon
thread with its own producer, and the worker hands each batch over with
``run_coroutine_threadsafe`` and waits for the acks. We do not borrow the service's loop:
(1) the service would then pay for span encoding and sends on its request path; (2) faust
and aiohttp each own their loop, and the exporter should not care which; (3) above all,
``shutdown_telemetry()`` flushes synchronously: called on the service's loop thread, a flush
that needs that same loop to make progress would deadlock, and after the loop has closed
there would be nothing left to flush with.

Spans do not breed spans: the producer here is never wrapped in a producer span, and every
send runs with OpenTelemetry's suppress-instrumentation flag set, so even an auto-instrumented
aiokafka would record nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from shared.kafka import SettingsLike, make_producer
from shared.telemetry.otlp_wire import TraceEncoder

log = logging.getLogger(__name__)

SPANS_EVENT_TYPE = b"otlp.traces"
# Kafka's default message.max.bytes is 1 MiB; stay clearly under it after record overhead.
DEFAULT_MAX_MESSAGE_BYTES = 900_000


def trace_key(trace_id: int) -> bytes:
    return format(trace_id, "032x").encode("ascii")


def encode_traces(
    spans: Sequence[ReadableSpan], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[list[tuple[bytes, bytes]], int]:
    """(key, value) messages, one per trace (split if too big), and the count of spans dropped.

    A span is dropped only when it alone exceeds ``max_message_bytes``. The bytes are what
    opentelemetry's ``encode_spans`` would give, written directly (shared.telemetry.otlp_wire):
    each span, resource and scope is encoded once per batch, also when a trace is split.
    """
    encoder = TraceEncoder()
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    messages: list[tuple[bytes, bytes]] = []
    dropped = 0
    for trace_id, group in by_trace.items():
        pending = [group]
        while pending:
            part = pending.pop()
            payload = encoder.request(part)
            if len(payload) <= max_message_bytes:
                messages.append((trace_key(trace_id), payload))
            elif len(part) > 1:
                middle = len(part) // 2
                pending.extend((part[middle:], part[:middle]))
            else:
                dropped += 1
    return messages, dropped


class KafkaSpanExporter(SpanExporter):
    """Publishes spans to ``topic`` through a dedicated, untraced producer on its own loop."""

    def __init__(
        self,
        settings: SettingsLike,
        topic: str,
        *,
        client_id: str,
        send_timeout: float = 15.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        **producer_overrides: Any,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._client_id = client_id
        self._send_timeout = send_timeout
        self._max_message_bytes = max_message_bytes
        self._producer_overrides = producer_overrides
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._closed = False
        self._failing = False
        self.exported_messages = 0
        self.dropped_spans = 0

    @property
    def topic(self) -> str:
        return self._topic

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"{self._client_id}-loop", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            options = {"max_request_size": self._max_message_bytes + 65_536}
            options.update(self._producer_overrides)
            producer = make_producer(self._settings, self._client_id, **options)
            try:
                await producer.start()
            except BaseException:
                # Started half-way (broker away, or the export timed out): free its sockets
                # and try again from scratch on the next batch.
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _publish(self, messages: list[tuple[bytes, bytes]]) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            producer = await self._started_producer()
            headers = [("pp-event-type", SPANS_EVENT_TYPE)]
            acks = [
                await producer.send(self._topic, value=value, key=key, headers=headers)
                for key, value in messages
            ]
            await asyncio.gather(*acks)
        finally:
            detach(token)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        messages, dropped = encode_traces(spans, self._max_message_bytes)
        if dropped:
            self.dropped_spans += dropped
            log.warning("dropped %d spans each larger than %d bytes", dropped, self._max_message_bytes)
        if not messages:
            return SpanExportResult.SUCCESS
        future = asyncio.run_coroutine_threadsafe(self._publish(messages), self._ensure_loop())
        try:
            future.result(timeout=self._send_timeout)
        except Exception as exc:  # broker away, timeout, refused: the batch is lost, never the service
            future.cancel()
            self.dropped_spans += len(spans)
            if not self._failing:  # one line per outage, not one per batch
                log.warning("cannot publish spans to %s: %r", self._topic, exc)
            self._failing = True
            return SpanExportResult.FAILURE
        if self._failing:
            log.info("publishing spans to %s again", self._topic)
        self._failing = False
        self.exported_messages += len(messages)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # export() returns only once the broker acked, so nothing is ever pending here.
        return True

    async def _stop_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()  # sends what is still batched, then closes

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Flush and close the producer, then stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop_producer(), loop).result(
                timeout=max(timeout_millis / 1000, 1.0)
            )
        except Exception as exc:  # includes the timeout
            log.warning("span producer did not close cleanly: %r", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
