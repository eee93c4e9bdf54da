"""Moving queued events to Kafka, through the spool while Kafka is away (see publisher.py).

Two tasks on the gateway's event loop:

- the *sender* takes batches off the queue. In direct mode it hands one batch at a time to the
  producer and waits for its acks; a batch that fails or is not acknowledged within the send
  timeout switches to spool mode, and its unacknowledged events are the first ones spooled. In
  spool mode it appends every batch to the spool (one fsync per batch).
- the *drainer*, in spool mode, sends the spool's oldest batch and acks it in the spool only
  once Kafka acknowledged all of it, retrying with backoff while the broker is away. When the
  spool is empty (and no append is under way) it switches back to direct mode.

Only one of them talks to the producer at a time, and nothing spooled is overtaken by a direct
send, which is what keeps each request's events in order across an outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from services.gateway.events.delivery import DeliveryBatch, KafkaDelivery
from services.gateway.events.metrics import PublisherMetrics
from services.gateway.events.settings import PublisherSection
from services.gateway.events.spool import Spool, SpoolError, SpoolRecord
from shared.log_throttle import LogThrottle
from shared.retry import Backoff, pause

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class QueuedEvent:
    record: SpoolRecord
    size: int
    token_chunk: bool


class EventPipeline:
    """The queue, the sender and the drainer; the publisher decides what may enter."""

    def __init__(
        self, section: PublisherSection, spool: Spool, delivery: KafkaDelivery, metrics: PublisherMetrics
    ) -> None:
        self._section = section
        self.spool = spool
        self.delivery = delivery
        self.metrics = metrics
        self.queue: deque[QueuedEvent] = deque()
        self.queued_bytes = 0
        self._inflight: list[QueuedEvent] = []
        self.inflight_bytes = 0
        self._inflight_delivery: DeliveryBatch | None = None
        # A direct batch that timed out with records still in the producer: (batch, indices of
        # the records also written to the spool).
        self._limbo: tuple[DeliveryBatch, frozenset[int]] | None = None
        self.spooling = False
        self.spool_failed = False
        self._append_task: asyncio.Future[None] | None = None
        self._accepting = True
        self._wake = asyncio.Event()
        self._spool_signal = asyncio.Event()
        self._drainer_stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._sender_task: asyncio.Task[None] | None = None
        self._drainer_task: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.spooling = self.spool.pending_bytes > 0  # the last run left events: they go first
        self._sender_task = asyncio.create_task(self._send_loop(), name="event-publisher-sender")
        self._drainer_task = asyncio.create_task(self._drain_loop(), name="event-publisher-drainer")

    def enqueue(self, item: QueuedEvent) -> None:
        self.queue.append(item)
        self.queued_bytes += item.size
        self._wake.set()

    async def close(self, budget: float) -> None:
        """Flush the queue (to Kafka or the spool) within ``budget`` seconds, then stop."""
        assert self._sender_task is not None and self._drainer_task is not None
        started = time.monotonic()
        self._accepting = False
        self._wake.set()
        done, _ = await asyncio.wait({self._sender_task}, timeout=budget)
        if not done:
            await self._spool_leftovers()
        self._drainer_stop.set()
        self._spool_signal.set()
        done, _ = await asyncio.wait({self._drainer_task}, timeout=max(0.1, budget - (time.monotonic() - started)))
        if not done:
            # Its batch stays unacked in the spool: sent again (maybe twice) after the restart.
            self._drainer_task.cancel()
            await asyncio.wait({self._drainer_task})
        # In direct mode the producer holds nothing unacknowledged; in spool mode whatever it
        # holds is in the spool too, so a short flush only spares duplicates after a restart.
        flush_budget = min(self._section.send_timeout_seconds, budget - (time.monotonic() - started))
        if not await self.delivery.close(max(0.1, flush_budget)):
            log.warning("Kafka producer closed before delivering everything it held")
        await asyncio.to_thread(self.spool.close)
        self._notify()
        if self.spool.pending_bytes:
            log.warning(
                "event spool kept for the next start",
                extra={"spool_dir": str(self.spool.directory), "spool_bytes": self.spool.pending_bytes},
            )

    async def _spool_leftovers(self) -> None:
        """Close ran out of time: stop the sender and write what it still held to the spool."""
        assert self._sender_task is not None
        self._sender_task.cancel()
        await asyncio.wait({self._sender_task})
        if self._append_task is not None:
            await asyncio.wait({self._append_task})  # a started write finishes, then counts
        await self.delivery.retire()
        leftovers: list[QueuedEvent] = []
        if self._inflight_delivery is not None:
            self._inflight_delivery.settle()
            leftovers += [self._inflight[i] for i in self._inflight_delivery.pending()]
        leftovers += self.queue
        self.queue.clear()
        self.queued_bytes = 0
        self.spooling = True
        await self._append(leftovers)

    # -- sender ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                if self.spooling:
                    await self._spool_items(batch)
                else:
                    await self._send_direct(batch)
            except Exception:  # a bug here must not silence the publisher for good
                log.exception("event sender failed on a batch; spooling it")
                self.spooling = True
                self._inflight_delivery = None
                await self._spool_items(batch)
            self._inflight = []
            self.inflight_bytes = 0
            self._notify()

    async def _next_batch(self) -> list[QueuedEvent] | None:
        while not self.queue:
            if not self._accepting:
                return None
            self._wake.clear()
            await self._wake.wait()
        max_events, max_bytes = self._section.batch_max_events, self._section.batch_max_bytes
        linger = self._section.batch_linger_ms / 1000
        if (linger > 0 and self._accepting and not self.spooling and len(self.queue) < max_events
                and self.queued_bytes < max_bytes):
            # Let a batch gather (settings.batch_linger_ms): the per-batch work (our delivery,
            # aiokafka's produce request and acks) is most of an event's cost when batches are
            # small. close() stops accepting first, so a lingering sender adds at most this wait.
            await asyncio.sleep(linger)
        batch: list[QueuedEvent] = []
        size = 0
        while self.queue and len(batch) < max_events and (not batch or size + self.queue[0].size <= max_bytes):
            item = self.queue.popleft()
            batch.append(item)
            size += item.size
        self.queued_bytes -= size
        self._inflight = batch
        self.inflight_bytes = size
        return batch

    async def _send_direct(self, items: list[QueuedEvent]) -> None:
        delivery = DeliveryBatch([item.record for item in items])
        self._inflight_delivery = delivery
        result = await self.delivery.deliver(delivery)
        self._inflight_delivery = None
        self.metrics.events_sent_direct += result.newly_acked
        self._count_rejected([items[i] for i, _ in result.newly_rejected], result.newly_rejected)
        if result.error is not None:
            self._send_failed(result.error, spooled=True)
            self.spooling = True
            unacked = delivery.pending()
            if delivery.in_flight():
                # Still in the producer, which retries them in the same session (so the broker
                # dedupes a retry of what it wrote before dying). The drainer waits for their
                # outcome before sending anything and skips the spooled copies that got through.
                self._limbo = (delivery, frozenset(unacked))
            await self._spool_items([items[i] for i in unacked])

    async def _spool_items(self, items: list[QueuedEvent]) -> None:
        # Shielded: a write that has started completes and is counted even if close() cancels
        # the sender meanwhile (close waits for it instead of writing the events twice).
        self._append_task = asyncio.ensure_future(self._append(items))
        await asyncio.shield(self._append_task)

    async def _append(self, items: list[QueuedEvent]) -> None:
        try:
            kept = self._fit(items)
            if not kept:
                return
            try:
                await asyncio.to_thread(self.spool.append, [item.record for item in kept])
            except SpoolError as exc:  # SpoolFull included: nothing of the batch was written
                self.spool_failed = True
                log.error("cannot write the event spool", extra={"error": str(exc)})
                self.lose(kept, "spool_error")
                return
            self.spool_failed = False
            self.metrics.events_spooled += len(kept)
        finally:
            self._spool_signal.set()

    def _fit(self, items: list[QueuedEvent]) -> list[QueuedEvent]:
        """The items that fit in the spool: token chunks give way first, then the newest events."""
        room = self.spool.room
        total = sum(item.size for item in items)
        if total <= room:
            return items
        kept = list(items)
        for item in reversed(items):
            if total <= room:
                break
            if item.token_chunk:
                kept.remove(item)
                total -= item.size
                self.lose([item], "spool_full")
        while kept and total > room:
            # Only happens when requests' events outgrew their reservations.
            item = kept.pop()
            total -= item.size
            self.lose([item], "spool_full")
        return kept

    def _appending(self) -> bool:
        return self._append_task is not None and not self._append_task.done()

    # -- drainer -----------------------------------------------------------------------------

    async def _drain_loop(self) -> None:
        section = self._section
        backoff = Backoff(section.retry_initial_seconds, section.retry_max_seconds)
        # Values of spooled records that the producer delivered after all (see _send_direct).
        delivered_anyway: Counter[bytes] = Counter()
        while not self._drainer_stop.is_set():
            if self._limbo is not None:
                await self._resolve_limbo(delivered_anyway)
                continue
            if not self.spooling or self.spool.pending_bytes == 0:
                if self.spooling and not self._appending():
                    self.spooling = False  # everything spooled is delivered: back to direct
                    delivered_anyway.clear()
                    log.info("event spool drained; sending directly again")
                    self._notify()
                self._spool_signal.clear()
                await self._spool_signal.wait()
                continue
            try:
                batch = await asyncio.to_thread(self.spool.read, section.batch_max_events, section.batch_max_bytes)
                if not batch.records and not batch.corrupt_records:
                    # Nothing readable although bytes are pending: a bookkeeping bug. Wait for
                    # the next append rather than spin on the disk.
                    log.error("event spool reports pending bytes but yields no records")
                    self._spool_signal.clear()
                    await self._spool_signal.wait()
                    continue
                delivery = DeliveryBatch(batch.records)
                skipped: Counter[bytes] = Counter()
                for i, record in enumerate(batch.records):
                    if delivered_anyway[record.value] > skipped[record.value]:
                        skipped[record.value] += 1
                        delivery.acked[i] = True
                if not await self._drain_batch(delivery):
                    return  # stopping: the batch stays in the spool, unacked
                await asyncio.to_thread(self.spool.ack, batch)
                # Counted (and forgotten) only once acked: a failed ack reads the batch again.
                delivered_anyway.subtract(skipped)
                self.metrics.events_spool_skipped += skipped.total()
                if batch.corrupt_records:
                    log.error("skipped damaged records in the event spool",
                              extra={"regions": batch.corrupt_records, "bytes": batch.corrupt_bytes})
                backoff.reset()
                self._notify()
            except Exception:
                log.exception("event spool drainer failed; retrying")
                if not await pause(backoff.next(), self._drainer_stop):
                    return

    async def _resolve_limbo(self, delivered_anyway: Counter[bytes]) -> None:
        assert self._limbo is not None
        delivery, spooled = self._limbo
        if delivery.in_flight():
            result = await self.delivery.deliver(delivery, send=False)
            self.metrics.events_sent_direct += result.newly_acked
            if delivery.in_flight():  # the broker is still away: keep waiting, unless stopping
                self._send_failed(result.error or TimeoutError(), spooled=False)
                if self._drainer_stop.is_set():
                    self._limbo = None
                return
        for i in spooled:
            if delivery.acked[i]:
                delivered_anyway[delivery.records[i].value] += 1
        self._limbo = None

    async def _drain_batch(self, delivery: DeliveryBatch) -> bool:
        """Deliver a spooled batch, retrying until it is all acknowledged; False if stopping."""
        section = self._section
        backoff = Backoff(section.retry_initial_seconds, section.retry_max_seconds)
        while delivery.pending():
            result = await self.delivery.deliver(delivery)
            self.metrics.events_sent_from_spool += result.newly_acked
            self._count_rejected(None, result.newly_rejected)
            if result.error is None:
                break
            self._send_failed(result.error, spooled=False)
            if self._drainer_stop.is_set():
                return False
            if not delivery.in_flight():
                # The send itself failed (no broker to connect to): wait before trying again.
                # Records still in flight need no pause: the next deliver() keeps waiting.
                if not await pause(backoff.next(), self._drainer_stop):
                    return False
        return True

    # -- accounting --------------------------------------------------------------------------

    def drop_chunk(self, reason: str) -> bool:
        self.metrics.token_chunks_dropped[reason] += 1
        held = self._throttle.ready(f"chunk:{reason}")
        if held is not None:
            log.warning(
                "dropping token chunk events",
                extra={"reason": reason, "dropped_total": self.metrics.token_chunks_dropped[reason],
                       "not_logged_since_last": held},
            )
        return False

    def lose(self, items: list[QueuedEvent], reason: str) -> None:
        for item in items:
            if item.token_chunk:
                self.drop_chunk(reason)
        others = [item for item in items if not item.token_chunk]
        if others:
            self.metrics.events_lost[reason] += len(others)
            log.error(
                "events lost",
                extra={"reason": reason, "count": len(others),
                       "request_ids": sorted({_request_id(i.record) for i in others})[:20]},
            )

    def _count_rejected(self, items: list[QueuedEvent] | None, rejected: list[tuple[int, BaseException]]) -> None:
        for n, (_, exc) in enumerate(rejected):
            if items is not None and items[n].token_chunk:
                self.drop_chunk("rejected")
            else:
                self.metrics.events_lost["rejected"] += 1
                log.error("Kafka rejected an event", extra={"error": repr(exc)})

    def _send_failed(self, error: BaseException, *, spooled: bool) -> None:
        name = type(error).__name__
        self.metrics.send_errors[name] += 1
        self.metrics.producer_restarts = self.delivery.restarts
        held = self._throttle.ready(f"send:{name}")
        if held is not None:
            log.warning(
                "Kafka unreachable; spooling events" if spooled else "Kafka still unreachable",
                extra={"error": str(error) or name, "spool_bytes": self.spool.bytes, "not_logged_since_last": held},
            )

    # -- waiting -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def handed_off(self) -> bool:
        """Every queued event is acknowledged by Kafka or in the spool."""
        return not (self.queue or self._inflight)

    def delivered(self) -> bool:
        """Every queued event is acknowledged by Kafka (the spool is drained)."""
        return self.handed_off() and not (self.spooling or self.spool.pending_bytes or self._limbo)

    async def wait(self, condition: Callable[[], object]) -> None:
        """Return once ``condition()`` holds (checked after each batch, append and ack)."""
        while not condition():
            await self._progress.wait()


def _request_id(record: SpoolRecord) -> str:
    return record.key.decode("utf-8", "replace") if record.key else ""
