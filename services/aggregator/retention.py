"""Day partitions: created ahead (and on demand for late events), dropped after retention.

Raw tables and rollup tables are partitioned by day (UTC) of the request's start time, so one
transaction drops a day's raw rows together with the rollup minutes they fed: the rollups never
hold figures whose raw rows are gone, and an offline recomputation over the raw rows still
matches them. Deduplication needs the raw rows, so a replay from Kafka is exact only within
retention; ingestion therefore skips events that started before the cutoff.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import asyncpg

from services.aggregator.db.pool import DbConnection
from shared.retry import Backoff

log = logging.getLogger(__name__)

# Only one replica runs retention at a time; any constant shared by all of them.
_RETENTION_LOCK = 0x5050_5245_5445  # "PPRETE"


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """Start times before this are expired: the start of the UTC day ``retention_days`` ago."""
    return day_start(utc_day(now) - timedelta(days=retention_days))


async def ensure_partitions(conn: DbConnection, first_day: date, last_day: date) -> int:
    """Create the missing day partitions of every day-partitioned table; returns how many."""
    return await conn.fetchval("SELECT promptpulse_ensure_day_partitions($1, $2)", first_day, last_day)


async def complete_days(conn: DbConnection) -> set[date]:
    """Days for which every day-partitioned table has its partition."""
    rows = await conn.fetch(
        """
        SELECT to_date(right(c.relname, 8), 'YYYYMMDD') AS day
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname IN (SELECT table_name FROM day_partitioned_tables)
          AND c.relname ~ '_p[0-9]{8}$'
        GROUP BY 1
        HAVING count(*) = (SELECT count(*) FROM day_partitioned_tables)
        """
    )
    return {row["day"] for row in rows}


@dataclass
class PartitionCache:
    """Days known to have partitions, so a batch pays for DDL only on a day it has not seen.

    DDL runs in its own short transaction, never inside a batch: CREATE TABLE ... PARTITION OF
    takes a strong lock on the parent that would queue every other writer behind the batch.
    """

    known: set[date] = field(default_factory=set)
    loaded: bool = False

    async def ensure(self, conn: DbConnection, days: set[date]) -> int:
        if not self.loaded:
            self.known = await complete_days(conn)
            self.loaded = True
        missing = sorted(days - self.known)
        created = 0
        for day in missing:
            created += await ensure_partitions(conn, day, day)
            self.known.add(day)
        return created

    def forget_before(self, cutoff: date) -> None:
        self.known = {day for day in self.known if day >= cutoff}


@dataclass
class RetentionResult:
    ran: bool
    dropped: list[str] = field(default_factory=list)
    created: int = 0


async def apply_retention(
    conn: DbConnection, now: datetime, retention_days: int, ahead_days: int
) -> RetentionResult:
    """Drop expired day partitions (raw and rollup together) and old bookkeeping rows; create
    partitions for today and ``ahead_days`` after it. Skipped (ran=False) while another
    replica runs it."""
    cutoff = retention_cutoff(now, retention_days)
    today = utc_day(now)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK):
        return RetentionResult(ran=False)
    try:
        dropped: list[str] = []
        for (day,) in await conn.fetch("SELECT promptpulse_day_partitions_before($1)", cutoff.date()):
            dropped += await _drop_day(conn, day)
        async with conn.transaction():
            await conn.execute("DELETE FROM dead_letters WHERE dead_lettered_at < $1", cutoff)
            await conn.execute("DELETE FROM deployment_variants WHERE last_minute < $1", cutoff)
            await conn.execute("DELETE FROM batch_runs WHERE last_minute < $1", cutoff)
        created = await ensure_partitions(conn, today, today + timedelta(days=ahead_days))
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK)
    if dropped:
        log.info("retention dropped %d partitions before %s", len(dropped), cutoff.date().isoformat())
    return RetentionResult(ran=True, dropped=dropped, created=created)


class RetentionBusy(RuntimeError):
    """A day's partitions could not be dropped: their tables stayed locked through every attempt."""


async def _drop_day(conn: DbConnection, day: date) -> list[str]:
    """Drop every table's partition of ``day`` in one transaction (migration 0005).

    A drop needs an ACCESS EXCLUSIVE lock on each parent, and while it waits for one, every
    reader and writer of that table queues behind it. So each wait is bounded (lock_timeout,
    applied to each lock separately, well below Postgres's one-second deadlock_timeout, so that
    in a lock cycle with a reader it is nearly always this transaction that gives up first, not
    the reader's query), and the day is tried again after a pause that lets the queue drain."""
    backoff = Backoff(0.05, 2.0)
    for _ in range(_DROP_ATTEMPTS):
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{_DROP_LOCK_WAIT_MS}ms'")
                return [r[0] for r in await conn.fetch("SELECT promptpulse_drop_day_partitions($1)", day)]
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            await asyncio.sleep(backoff.next())
    raise RetentionBusy(f"partitions of {day.isoformat()} stayed locked through {_DROP_ATTEMPTS} attempts")


_DROP_ATTEMPTS = 12
_DROP_LOCK_WAIT_MS = 200


async def retention_loop(
    pool: asyncpg.Pool,
    *,
    retention_days: int,
    ahead_days: int,
    interval_seconds: float,
    cache: PartitionCache | None = None,
) -> None:
    """Run retention now and then every ``interval_seconds`` until cancelled; a failure (e.g.
    Postgres away) is logged and retried at the next tick."""
    while True:
        try:
            async with pool.acquire() as conn:
                now = datetime.now(UTC)
                await apply_retention(conn, now, retention_days, ahead_days)
                if cache is not None:
                    cache.forget_before(retention_cutoff(now, retention_days).date())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention failed, retrying in %.0fs: %r", interval_seconds, exc)
        await asyncio.sleep(interval_seconds)
