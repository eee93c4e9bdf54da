"""Publishing evaluations and dead letters through the project's idempotent, acks=all producer.

A publish returns only when the broker has acknowledged every record, because only then may
the offsets of the judged events be released for committing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from shared.events.codec import encode, event_key
from shared.events.messages import Evaluation
from shared.telemetry.propagation import KafkaHeaders, header_list

DLQ_REASON_HEADER = "pp-dlq-reason"
DLQ_DETAIL_HEADER = "pp-dlq-detail"
DLQ_TOPIC_HEADER = "pp-dlq-topic"
DLQ_PARTITION_HEADER = "pp-dlq-partition"
DLQ_OFFSET_HEADER = "pp-dlq-offset"
DLQ_SERVICE_HEADER = "pp-dlq-service"
_DLQ_HEADERS = {
    DLQ_REASON_HEADER, DLQ_DETAIL_HEADER, DLQ_TOPIC_HEADER, DLQ_PARTITION_HEADER,
    DLQ_OFFSET_HEADER, DLQ_SERVICE_HEADER,
}


class RecordSender(Protocol):
    """What publishing needs of aiokafka's producer (which ships no types): ``send`` returns
    once the record is queued, with an awaitable that ends when the broker has acknowledged it."""

    async def send(
        self, topic: str, *, value: bytes | None, key: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
    ) -> Awaitable[Any]: ...


class Publisher:
    def __init__(self, producer: RecordSender, evaluations_topic: str, deadletter_topic: str) -> None:
        self._producer = producer
        self.evaluations_topic = evaluations_topic
        self.deadletter_topic = deadletter_topic

    async def publish_evaluations(self, events: Sequence[Evaluation]) -> None:
        """Send every event (keyed by request id) and wait until the broker has them all."""
        deliveries = []
        for event in events:
            record = encode(event)
            deliveries.append(
                await self._producer.send(
                    self.evaluations_topic, value=record.value, key=event_key(event),
                    headers=record.headers,
                )
            )
        # One after the other rather than gather: the broker acknowledges a batch at once, so
        # this waits as long, without gather's wrapper future and callbacks per record.
        try:
            for delivery in deliveries:
                await delivery
        except BaseException:
            for delivery in deliveries:  # the caller retries them all: their errors are seen
                if isinstance(delivery, asyncio.Future):
                    delivery.add_done_callback(_seen)
            raise

    async def dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: KafkaHeaders,
        reason: str,
        detail: str,
    ) -> None:
        """Copy a record that cannot be processed, as it was, to the dead-letter topic with why."""
        kept: list[tuple[str, bytes | None]] = []
        try:
            for name, header_value in header_list(headers):
                if name not in _DLQ_HEADERS and isinstance(header_value, bytes | bytearray):
                    kept.append((str(name), bytes(header_value)))
        except (TypeError, ValueError):
            kept = []  # unreadable headers: the reason says so, the body is still kept
        kept += [
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_DETAIL_HEADER, detail[:300].encode("utf-8", "replace")),
            (DLQ_TOPIC_HEADER, topic.encode()),
            (DLQ_PARTITION_HEADER, str(partition).encode()),
            (DLQ_OFFSET_HEADER, str(offset).encode()),
            (DLQ_SERVICE_HEADER, b"processor"),
        ]
        key_bytes = bytes(key) if isinstance(key, bytes | bytearray | memoryview) else None
        value_bytes = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None
        delivery = await self._producer.send(
            self.deadletter_topic, value=value_bytes, key=key_bytes, headers=kept
        )
        await delivery


def _seen(delivery: asyncio.Future[Any]) -> None:
    """Retrieve a failed delivery's error, so asyncio does not log it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError):
        delivery.exception()
