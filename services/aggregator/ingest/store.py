"""Storing one batch of records until it is committed: retries, splitting, dead letters.

- Postgres away (or a deadlock, a serialization failure): the same records are retried with
  back-off until they commit; the owner is told (``on_outage``) so it pauses consumption.
- Postgres refuses the data itself (a value no decoder check caught): the batch is split in
  halves until the record at fault is alone, and that record is dead-lettered
  (``database-rejected``) with its offset, so the rest of the batch goes on.
- Each attempt decodes the records again with a fresh time window (a retry after midnight must
  see the new retention cutoff), except the first, which may reuse a decode made while the
  previous batch was being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from services.aggregator.ingest.decode import Decoded, RecordDecoder, TimeWindow
from services.aggregator.ingest.writer import FaultHook, write_batch
from services.aggregator.retention import PartitionCache, retention_cutoff, utc_day
from services.aggregator.settings import AggregatorSection
from shared.retry import Backoff

log = logging.getLogger(__name__)

# Postgres (or asyncpg encoding for it, which raises OverflowError or ValueError for a value the
# column type cannot hold) refused the data itself: retrying the same rows cannot help,
# isolating them can.
REJECTED_DATA = (
    OverflowError,
    ValueError,
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


# Records decoded between two yields to the event loop: about two milliseconds of work, the
# most a statement's answer waits before the write goes on.
_DECODE_SLICE = 50


@dataclass
class IngestStats:
    batches: int = 0
    records: int = 0
    inserted: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    dead_letters: int = 0
    too_old: int = 0
    failed_attempts: int = 0
    database_available: bool = True
    held_records: int = 0  # records read from Kafka and not committed yet
    max_held_records: int = 0
    last_commit_monotonic: float | None = None


class _Stripped(Exception):
    """A refusal of the dead letter itself: the next one is written without key, value, headers."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{cause} (record body dropped: Postgres refused it twice)")
        self.sqlstate = getattr(cause, "sqlstate", "")


class BatchStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        decoder: RecordDecoder,
        partitions: PartitionCache,
        section: AggregatorSection,
        *,
        group: str,
        stats: IngestStats,
        on_outage: Callable[[bool], None],
        on_committed: Callable[[dict[tuple[str, int], int]], None],
    ) -> None:
        self._pool = pool
        self._decoder = decoder
        self._partitions = partitions
        self._section = section
        self._group = group
        self.stats = stats
        self._on_outage = on_outage
        self._on_committed = on_committed
        self._fault = FaultHook(
            section.fault_pause_before_commit_seconds, section.fault_pause_on_batch, section.fault_marker_path
        )
        self._attempts = 0
        # Held by every attempt: a rebalance waits on it to let the batch in flight commit.
        self.in_flight = asyncio.Lock()
        self.stopping = False

    def window(self) -> TimeWindow:
        now = datetime.now(UTC)
        return TimeWindow(
            earliest=retention_cutoff(now, self._section.retention_days),
            latest=now + timedelta(seconds=self._section.max_future_seconds),
        )

    def decode(self, records: list[Any]) -> Decoded:
        return self._decoder.decode_batch(records, self.window())

    async def decode_yielding(self, records: list[Any]) -> Decoded:
        """``decode``, a slice at a time, letting the event loop run between slices.

        The consumer decodes batch N+1 while batch N is being written; the write is a dozen
        statements, and its task can send the next one only when the loop runs. Decoded in one
        go, the batch would hold the loop for its whole decode while Postgres sits idle after
        the statement in flight, so Python and Postgres would take turns instead of working
        side by side on two cores."""
        window = self.window()
        decoded = Decoded()
        for start in range(0, len(records), _DECODE_SLICE):
            self._decoder.decode_into(records[start : start + _DECODE_SLICE], window, decoded)
            await asyncio.sleep(0)
        return decoded

    async def store(self, records: list[Any], decoded: Decoded | None = None) -> None:
        """Commit ``records`` (retrying while Postgres is away); split on refused data."""
        backoff = Backoff(self._section.retry_initial_seconds, self._section.retry_max_seconds)
        give_up_at: float | None = None
        refused: Exception | None = None
        outage = False
        while True:
            try:
                async with self.in_flight:
                    if refused is not None:
                        await self._write(self._refused_batch(records[0], refused), records)
                    else:
                        await self._write(decoded or self.decode(records), records)
                break
            except REJECTED_DATA as exc:
                self._partitions.loaded = False  # a partition dropped under us looks like this too
                decoded = None
                if refused is not None:
                    refused = _Stripped(refused)  # even the dead letter was refused
                    continue
                if len(records) == 1:
                    refused = exc
                    continue
                log.warning("Postgres refused a batch of %d records (%r): splitting it", len(records), exc)
                middle = len(records) // 2
                await self.store(records[:middle])
                await self.store(records[middle:])
                if outage:  # an earlier attempt of this batch failed: its halves are stored now
                    self._on_outage(False)
                return
            except Exception as exc:  # Postgres away, a deadlock, a serialization failure...
                decoded = None
                self.stats.failed_attempts += 1
                self._partitions.loaded = False
                self.database_down(exc)
                if not outage:
                    outage = True
                    self._on_outage(True)
                wait = backoff.next()
                log.warning("batch of %d records not stored, retrying in %.1fs: %r", len(records), wait, exc)
                if self.stopping:
                    give_up_at = give_up_at or time.monotonic() + self._section.shutdown_wait_seconds
                    if time.monotonic() >= give_up_at:
                        log.warning("stopping with %d records uncommitted: they will be read again", len(records))
                        return
                await asyncio.sleep(wait)
        self.database_up()
        if outage:
            self._on_outage(False)

    def database_up(self) -> None:
        if not self.stats.database_available:
            log.info("Postgres is reachable again")
            self.stats.database_available = True

    def database_down(self, exc: BaseException) -> None:
        if self.stats.database_available:
            log.warning("cannot reach Postgres: %r", exc)
        self.stats.database_available = False

    async def _write(self, decoded: Decoded, records: list[Any]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), record.offset + 1)
        days = _partition_days(decoded)
        self._attempts += 1
        async with self._pool.acquire() as conn:
            await self._partitions.ensure(conn, days)
            outcome = await write_batch(
                conn, decoded, next_offsets, group=self._group, batch_number=self._attempts, fault=self._fault
            )
        stats = self.stats
        stats.batches += 1
        stats.records += len(records)
        stats.duplicates += outcome.duplicates
        stats.dead_letters += outcome.dead_letters
        stats.too_old += decoded.too_old
        for table, count in outcome.inserted.items():
            stats.inserted[table] = stats.inserted.get(table, 0) + count
        stats.last_commit_monotonic = time.monotonic()
        if decoded.too_old:
            log.warning("skipped %d events older than the retention cutoff", decoded.too_old)
        self._on_committed(next_offsets)

    @staticmethod
    def _refused_batch(record: Any, exc: Exception) -> Decoded:
        detail = f"{getattr(exc, 'sqlstate', '') or ''} {exc}".strip()
        letter = RecordDecoder.dead_letter(record, "database-rejected", detail)
        if isinstance(exc, _Stripped):
            letter = letter._replace(key=None, value=None, headers="[]")
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, detail[:200])
        return Decoded(dead_letters=[letter])


def _partition_days(decoded: Decoded) -> set[date]:
    """The UTC days the batch's rows fall in (a row's first column is its partition time)."""
    days: set[date] = set()
    for rows in decoded.rows.values():
        for row in rows:
            moment = row[0]
            # The decoder's times are UTC already; astimezone per row is measurable.
            days.add(moment.date() if moment.tzinfo is UTC else utc_day(moment))
    return days
