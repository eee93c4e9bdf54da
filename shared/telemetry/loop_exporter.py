"""Span export on the service's own event loop, in short slices: no exporter thread.

Why (docs/gateway.md, "Overhead"): behind a BatchSpanProcessor, the export thread redacts and
encodes a batch of up to 512 spans and :class:`~shared.telemetry.kafka_exporter.KafkaSpanExporter`
produces it on a second loop thread, all of it Python holding the GIL. The request loop, waking
from a socket read meanwhile, waits for the GIL up to the interpreter's switch interval (5 ms)
each time; at one client that made the gateway's added p99 +14-20 ms against +2-3 ms without
spans. Here nothing runs beside the loop: :class:`LoopSpanProcessor` hands each ended span to
:meth:`LoopKafkaSpanExporter.export`, which only queues it, and a task on the loop drains the
queue every ``interval`` seconds in slices of about ``slice_seconds`` of work (redact,
encode, ``producer.send``; longer in proportion to the backlog, so it keeps up at any load), leaving the loop to requests for a millisecond between slices. A
request that arrives during a slice waits for that slice, not for a whole batch. The producer is the exporter's own, on the
same loop, never wrapped in spans (the task runs with instrumentation suppressed).

Spans ended on other threads (a flow's Python tool runs in ``asyncio.to_thread``) are queued the
same way (``deque.append`` is thread-safe). The queue is bounded like BatchSpanProcessor's: past
``max_queue`` waiting spans, new ones are dropped and counted. Shutdown flushes: ``aclose()`` on
the loop, or ``shutdown()`` / ``force_flush()`` from another thread (``shutdown_telemetry`` run in
``asyncio.to_thread``), which run the drain on the loop and wait for the broker's acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from shared.kafka import SettingsLike, make_producer
from shared.kafka_partitioner import KeyPartitioner
from shared.log_throttle import LogThrottle
from shared.telemetry.kafka_exporter import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SPANS_EVENT_TYPE,
    encode_traces,
)
from shared.telemetry.redaction import redact_spans

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.1  # seconds between drains: spans reach the topic within about this
DEFAULT_SLICE = 0.0003  # seconds of work before the drain yields to the loop
DEFAULT_CHUNK = 6  # spans encoded between two looks at the clock (~0.2 ms; a proxied request has 2, a flow's 3)
DEFAULT_MAX_QUEUE = 8192
_PAUSE = 0.001  # seconds the loop is left to requests between two slices
# After the producer failed to start (broker away), no new attempt for this long: spans wait in
# the queue meanwhile (past its bound they are dropped and counted). Retrying per chunk made 100
# aiokafka error lines in 0.1 s for 600 spans.
_RESTART_BACKOFF = 2.0
_BACKLOG_STEP = 128  # waiting spans per extra slice_seconds of work in a slice (_budget)
_HEADERS = [("pp-event-type", SPANS_EVENT_TYPE)]


class LoopKafkaSpanExporter(SpanExporter):
    """Publishes spans to ``topic`` from a task on ``loop`` (see the module docstring).

    Use it behind a :class:`LoopSpanProcessor` (or a SimpleSpanProcessor): :meth:`export` never blocks. Construct it on ``loop``'s
    thread or any other; the drain task starts on the loop.
    """

    def __init__(
        self,
        settings: SettingsLike,
        topic: str,
        loop: asyncio.AbstractEventLoop,
        *,
        client_id: str,
        interval: float = DEFAULT_INTERVAL,
        slice_seconds: float = DEFAULT_SLICE,
        chunk_spans: int = DEFAULT_CHUNK,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        **producer_overrides: Any,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._loop = loop
        self._client_id = client_id
        self._interval = interval
        self._slice = slice_seconds
        self._chunk = chunk_spans
        self._max_queue = max_queue
        self._max_message_bytes = max_message_bytes
        self._producer_overrides = producer_overrides
        self._queue: deque[ReadableSpan] = deque()
        self._producer: AIOKafkaProducer | None = None
        self._acks: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # aclose() began: no drain task may start any more
        self._closed = False
        self._failing = False
        self._restart_at = 0.0  # time.monotonic() before which the producer is not started again
        self._throttle = LogThrottle()  # the per-span warnings: one line per key and 10 s
        self.exported_messages = 0
        self.dropped_spans = 0  # never sent: queue full, broker away when sent, too large
        self.lost_messages = 0  # sent, then refused or not acked
        loop.call_soon_threadsafe(self._start)

    @property
    def topic(self) -> str:
        return self._topic

    def _start(self) -> None:
        if self._task is None and not self._closing:
            self._task = self._loop.create_task(self._run(), name=f"{self._client_id}-drain")

    # ---- any thread: the SpanExporter interface

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed or len(self._queue) + len(spans) > self._max_queue:
            self.dropped_spans += len(spans)
            held = None if self._closed else self._throttle.ready("queue full")
            if held is not None:
                log.warning("span queue full (%d spans): dropping spans (%d more times since the last line)",
                            self._max_queue, held)
            return SpanExportResult.FAILURE
        self._queue.extend(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Publish every queued span and wait for the acks. From the loop's own thread it cannot
        wait (the loop would have to run): use :meth:`flush` there."""
        return self._on_loop(self.flush(), timeout_millis)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Flush, then close the producer. Idempotent. From the loop's own thread: ``await aclose()``."""
        if not self._closing:
            self._on_loop(self.aclose(), timeout_millis)

    def _on_loop(self, work: Any, timeout_millis: float) -> bool:
        loop = self._loop
        if loop.is_closed() or not loop.is_running() or _running_loop() is loop:
            work.close()
            log.warning("spans not flushed: call this from another thread while the loop runs, or await it")
            return False
        try:
            asyncio.run_coroutine_threadsafe(work, loop).result(timeout=max(timeout_millis / 1000, 1.0))
        except Exception as exc:  # includes the timeout
            log.warning("spans not flushed: %r", exc)
            return False
        return True

    # ---- the loop

    async def flush(self) -> None:
        await self._drain(sliced=False)
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the periodic drain, publish what is queued, close the producer."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            await self.flush()
        finally:
            self._closed = True
            self.dropped_spans += len(self._queue)  # ended while the last acks were awaited
            self._queue.clear()
            if self._producer is not None:
                producer, self._producer = self._producer, None
                try:
                    await producer.stop()
                except Exception as exc:  # noqa: BLE001 - shutting down: say so, go on
                    log.warning("span producer did not close cleanly: %r", exc)
            detach(token)

    async def _run(self) -> None:
        # The task's own context: the producer (and its sender task, started from here) and
        # anything they call record no spans.
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._drain(sliced=True)
            except Exception:  # a bug here must not end span export for the process's life
                log.exception("span drain failed; draining again in %.1f s", self._interval)

    async def _drain(self, *, sliced: bool) -> None:
        queue = self._queue
        started, budget = time.perf_counter(), self._budget()
        while queue:
            if self._producer is None and time.monotonic() < self._restart_at:
                return  # broker away: the spans wait for the next attempt (or are counted at close)
            if sliced and time.perf_counter() - started >= budget:
                # Not sleep(0): a request's next step would queue behind the next slice, and it
                # has several steps. A pause lets a request that arrived run through.
                await asyncio.sleep(_PAUSE)
                started, budget = time.perf_counter(), self._budget()
            chunk = [queue.popleft() for _ in range(min(self._chunk, len(queue)))]
            try:
                await self._publish(chunk)
            except asyncio.CancelledError:  # aclose() stopped this drain: its own flush sends them
                queue.extendleft(reversed(chunk))  # (a record already sent is upserted, not doubled)
                raise
            except Exception as exc:  # unexpected (a span redaction or encoding cannot handle)
                self.dropped_spans += len(chunk)
                held = self._throttle.ready("publish error")
                if held is not None:
                    log.error("dropped %d spans that could not be published (%d more times since the last "
                              "line): %r", len(chunk), held, exc, exc_info=exc)

    def _budget(self) -> float:
        """Seconds of work in the next slice: ``slice_seconds``, longer as the backlog grows.

        A fixed slice cannot keep up under load: each slice publishes at least a chunk, then
        the pause lets every waiting request run, so with many clients the drain gets about one
        slice per few loop iterations while spans arrive on every one; the queue reached its
        bound and dropped ~44% of the spans at 20 clients. Scaled by the backlog (one
        ``slice_seconds`` per ``_BACKLOG_STEP`` spans waiting), the drain's share of the loop
        grows with the load until it matches the rate spans are made (30 clients: the queue
        peaked at 318 spans, none dropped; docs/gateway.md), while one client's few spans keep
        the short slice its latency was tuned with.
        """
        return self._slice * max(1.0, len(self._queue) / _BACKLOG_STEP)

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            # A drain's slices spread its records over several milliseconds: a linger as long
            # as the interval puts them in one produce request, not one per slice.
            # KeyPartitioner: each record's key is a new trace id, hashed ~2x faster than aiokafka does.
            options = {"max_request_size": self._max_message_bytes + 65_536, "linger_ms": int(self._interval * 1000),
                       "partitioner": KeyPartitioner()}
            options.update(self._producer_overrides)
            producer = make_producer(self._settings, self._client_id, **options)
            try:
                await producer.start()
            except BaseException:
                self._restart_at = time.monotonic() + _RESTART_BACKOFF
                await producer.stop()  # started half-way: free its sockets, retry after the backoff
                raise
            self._producer = producer
        return self._producer

    async def _publish(self, spans: list[ReadableSpan]) -> None:
        # Unguarded: an exception here is _drain's to count (the chunk), not the broker's.
        messages, dropped = encode_traces(redact_spans(spans), self._max_message_bytes)
        if dropped:
            self.dropped_spans += dropped
            log.warning("dropped %d spans each larger than %d bytes", dropped, self._max_message_bytes)
        try:
            producer = await self._started_producer()
            for key, value in messages:
                ack = await producer.send(self._topic, value=value, key=key, headers=_HEADERS)
                self._acks.add(ack)
                ack.add_done_callback(self._acked)
        except Exception as exc:  # broker away, timeout: these spans are lost, never the service
            self._failed(exc, len(spans))

    def _acked(self, ack: asyncio.Future[Any]) -> None:
        self._acks.discard(ack)
        problem = asyncio.CancelledError() if ack.cancelled() else ack.exception()
        if problem is not None:
            self.lost_messages += 1
            self._failed(problem, 0)
            return
        self.exported_messages += 1
        if self._failing:
            log.info("publishing spans to %s again", self._topic)
            self._failing = False

    def _failed(self, exc: BaseException, spans: int) -> None:
        self.dropped_spans += spans
        if not self._failing:  # one line per outage, not one per batch
            log.warning("cannot publish spans to %s: %r", self._topic, exc)
        self._failing = True


class LoopSpanProcessor(SpanProcessor):
    """SimpleSpanProcessor's work for a :class:`LoopKafkaSpanExporter`: each sampled span that
    ends goes to ``export``, which only queues it.

    Why not SimpleSpanProcessor itself: around every export it attaches a context that
    suppresses instrumentation and detaches it again, and counts the span in its own metrics
    (no-ops unless enabled): about 1.7 us a span, two or three spans a request, guarding a
    call that only appends to a deque (the drain task, which publishes, suppresses
    instrumentation for itself). Errors are logged, never raised into the code ending a span.
    """

    def __init__(self, exporter: LoopKafkaSpanExporter) -> None:
        self.span_exporter = exporter

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        try:
            self.span_exporter.export((span,))
        except Exception:  # noqa: BLE001 - as SimpleSpanProcessor: the request goes on
            log.exception("span not exported")

    def shutdown(self) -> None:
        self.span_exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.span_exporter.force_flush(timeout_millis)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

