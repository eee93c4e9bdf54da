"""Publishing evaluations and dead letters through the project's idempotent, acks=all producer.

A publish returns only when the broker has acknowledged every record, because only then may
the offsets of the judged events be released for committing.

Evaluations are gathered for ``gather_seconds`` and handed to the producer together: judged
requests finish one at a time, and aiokafka lingers each partition's batch from its own first
record, so their batches fell due at staggered times and went out one partition per produce
request (measured: 725 requests for 3,026 evaluations over 6 partitions, ~4 records each, the
requests' socket writes ~4% of the processor's CPU; docs/processor.md, "Session 9").
Handed over in one loop turn to a producer that does not linger (services/processor/app.py),
every partition's batch is there when the sender next runs: one request per node per gathering.
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
    def __init__(
        self, producer: RecordSender, evaluations_topic: str, deadletter_topic: str, gather_seconds: float = 0.0
    ) -> None:
        self._producer = producer
        self.evaluations_topic = evaluations_topic
        self.deadletter_topic = deadletter_topic
        self._gather_seconds = gather_seconds
        # Publishes waiting for the next hand-over: their events, and the future of their deliveries.
        self._gathered: list[tuple[Sequence[Evaluation], asyncio.Future[list[Awaitable[Any]]]]] = []
        self._hand_over: asyncio.TimerHandle | None = None
        self._handing_over: set[asyncio.Task[None]] = set()

    async def publish_evaluations(self, events: Sequence[Evaluation]) -> None:
        """Send every event (keyed by request id) and wait until the broker has them all."""
        if self._gather_seconds > 0:
            loop = asyncio.get_running_loop()
            sent: asyncio.Future[list[Awaitable[Any]]] = loop.create_future()
            self._gathered.append((events, sent))
            if self._hand_over is None:
                self._hand_over = loop.call_later(self._gather_seconds, self._start_hand_over)
            try:
                deliveries = await sent  # cancelled here: its events are not handed over
            except asyncio.CancelledError:
                _handed_over_unwaited(sent)  # unless cancelled in its hand-over's own turn
                raise
        else:
            deliveries = await self._send(events)
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

    async def _send(self, events: Sequence[Evaluation]) -> list[Awaitable[Any]]:
        deliveries = []
        for event in events:
            record = encode(event)
            deliveries.append(
                await self._producer.send(
                    self.evaluations_topic, value=record.value, key=event_key(event),
                    headers=record.headers,
                )
            )
        return deliveries

    def _start_hand_over(self) -> None:
        self._hand_over = None
        gathered, self._gathered = self._gathered, []
        task = asyncio.get_running_loop().create_task(self._hand_over_all(gathered))
        self._handing_over.add(task)  # held: the loop keeps only a weak reference to a task
        task.add_done_callback(self._handing_over.discard)

    async def _hand_over_all(
        self, gathered: list[tuple[Sequence[Evaluation], asyncio.Future[list[Awaitable[Any]]]]]
    ) -> None:
        # aiokafka's send does not yield while its buffer has room, so every record below is
        # appended before its sender next runs: one produce request takes them all.
        for events, sent in gathered:
            if sent.done():  # the publish was cancelled (a worker stopping): nothing to send
                continue
            try:
                deliveries = await self._send(events)
            except Exception as exc:  # this publish's own failure: its caller retries it
                if not sent.done():
                    sent.set_exception(exc)
                continue
            if sent.done():  # cancelled while sending: acknowledgements nobody waits for
                for delivery in deliveries:
                    if isinstance(delivery, asyncio.Future):
                        delivery.add_done_callback(_seen)
            else:
                sent.set_result(deliveries)

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


def _handed_over_unwaited(sent: asyncio.Future[list[Awaitable[Any]]]) -> None:
    """A publish cancelled after its hand-over sent its records, before it ran again: the
    records go to the broker anyway, and a failure of theirs (or of the send) is seen."""
    if sent.done() and not sent.cancelled() and sent.exception() is None:
        for delivery in sent.result():
            if isinstance(delivery, asyncio.Future):
                delivery.add_done_callback(_seen)


def _seen(delivery: asyncio.Future[Any]) -> None:
    """Retrieve a failed delivery's error, so asyncio does not log it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError):
        delivery.exception()
