"""The ingest loop: Kafka micro-batches into Postgres, exactly once in effect.

- Batches close on size (``batch_max_records``) or time (``batch_max_wait_ms`` after the first
  record); each is stored by one transaction (writer.py) that also stores its offsets.
- Two-stage pipeline: while batch N is being written, batch N+1 is fetched and decoded (Python
  work overlapping Postgres work: the decode yields to the event loop every 50 records, so
  the write's next statement goes out as soon as Postgres answers the last one).
  Batches are written strictly one after another, in order.
- Positions come from Postgres, not Kafka (positioning.py): on assignment every partition is
  paused until its stored offset is read and sought to (the beginning when none is stored).
  Kafka commits are best effort, only so that lag tools see progress. That includes the first
  assignment, which aiokafka makes inside ``consumer.start()`` (it waits for it): the listener
  then works on the consumer being started, or the partitions would start from Kafka's
  committed offsets.
- Postgres away: the batch being written is retried (store.py) and every partition is paused,
  so at most two batches are held (the one being written and the next one) plus aiokafka's
  bounded fetch buffers; the loop keeps polling so the group does not evict this member. When
  the retry commits, consumption resumes by itself, however the batch got stored (a retry, or
  halves after Postgres refused a record: that path once returned without ending the outage,
  and every partition stayed paused for good; tests/integration/test_aggregator_consumer_stall.py).
- Rebalances while positioning: the listener runs inside aiokafka's coordinator, so a second
  rebalance can only land while the *loop* is positioning. Each assignment has a number; a
  positioning that sees the number change stops and leaves the rest to the new assignment's
  listener (its offsets may have been read before the revocation, and ``seek_to_beginning``
  gives up silently when the assignment it was called for ends). A partition is taken off
  ``_unpositioned`` only once it is really positioned in the current assignment.
- Safety net: whenever the loop is idle, a partition paused with no reason (positioned, no
  Postgres outage, no batch waiting for one) is logged and resumed.
- Stall detection (stall.py) watches this loop from outside: it reads ``intake_positions()``
  and ``intake_hold()``, kept up to date here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.aggregator.ingest.decode import RecordDecoder, SamplingPolicy
from services.aggregator.ingest.positioning import PartitionPositioning, Rebalance
from services.aggregator.ingest.stall import IntakeHold, intake_watched
from services.aggregator.ingest.store import BatchStore, IngestStats
from services.aggregator.retention import PartitionCache
from services.aggregator.settings import AggregatorSettings
from shared.kafka import make_consumer
from shared.plausibility import Plausibility
from shared.retry import Backoff, pause
from shared.topics import Topics

log = logging.getLogger(__name__)

_IDLE_POLL_MS = 500  # how often an idle loop wakes up to notice stop()
_PAUSED_POLL_MS = 100


class Ingestor(PartitionPositioning):
    """Owns one consumer; ``run()`` until ``stop()``. Positioning and pausing its partitions:
    PartitionPositioning (positioning.py)."""

    def __init__(
        self,
        settings: AggregatorSettings,
        pool: asyncpg.Pool,
        sampling: SamplingPolicy,
        *,
        partitions: PartitionCache | None = None,
        plausibility: Plausibility | None = None,
    ) -> None:
        self._settings = settings
        self._section = settings.aggregator
        self._pool = pool
        self._group = settings.group_id()
        topics = Topics.from_settings(settings)
        self.topics = (topics.inference, topics.evaluations, topics.feedback, topics.spans)
        self.stats = IngestStats()
        self._store = BatchStore(
            pool,
            RecordDecoder(topics.spans, sampling, plausibility or Plausibility(settings.plausibility)),
            partitions or PartitionCache(),
            self._section,
            group=self._group,
            stats=self.stats,
            on_outage=self._set_outage,
            on_committed=self._commit_to_kafka,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._starting: AIOKafkaConsumer | None = None  # inside consumer.start(): first assignment
        self._unpositioned: set[TopicPartition] = set()
        self._assignments = 0  # numbers the assignments, so positioning notices a newer one
        # The rebalance callback and the loop may both try to position partitions.
        self._positioning = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._outage = False  # a batch cannot be stored: every partition stays paused
        self._kafka_commit: asyncio.Task | None = None
        self._writing: asyncio.Task | None = None
        self._writing_count = 0
        # For stall detection (IntakeWatch): per assigned partition, the next offset taken in and
        # how many records were, since its assignment; records taken in overall; and the loop's
        # waits on purpose (a batch being written, positioning): how many began, how many last.
        self._intake: dict[TopicPartition, tuple[int, int]] = {}
        self._taken_in = 0
        self._waits = 0
        self._waiting = 0

    # -- lifecycle and state -----------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._store.stopping = True

    @property
    def outage(self) -> bool:
        """True while a batch waits for Postgres and consumption is paused."""
        return self._outage

    @property
    def ready(self) -> bool:
        """Consuming, Postgres reachable, every assigned partition positioned. A replica with no
        partitions (more replicas than partitions) is ready too: it can still serve queries."""
        return self._consumer is not None and self.stats.database_available and not self._unpositioned

    def paused_partitions(self) -> set[TopicPartition]:
        return set(self._consumer.paused()) if self._consumer is not None else set()

    def assigned_partitions(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def intake_positions(self) -> dict[TopicPartition, tuple[int | None, int]]:
        """Every assigned partition that is positioned: (next offset taken in, records taken
        in since its assignment). Position None: positioned, but not known (never expected)."""
        watched = intake_watched(self.assigned_partitions(), self._unpositioned)
        return {tp: self._intake.get(tp, (None, 0)) for tp in watched}

    def intake_hold(self) -> IntakeHold:
        return IntakeHold(
            outage=self._outage or not self.stats.database_available,
            waiting=self._waiting > 0,
            waits=self._waits,
            taken_in=self._taken_in,
        )

    def partition_state(self, tp: TopicPartition) -> dict[str, Any]:
        """The ingest's own view of one partition, for the stall WARNING."""
        consumer = self._consumer
        return {
            "paused": consumer is not None and tp in consumer.paused(),
            "outage": self._outage,
            "batch_writing": self._writing is not None and not self._writing.done(),
        }

    @contextlib.contextmanager
    def _waiting_on_purpose(self) -> Iterator[None]:
        self._waits += 1
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def run(self) -> None:
        consumer = await self._started_consumer()
        if consumer is None:
            return
        self._consumer = consumer
        try:
            while not self._stopping.is_set():
                if self._unpositioned:
                    await self._position()
                records = await self._collect()
                if not records:
                    await self._reap_writer(block=False)
                    self._resume_unexplained_pauses()
                    continue
                self._hold(len(records))
                decoded = await self._store.decode_yielding(records)  # overlaps the previous batch's write
                await self._reap_writer(block=True)
                self._writing_count = len(records)
                self._writing = asyncio.create_task(self._store.store(records, decoded))
            await self._reap_writer(block=True)
        finally:
            if self._writing is not None and not self._writing.done():
                self._writing.cancel()  # only when run() itself is cancelled: re-read later
            self._consumer = None
            if self._kafka_commit is not None:
                self._kafka_commit.cancel()
            await consumer.stop()

    async def _started_consumer(self) -> AIOKafkaConsumer | None:
        """A started consumer, retrying while the brokers cannot be reached (a stopped aiokafka
        consumer cannot start again, so each try builds a new one); None if stopped first."""
        backoff = Backoff(1.0, 30.0)
        while not self._stopping.is_set():
            consumer = make_consumer(
                self._settings,
                group_id=self._group,
                client_id="promptpulse-aggregator",
                max_poll_records=self._section.batch_max_records,
            )
            consumer.subscribe(topics=list(self.topics), listener=Rebalance(self))
            self._starting = consumer
            try:
                await consumer.start()
                return consumer
            except KafkaError as exc:
                wait = backoff.next()
                log.warning("cannot reach Kafka, retrying in %.0fs: %r", wait, exc)
                self._unpositioned.clear()
                await consumer.stop()
            finally:
                self._starting = None
            await pause(wait, self._stopping)
        return None

    async def _reap_writer(self, *, block: bool) -> None:
        """Wait for the batch being written (polling the paused consumer meanwhile when
        Postgres is away), or just collect it if it is done."""
        task = self._writing
        if task is None:
            return
        if block and not task.done():
            with self._waiting_on_purpose():  # the write path holds intake back: never a stall
                while not task.done():
                    if self._outage:
                        await self._poll_paused()
                    else:
                        await asyncio.wait({task}, timeout=_PAUSED_POLL_MS / 1000)
        if task.done():
            self._writing, self._writing_count = None, 0
            self._hold(0)
            task.result()  # a bug in the writer must surface, not vanish with the task

    def _hold(self, in_hand: int) -> None:
        held = in_hand + self._writing_count
        self.stats.held_records = held
        self.stats.max_held_records = max(self.stats.max_held_records, held)

    def _set_outage(self, outage: bool) -> None:
        if outage != self._outage:
            log.info("consumption %s", "paused until Postgres is back" if outage else "resumed")
        self._outage = outage
        self._sync_pause()

    # -- fetching ----------------------------------------------------------------------------

    async def _collect(self) -> list[Any]:
        """Records for one batch: until full, or batch_max_wait_ms after the first arrived."""
        consumer = self._consumer
        assert consumer is not None
        limit = self._section.batch_max_records
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < limit and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = _IDLE_POLL_MS
            else:
                timeout_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            try:
                fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=limit - len(records))
            except KafkaError as exc:
                log.warning("kafka fetch failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            for tp, batch in fetched.items():
                if batch:
                    self._take_in(tp, batch)
                records.extend(batch)
            if records and deadline is None:
                deadline = time.monotonic() + self._section.batch_max_wait_ms / 1000
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not records and (self._unpositioned or (self._writing is not None and self._writing.done())):
                break  # let the loop position partitions or collect the finished write
        return records

    def _take_in(self, tp: TopicPartition, batch: list[Any]) -> None:
        _, seen = self._intake.get(tp, (None, 0))
        self._intake[tp] = (batch[-1].offset + 1, seen + len(batch))
        self._taken_in += len(batch)

    async def _poll_paused(self) -> None:
        # Paused partitions return nothing, but each getmany counts as a poll, which keeps
        # this member in the group (max_poll_interval_ms) through a long outage.
        consumer = self._consumer
        assert consumer is not None
        self._sync_pause()  # partitions assigned meanwhile must stay paused too
        try:
            fetched = await consumer.getmany(timeout_ms=_PAUSED_POLL_MS)
        except KafkaError:
            return
        for tp, batch in fetched.items():
            # Only possible if a partition slipped in unpaused; never drop it: rewind.
            if batch and tp in consumer.assignment():
                consumer.seek(tp, batch[0].offset)

    def _commit_to_kafka(self, next_offsets: dict[tuple[str, int], int]) -> None:
        consumer = self._consumer
        if consumer is None or (self._kafka_commit is not None and not self._kafka_commit.done()):
            return
        assigned = consumer.assignment()
        offsets = {TopicPartition(*tp): o for tp, o in next_offsets.items() if TopicPartition(*tp) in assigned}
        if offsets:
            self._kafka_commit = asyncio.create_task(self._kafka_commit_quietly(consumer, offsets))

    @staticmethod
    async def _kafka_commit_quietly(consumer: AIOKafkaConsumer, offsets: dict) -> None:
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance in progress, the broker away: lag display only
            log.debug("best-effort Kafka commit failed: %r", exc)

