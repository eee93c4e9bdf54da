"""Where each partition the ingest is assigned starts reading, and which partitions are paused.

Positions come from Postgres (the ``consumer_offsets`` the batch transactions store), never from
Kafka's committed offsets: on every assignment (the first one inside ``consumer.start()``
included) the new partitions are paused, sought to their stored offsets (the beginning when none
is stored) and only then resumed. consumer.py's docstring tells how this runs through rebalances
and Postgres outages; apart from it because positioning is its own state machine (assignment
numbers, the positioning lock, the unpositioned set) beside the fetch-decode-write loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from services.aggregator.ingest.store import BatchStore
from services.aggregator.settings import AggregatorSection

# The ingest loop's logger: its messages keep the one name operators and tests filter on.
log = logging.getLogger("services.aggregator.ingest.consumer")


class Rebalance(ConsumerRebalanceListener):
    """aiokafka's rebalance callbacks, handed to the ingest (it runs them inside its coordinator)."""

    def __init__(self, ingestor: PartitionPositioning) -> None:
        self._ingestor = ingestor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._ingestor.partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._ingestor.partitions_assigned(set(assigned))


class PartitionPositioning:
    """The ingest's rebalance handling, positioning and pausing (mixed into Ingestor)."""

    if TYPE_CHECKING:  # the ingest's state (consumer.py's Ingestor.__init__)
        _consumer: AIOKafkaConsumer | None
        _starting: AIOKafkaConsumer | None
        _unpositioned: set[TopicPartition]
        _assignments: int
        _positioning: asyncio.Lock
        _intake: dict[TopicPartition, tuple[int, int]]
        _outage: bool
        _writing: asyncio.Task | None
        _pool: asyncpg.Pool
        _group: str
        _store: BatchStore
        _section: AggregatorSection

        def _waiting_on_purpose(self) -> contextlib.AbstractContextManager[None]: ...
        def _set_outage(self, outage: bool) -> None: ...

    async def partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Let the batch in flight commit first: not needed for correctness (a new owner's
        # copy of the same rows is deduplicated), only to spare it re-reading them.
        try:
            await asyncio.wait_for(self._store.in_flight.acquire(), self._section.revoke_wait_seconds)
            self._store.in_flight.release()
        except TimeoutError:
            log.warning("partitions revoked while a batch is still uncommitted")
        self._unpositioned -= revoked
        for tp in revoked:
            self._intake.pop(tp, None)

    @property
    def _member(self) -> AIOKafkaConsumer | None:
        """The consumer the rebalance listener works on: the running one, or the one being
        started (aiokafka's ``start()`` waits for the first assignment, so that assignment's
        partitions must be positioned from Postgres right there, like every later one)."""
        return self._consumer or self._starting

    async def partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._member is None:
            return
        self._assignments += 1
        self._unpositioned |= assigned
        for tp in assigned:
            self._intake.pop(tp, None)  # taken in anew from where positioning puts it
        self._sync_pause()
        await self._position()

    async def _position(self) -> None:
        """Seek unpositioned partitions to their stored offsets; leaves them paused when
        Postgres cannot be read (the loop tries again)."""
        with self._waiting_on_purpose():  # the loop takes nothing in meanwhile: held
            async with self._positioning:
                consumer = self._member
                if consumer is None:
                    return
                self._unpositioned &= consumer.assignment()
                wanted = sorted(self._unpositioned)
                if not wanted:
                    self._sync_pause()
                    return
                generation = self._assignments
                try:
                    positioned = await self._seek_stored(consumer, wanted, generation)
                finally:
                    self._sync_pause()
                if positioned:
                    log.info("positioned %d partitions from stored offsets", positioned)

    async def _seek_stored(self, consumer: AIOKafkaConsumer, wanted: list[TopicPartition], generation: int) -> int:
        """How many of ``wanted`` were positioned; the others stay in ``_unpositioned``."""
        try:
            async with self._pool.acquire(timeout=5) as conn:
                rows = await conn.fetch(
                    "SELECT topic, kafka_partition, next_offset FROM consumer_offsets "
                    "WHERE consumer_group = $1",
                    self._group,
                )
        except Exception as exc:
            self._store.database_down(exc)
            return 0
        self._store.database_up()
        stored = {TopicPartition(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}
        positioned = 0
        for tp in wanted:
            if self._assignments != generation:
                # Reassigned meanwhile: these offsets may predate the revocation's last commit,
                # and the new assignment's listener (waiting for the lock) positions its own.
                log.info("assignment changed while positioning: left to the new assignment")
                break
            if tp not in consumer.assignment():
                continue
            if tp in stored:
                consumer.seek(tp, stored[tp])
                self._intake[tp] = (stored[tp], 0)
            else:
                try:
                    done = await consumer.seek_to_beginning(tp)
                except KafkaError as exc:
                    log.warning("cannot seek %s to its beginning yet: %r", tp, exc)
                    break
                # False: the assignment ended or the reset timed out; position it again later.
                if not done or self._assignments != generation:
                    continue
                try:
                    self._intake[tp] = (await consumer.position(tp), 0)  # known once reset
                except IllegalStateError:
                    continue  # no longer assigned: position it again if it comes back
            self._unpositioned.discard(tp)
            positioned += 1
        return positioned

    def _sync_pause(self) -> None:
        """Paused: every partition during an outage, else the unpositioned ones."""
        consumer = self._member
        if consumer is None:
            return
        assigned = consumer.assignment()
        wanted = assigned if self._outage else (self._unpositioned & assigned)
        paused = consumer.paused()
        if wanted - paused:
            consumer.pause(*sorted(wanted - paused))
        if (paused & assigned) - wanted:
            consumer.resume(*sorted((paused & assigned) - wanted))

    def _resume_unexplained_pauses(self) -> None:
        """Safety net: a partition paused although it is positioned, no batch waits for
        Postgres and none is being written would never be read again. Say so, and resume."""
        consumer = self._consumer
        if consumer is None or self._positioning.locked():
            return  # positioning resumes what it positioned when it is done
        if self._outage and self._writing is None:
            log.warning("consumption paused for an outage with no batch waiting: resuming it")
            self._set_outage(False)
            return
        if self._outage:
            return
        assigned = consumer.assignment()
        stray = (consumer.paused() & assigned) - self._unpositioned
        if stray:
            log.warning("resuming %d partitions paused for no reason: %s", len(stray),
                        ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(stray)))
            consumer.resume(*sorted(stray))
