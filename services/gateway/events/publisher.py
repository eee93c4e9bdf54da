"""The gateway's event publisher: never blocks a request on Kafka, never loses an admitted event.

Flow of an event::

    publish() --> bounded queue --> sender --(direct mode)--> Kafka
                                       \\--(spool mode)--> spool (disk) --> drainer --> Kafka

- ``publish()`` is synchronous and only encodes and queues: a request handler never waits for the
  broker or the disk. The sender and drainer (pipeline.py) do the rest.
- Once the spool holds anything, every new event goes through it, behind the ones already there,
  so each request's events keep their order; direct sends resume when it is empty.
- Admission: :meth:`EventPublisher.reserve` holds room for a request's events before the
  endpoint accepts it, or raises :class:`PublisherFull` (the endpoint answers 503). Token chunks
  need no reservation: they only use the first ``token_chunk_share`` of the room and are dropped
  (counted) beyond it, so they go first and request/response events keep the rest.
- Shutdown: :meth:`close` flushes the queue (to Kafka, or to the spool if Kafka is away) and
  leaves the spool on disk; the next start drains it before anything new.

Delivery is at least once (consumers dedupe on event id); docs/gateway-events.md says when a
duplicate can happen.

Use from an aiohttp cleanup context::

    async def event_publisher(app):
        publisher = EventPublisher(settings.kafka, topics, settings.gateway.publisher)
        await publisher.start()
        app[PUBLISHER] = publisher
        yield
        await publisher.close()
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from services.gateway.events.delivery import KafkaDelivery
from services.gateway.events.metrics import PublisherMetrics
from services.gateway.events.pipeline import EventPipeline, QueuedEvent
from services.gateway.events.settings import PublisherSection
from services.gateway.events.spool import Spool, SpoolRecord, record_size
from shared.events.codec import encode, event_key
from shared.events.messages import Event, Feedback, InferenceRequest, InferenceResponse, TokenChunk
from shared.kafka import SettingsLike, connection_options
from shared.prometheus import Families
from shared.topics import Topics

_ROLES: dict[type, str] = {
    InferenceRequest: "inference",
    InferenceResponse: "inference",
    TokenChunk: "tokens",
    Feedback: "feedback",
}


class PublisherError(Exception):
    """The publisher cannot take this event."""


class PublisherFull(PublisherError):
    """No room for a request's events: answer 503 (``reason`` says which limit was reached)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"event publisher full ({reason})")
        self.reason = reason


class PublisherClosed(PublisherError):
    """The publisher is not running (not started yet, or shutting down)."""


class EventTooLarge(PublisherError):
    """The encoded event exceeds ``max_event_bytes``; Kafka would refuse it."""


