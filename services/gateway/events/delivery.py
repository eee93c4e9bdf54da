"""Handing batches of records to Kafka and knowing, per record, whether the broker has them.

One idempotent producer (``shared.kafka.make_producer``: acks=all) is kept for as long as it
works, including through a broker outage: a batch not acknowledged within the send timeout stays
*in flight* in the producer, which retries it with the same producer id and sequence numbers, so
if the broker had written it before dying it recognises the retry and keeps one copy. Keeping
the producer's session is what makes a broker restart cost no duplicates.

The producer is *retired* (replaced by a fresh one on the next send) only when a send really
failed: a record's future holds an error, or the producer could not take a record. Its sender
task is stopped and its undelivered batches failed first, so it can never deliver them later,
behind our back, after we have sent the same events again. A new producer has a new id, so the
broker cannot recognise records it resends: those the broker wrote but never acknowledged
reach the topic twice (consumers dedupe on event id). Retiring also avoids aiokafka reusing a
sequence number after a failed batch, which the broker could take for a duplicate.

Retiring reaches into aiokafka's producer (``_sender``, ``_message_accumulator``): there is no
public "abort" in aiokafka (0.11-0.14, as pinned). If those attributes are missing, a plain
``stop()`` bounded by the send timeout is the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import DefaultPartitioner

from services.gateway.events.spool import SpoolRecord
from shared.kafka import SettingsLike, make_producer
from shared.kafka_partitioner import murmur2

log = logging.getLogger(__name__)

# Errors about the record itself: sending it again can never succeed, so it is dropped and
# counted instead of blocking everything behind it. Anything else is about the broker or the
# network and is retried (broker down, leader moving, authorization being fixed).
REJECTED_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
)


@dataclass
class DeliveryBatch:
    """Records being delivered, with what is known about each (kept across attempts)."""

    records: Sequence[SpoolRecord]
    acked: list[bool] = field(init=False)
    rejected: list[BaseException | None] = field(init=False)
    # The producer's delivery future while a record is in flight, else None.
    futures: list[asyncio.Future[Any] | None] = field(init=False)

    def __post_init__(self) -> None:
        count = len(self.records)
        self.acked = [False] * count
        self.rejected = [None] * count
        self.futures = [None] * count

    def pending(self) -> list[int]:
        """Records not delivered yet (in flight or not sent)."""
        return [i for i in range(len(self.records)) if not self.acked[i] and self.rejected[i] is None]

    def unsent(self) -> list[int]:
        return [i for i in self.pending() if self.futures[i] is None]

    def in_flight(self) -> bool:
        return any(f is not None for f in self.futures)

    def settle(self) -> tuple[int, BaseException | None]:
        """Read finished futures: (records newly acked, first transient error seen)."""
        newly_acked = 0
        error = None
        for i, future in enumerate(self.futures):
            if future is None or not future.done():
                continue
            self.futures[i] = None
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                self.acked[i] = True
                newly_acked += 1
            elif isinstance(exc, REJECTED_ERRORS):
                self.rejected[i] = exc
            elif error is None:
                error = exc
        return newly_acked, error


@dataclass(frozen=True)
class DeliveryResult:
    newly_acked: int
    newly_rejected: list[tuple[int, BaseException]]
    # Why the batch is not complete (None when every record is acked or rejected). A
    # TimeoutError means records may still be in flight in a live producer.
    error: BaseException | None


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A retired producer fails futures nobody awaits any more; reading the exception here keeps
    # asyncio from logging "exception was never retrieved" for each of them.
    if not future.cancelled():
        future.exception()


def _fail_unsent(accumulator: Any) -> None:
    """Fail every batch the producer still holds, reading each failure so none is logged as
    "never retrieved" (a batch's drain waiter is only awaited when a send waits for room)."""
    batches = [b for queue in getattr(accumulator, "_batches", {}).values() for b in queue]
    batches += list(getattr(accumulator, "_pending_batches", ()))
    accumulator.fail_all(KafkaConnectionError("producer retired"))
    for batch in batches:
        for future in (getattr(batch, "future", None), getattr(batch, "_drain_waiter", None)):
            if future is not None and future.done():
                _retrieve(future)


class KeyHashMemo:
    """aiokafka's DefaultPartitioner, keeping each key's murmur2 hash for the next records.

    A request's events (request, token chunks, response) share its id as their key, and the
    hash is pure-Python murmur2 (shared.kafka_partitioner's, ~4 us; aiokafka's ~8): computed once
    per request instead.
    Same partition as the default for every key, so a request's events stay in order.
    """

    MAX_KEYS = 4096  # recent requests; forgotten all at once when full (a miss only costs the hash)

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.MAX_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class KafkaDelivery:
    """Owns the producer: sends batches, retires the producer when a send fails."""

    def __init__(
        self,
        kafka: SettingsLike,
        *,
        client_id: str,
        timeout: float,
        max_event_bytes: int,
        **producer_overrides: Any,
    ) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._timeout = timeout
        self._overrides = {"max_request_size": max_event_bytes + 64 * 1024, "partitioner": KeyHashMemo(),
                           **producer_overrides}
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.restarts = 0

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._kafka, self._client_id, **self._overrides)
                try:
                    await producer.start()
                except BaseException:
                    # Half-started (broker away, or cancelled): free its sockets, retry afresh.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), self._timeout)
                    raise
                self._producer = producer
            return self._producer

    async def deliver(self, batch: DeliveryBatch, *, send: bool = True) -> DeliveryResult:
        """Send the batch's unsent records in order (unless ``send`` is False), then wait up to
        the send timeout for every record in flight.

        On a timeout the records stay in flight in the producer (call again to keep waiting);
        on any other failure the producer is retired first, so what ``batch`` says is final for
        the records it does not hold as in flight.
        """
        rejected_before = {i for i, exc in enumerate(batch.rejected) if exc is not None}
        error: BaseException | None = None
        broken = False
        try:
            async with asyncio.timeout(self._timeout):
                unsent = batch.unsent() if send else []
                if unsent:
                    producer = await self._ready()
                    for i in unsent:
                        record = batch.records[i]
                        try:
                            future = await producer.send(
                                record.topic, record.value, key=record.key, headers=list(record.headers)
                            )
                        except REJECTED_ERRORS as exc:
                            batch.rejected[i] = exc
                            continue
                        future.add_done_callback(_retrieve)
                        batch.futures[i] = future
                waiting = [f for f in batch.futures if f is not None]
                if waiting:
                    await asyncio.wait(waiting)
        except TimeoutError:
            error = TimeoutError(f"no acknowledgement within {self._timeout:g}s")
        except Exception as exc:  # KafkaError, OSError: the broker or network, never the data
            error, broken = exc, True
        newly_acked, failure = batch.settle()
        if failure is not None or broken:
            # The producer failed a record, or could not take one: it must not deliver the rest
            # later on its own (no-op when no producer could even be started).
            await self.retire()
            late_acked, _ = batch.settle()  # acks that landed while it stopped
            newly_acked += late_acked
            error = failure or error
        newly_rejected = [
            (i, exc) for i, exc in enumerate(batch.rejected)
            if exc is not None and i not in rejected_before
        ]
        if batch.pending() and error is None:
            error = KafkaConnectionError("delivery incomplete")
        return DeliveryResult(newly_acked, newly_rejected, error if batch.pending() else None)

    async def retire(self) -> None:
        """Drop the producer and every batch it has not delivered (see the module docstring)."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is None:
            return
        self.restarts += 1
        sender = getattr(producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        accumulator = getattr(producer, "_message_accumulator", None)
        if task is not None and accumulator is not None:
            task.cancel()
            # The sender ends its in-flight requests before it stops (each bounded by
            # request_timeout_ms): their acks are the late ones settle() picks up.
            await asyncio.wait({task}, timeout=self._timeout)
            _fail_unsent(accumulator)
        try:
            await asyncio.wait_for(producer.stop(), self._timeout)
        except Exception as exc:  # TimeoutError, KafkaError: it is gone either way
            log.warning("Kafka producer did not stop cleanly", extra={"error": repr(exc)})

    async def close(self, budget: float) -> bool:
        """Flush and stop the producer; True if everything it held was delivered."""
        async with self._lock:
            producer = self._producer
        if producer is None:
            return True
        try:
            async with asyncio.timeout(budget):
                await producer.flush()
        except TimeoutError:
            await self.retire()
            return False
        async with self._lock:
            self._producer = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), budget)
        return True
