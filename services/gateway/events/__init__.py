"""How the gateway publishes inference events without ever blocking a request on Kafka.

``publisher`` (the API: admission and publish), ``pipeline`` (queue, sender, drainer), ``spool``
(the bounded on-disk buffer used while the broker is away), ``delivery`` (the producer and
per-record acks), ``coalesce`` (token deltas into token-chunk events), ``metrics`` and
``settings``. See docs/gateway-events.md.
"""

from services.gateway.events.coalesce import CoalescedChunk, TokenCoalescer
from services.gateway.events.metrics import PublisherMetrics
from services.gateway.events.publisher import (
    EventPublisher,
    EventTooLarge,
    PublisherClosed,
    PublisherError,
    PublisherFull,
    Reservation,
)
from services.gateway.events.settings import PublisherSection
from services.gateway.events.spool import Spool, SpoolError, SpoolFull, SpoolLocked, SpoolRecord

__all__ = [
    "CoalescedChunk",
    "EventPublisher",
    "EventTooLarge",
    "PublisherClosed",
    "PublisherError",
    "PublisherFull",
    "PublisherMetrics",
    "PublisherSection",
    "Reservation",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "SpoolRecord",
    "TokenCoalescer",
]