class Reservation:
    """Room held for one request's events, from admission until released (``with`` block)."""

    __slots__ = ("_publisher", "remaining")

    def __init__(self, publisher: EventPublisher, size: int) -> None:
        self._publisher = publisher
        self.remaining = size

    def _take(self, size: int) -> int:
        taken = min(size, self.remaining)
        self.remaining -= taken
        self._publisher._reserved_bytes -= taken
        return taken

    def release(self) -> None:
        """Give back what the request's events did not use (idempotent)."""
        self._take(self.remaining)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class EventPublisher:
    """Use from one event loop: ``await start()``, ``publish()`` many times, ``await close()``."""

    def __init__(
        self,
        kafka: SettingsLike,
        topics: Topics,
        section: PublisherSection,
        *,
        client_id: str = "promptpulse-gateway",
        **producer_overrides: Any,
    ) -> None:
        connection_options(kafka)  # raises KafkaSettingsError now, not at the first send
        self._topics = topics
        self._section = section
        self.metrics = PublisherMetrics()
        delivery = KafkaDelivery(
            kafka,
            client_id=client_id,
            timeout=section.send_timeout_seconds,
            max_event_bytes=section.max_event_bytes,
            **producer_overrides,
        )
        spool = Spool(section.spool_dir, section.spool_max_bytes, section.spool_segment_bytes)
        self._pipeline = EventPipeline(section, spool, delivery, self.metrics)
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._reserved_bytes = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (raises SpoolLocked / SpoolError) and start sending. Never waits for
        Kafka: the gateway starts while the broker is away, and its events spool."""
        if self._state != "new":
            raise PublisherError("an EventPublisher starts once")
        await asyncio.to_thread(self._pipeline.spool.open)
        self._pipeline.start()
        self._state = "running"

    async def close(self) -> None:
        """Flush the queue to Kafka (or to the spool), stop, keep the spool for the next start."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            await self._pipeline.close(self._section.close_timeout_seconds)
        finally:
            self._state = "closed"

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- admission ---------------------------------------------------------------------------

    def reserve(self, expected_bytes: int = 0) -> Reservation:
        """Hold room for one request's events, before the endpoint accepts the request.

        ``expected_bytes`` is what the endpoint knows of the request's size (its body); the
        section's ``request_reserve_bytes`` is added for metadata and outputs. Raises
        PublisherFull: answer 503, as events of an accepted request could not be kept.
        """
        size = max(0, expected_bytes) + self._section.request_reserve_bytes
        reason = self._refusal(size)
        if reason is not None:
            self.metrics.reservations_refused[reason] += 1
            raise PublisherFull(reason)
        self._reserved_bytes += size
        return Reservation(self, size)

    def accepting(self) -> bool:
        """Whether a request of ordinary size would be admitted now (for /readyz)."""
        return self._refusal(self._section.request_reserve_bytes) is None

    def _refusal(self, size: int) -> str | None:
        pipeline = self._pipeline
        if self._state != "running":
            return "closed"
        if pipeline.spooling and pipeline.spool_failed:
            return "spool_error"
        if pipeline.queued_bytes + pipeline.inflight_bytes + size > self._section.queue_max_bytes:
            return "queue_full"
        if self._committed_bytes() + size > self._section.spool_max_bytes:
            return "spool_full"
        return None

    def _chunk_refusal(self, size: int) -> str | None:
        pipeline, share = self._pipeline, self._section.token_chunk_share
        if pipeline.queued_bytes + pipeline.inflight_bytes + size > self._section.queue_max_bytes * share:
            return "queue_full"
        if self._committed_bytes() + size > self._section.spool_max_bytes * share:
            return "spool_full"
        return None

    def _committed_bytes(self) -> int:
        # Worst case, everything not yet acknowledged ends up in the spool.
        pipeline = self._pipeline
        return pipeline.spool.bytes + pipeline.queued_bytes + pipeline.inflight_bytes + self._reserved_bytes

    # -- publishing --------------------------------------------------------------------------

    def publish(self, event: Event, *, reservation: Reservation | None = None) -> bool:
        """Queue ``event`` for its topic and return at once.

        Request and response events go to the inference topic, token chunks to the tokens
        topic, feedback to the feedback topic, keyed by request id. Returns False when a token
        chunk was dropped for lack of room (counted). Other events are always kept when they
        come with the request's reservation; without one, PublisherFull is raised when there is
        no room. Raises PublisherClosed when not running, EventTooLarge, and InvalidEventError
        (shared.events) for an event that breaks the contract.
        """
        role = _ROLES.get(type(event))
        if role is None:
            raise PublisherError(f"the gateway does not publish {type(event).__name__} events")
        token_chunk = role == "tokens"
        if self._state != "running":
            if token_chunk:
                return self._pipeline.drop_chunk("closed")
            raise PublisherClosed(f"event publisher is {self._state}")
        topic = getattr(self._topics, role)
        encoded = encode(event)
        key = event_key(event)
        headers = tuple(encoded.headers)
        size = record_size(topic, key, encoded.value, headers)
        if size > self._section.max_event_bytes:
            if token_chunk:
                return self._pipeline.drop_chunk("too_large")
            raise EventTooLarge(
                f"{type(event).__name__} is {size} bytes, over max_event_bytes "
                f"{self._section.max_event_bytes}"
            )
        if token_chunk:
            reason = self._chunk_refusal(size)
            if reason is not None:
                return self._pipeline.drop_chunk(reason)
        elif reservation is not None:
            # Admission promised this request room: what its estimate missed is taken anyway.
            reservation._take(size)
        else:
            reason = self._refusal(size)
            if reason is not None:
                self.metrics.reservations_refused[reason] += 1
                raise PublisherFull(reason)
        self._pipeline.enqueue(QueuedEvent(SpoolRecord(topic, key, encoded.value, headers), size, token_chunk))
        self.metrics.events_queued += 1
        return True

    @property
    def max_record_bytes(self) -> int:
        """Largest record value that fits under ``max_event_bytes`` with a trace id key."""
        return self._section.max_event_bytes - 1024

    def publish_record(self, role: str, key: bytes, value: bytes) -> None:
        """Queue a record that is not one of our events (an OTLP export for the spans topic).

        Same admission as an event without a reservation: PublisherFull when there is no room,
        EventTooLarge past ``max_event_bytes``, PublisherClosed when not running.
        """
        if self._state != "running":
            raise PublisherClosed(f"event publisher is {self._state}")
        topic = getattr(self._topics, role)
        size = record_size(topic, key, value, ())
        if size > self._section.max_event_bytes:
            raise EventTooLarge(f"record is {size} bytes, over max_event_bytes {self._section.max_event_bytes}")
        reason = self._refusal(size)
        if reason is not None:
            self.metrics.reservations_refused[reason] += 1
            raise PublisherFull(reason)
        self._pipeline.enqueue(QueuedEvent(SpoolRecord(topic, key, value, ()), size, False))
        self.metrics.events_queued += 1

    # -- observation -------------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """True while events go through the spool (Kafka away, or the spool still draining)."""
        return self._pipeline.spooling

    async def flush(self) -> None:
        """Wait until every event published so far is acknowledged by Kafka or spooled."""
        await self._pipeline.wait(lambda: self._state == "closed" or self._pipeline.handed_off())

    async def wait_delivered(self) -> None:
        """Wait until every event published so far is acknowledged by Kafka (spool drained)."""
        await self._pipeline.wait(lambda: self._state == "closed" or self._pipeline.delivered())

    def collect_metrics(self, out: Families) -> None:
        """Counters and gauges for /metrics, read at scrape time."""
        pipeline = self._pipeline
        gauges = {
            "event_queue_bytes": ("Bytes of events waiting for the sender.",
                                  pipeline.queued_bytes + pipeline.inflight_bytes),
            "event_spool_bytes": ("Bytes the event spool takes on disk.", pipeline.spool.bytes),
            "event_spool_pending_bytes": ("Bytes of spooled events not yet delivered.",
                                          pipeline.spool.pending_bytes),
            "event_reserved_bytes": ("Room held for admitted requests' events.", self._reserved_bytes),
            "event_spooling": ("1 while events go through the spool (Kafka away or draining).",
                               int(pipeline.spooling)),
        }
        self.metrics.producer_restarts = pipeline.delivery.restarts
        self.metrics.collect(out, gauges)
        out.counter("event_spool_corrupt_records_total", "Damaged spool regions skipped after a crash.").add(
            pipeline.spool.stats.corrupt_records)
