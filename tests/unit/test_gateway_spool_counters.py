"""The gateway's spool counters when a direct batch times out and the producer it stays in
delivers it after all (services/gateway/events/pipeline.py): its events were spooled too, the
drainer acks those copies without sending them, and the counters say so, so that
spooled = sent from the spool + skipped. A pure unit: the pipeline with a real spool in a
temporary folder and a stand-in for the producer that holds the batch until released."""

from __future__ import annotations

import asyncio
from pathlib import Path

from services.gateway.events.delivery import DeliveryBatch, DeliveryResult
from services.gateway.events.metrics import PREFIX, PublisherMetrics
from services.gateway.events.pipeline import EventPipeline, QueuedEvent
from services.gateway.events.settings import PublisherSection
from services.gateway.events.spool import Spool, SpoolRecord
from shared.prometheus import Families


class HeldByTheProducer:
    """Records stay in flight (the broker away) until ``released``, then are acknowledged."""

    restarts = 0

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def deliver(self, batch: DeliveryBatch, *, send: bool = True) -> DeliveryResult:
        loop = asyncio.get_running_loop()
        if send:
            for i in batch.unsent():
                batch.futures[i] = loop.create_future()
        try:
            await asyncio.wait_for(self.released.wait(), 0.05)  # the send timeout
        except TimeoutError:
            return DeliveryResult(0, [], TimeoutError())
        for future in batch.futures:
            if future is not None and not future.done():
                future.set_result(None)
        acked, _ = batch.settle()
        return DeliveryResult(acked, [], None)

    async def retire(self) -> None:
        pass

    async def close(self, budget: float) -> bool:
        return True


def five_events_held(section: PublisherSection, spool: Spool) -> tuple[HeldByTheProducer, PublisherMetrics, EventPipeline]:
    """A started pipeline on ``spool`` with five events queued, their direct batch held by the producer."""
    spool.open()
    producer = HeldByTheProducer()
    metrics = PublisherMetrics()
    pipeline = EventPipeline(section, spool, producer, metrics)  # type: ignore[arg-type]
    pipeline.start()
    for n in range(5):
        record = SpoolRecord("inference", f"req-{n}".encode(), f"event {n}".encode())
        pipeline.enqueue(QueuedEvent(record, len(record.value), token_chunk=False))
    return producer, metrics, pipeline


async def test_spooled_copies_of_events_the_producer_delivered_after_all_are_counted_as_skipped(
    tmp_path: Path,
) -> None:
    section = PublisherSection(spool_dir=tmp_path / "spool", batch_linger_ms=0)
    spool = Spool(section.spool_dir, section.spool_max_bytes, section.spool_segment_bytes)
    producer, metrics, pipeline = five_events_held(section, spool)
    async with asyncio.timeout(10):
        await pipeline.wait(lambda: metrics.events_spooled == 5)  # timed out: spooled, still in flight
        producer.released.set()  # the broker is back: the producer delivers them
        await pipeline.wait(pipeline.delivered)
    await pipeline.close(1.0)

    assert (metrics.events_sent_direct, metrics.events_spooled) == (5, 5)
    assert (metrics.events_sent_from_spool, metrics.events_spool_skipped) == (0, 5)
    assert metrics.events_spooled == metrics.events_sent_from_spool + metrics.events_spool_skipped
    scrape = Families(PREFIX)
    metrics.collect(scrape, {})
    samples = {sample.name: sample.value for family in scrape for sample in family.samples}
    assert samples["promptpulse_gateway_events_spool_skipped_total"] == 5


class AckFailsOnce(Spool):
    """A spool whose first ack fails (a disk error): the drainer retries the same batch."""

    acks = 0

    def ack(self, batch: object) -> None:
        self.acks += 1
        if self.acks == 1:
            raise OSError("disk error")
        super().ack(batch)  # type: ignore[arg-type]


async def test_a_skipped_copy_whose_ack_failed_is_counted_once_when_retried(tmp_path: Path) -> None:
    # The drainer's first ack of the skipped copies fails and it reads them again: they are still
    # skipped (the producer delivered them), counted once, and none is sent from the spool.
    section = PublisherSection(spool_dir=tmp_path / "spool", batch_linger_ms=0, retry_initial_seconds=0.01)
    spool = AckFailsOnce(section.spool_dir, section.spool_max_bytes, section.spool_segment_bytes)
    producer, metrics, pipeline = five_events_held(section, spool)
    async with asyncio.timeout(10):
        await pipeline.wait(lambda: metrics.events_spooled == 5)
        producer.released.set()
        await pipeline.wait(pipeline.delivered)
    await pipeline.close(1.0)

    assert spool.acks == 2  # the retry happened
    assert (metrics.events_sent_direct, metrics.events_spooled) == (5, 5)
    assert (metrics.events_sent_from_spool, metrics.events_spool_skipped) == (0, 5)
