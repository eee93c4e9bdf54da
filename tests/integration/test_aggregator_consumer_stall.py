"""The aggregator's consumer never stalls with partitions paused for no reason.

- A batch whose first attempt fails (consumption pauses for the outage) and whose retry meets a
  record Postgres refuses is stored in halves; consumption must then resume. Before the fix the
  outage flag stayed set, every partition stayed paused, and nothing more was read.
- A second aggregator joins while positioning from Postgres is held up longer than the session
  timeout (the offsets table locked): the rebalances that follow must end with every partition
  positioned, none paused, and every record stored once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    running_aggregator,
    wait_caught_up,
    wait_for,
)
from tests.support.rollup_recompute import rollup_mismatches


@pytest.fixture
async def agg(fresh_database: str, unique_name: str):
    settings = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name, revoke_wait_seconds=1)
    topics = await create_topics(settings)
    yield settings
    await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


@pytest.mark.timeout(120)
async def test_a_member_joining_while_positioning_is_held_up_leaves_nothing_paused(agg) -> None:
    dsn = agg.database_url.get_secret_value()
    factory = EventFactory(seed=41)
    now = datetime.now(UTC)

    def wave(first: int) -> list:
        return [m for i in range(first, first + 30)
                for m in factory.request(now - timedelta(seconds=i), judged=i % 3 == 0)]

    await produce(agg, wave(0))
    async with running_aggregator(agg) as first:
        await wait_caught_up(agg)
        holder = await asyncpg.connect(dsn)
        try:
            async with running_aggregator(agg) as second:
                a, b = ingestor_of(first), ingestor_of(second)
                async with holder.transaction():
                    # Positioning reads this table: both members' listeners wait on it past the
                    # session timeout (10 s), so the group rebalances again meanwhile.
                    await holder.execute("LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE")
                    await produce(agg, wave(100))
                    await asyncio.sleep(12)
                await produce(agg, wave(200))
                await wait_caught_up(agg, 60)

                async def settled() -> bool:
                    owned = a.assigned_partitions() | b.assigned_partitions()
                    return len(owned) == len(CONSUMED) * agg.kafka.partitions and a.ready and b.ready

                await wait_for(settled, 30, "every partition owned and positioned")
                assert not a.assigned_partitions() & b.assigned_partitions()
                assert not a.paused_partitions() and not b.paused_partitions()
        finally:
            await holder.close()
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT sum(requests) FROM rollup_operations") == 90
    finally:
        await conn.close()
    assert await rollup_mismatches(dsn) == {}

async def _terminate_lock_waiters(dsn: str, seconds: float = 30) -> int:
    """Ends every backend of the test's database that waits on a lock (the aggregator's batch
    queued behind the holder): to the aggregator, a connection lost mid-transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        async def waiting() -> bool:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"))

        await wait_for(waiting, seconds, "the aggregator's batch to queue behind the lock")
        return await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
    finally:
        await conn.close()


@pytest.mark.timeout(90)
async def test_a_refused_record_after_a_failed_attempt_does_not_leave_consumption_paused(
    agg, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch fails once (its connection is cut: consumption pauses for the outage), then on
    the retry Postgres refuses one of its records, so the batch is split and stored in halves.
    The outage is over: consumption must resume, and later records must be stored."""
    from services.aggregator.ingest import decode as decode_module

    dsn = agg.database_url.get_secret_value()
    factory = EventFactory(seed=43)
    now = datetime.now(UTC)
    original, armed, victims = decode_module.feedback_row, [], []

    def corrupting(event, common):
        row = original(event, common)
        if armed and not victims:
            victims.append(row.event_id)
        if victims and row.event_id == victims[0]:  # the same record every time it is decoded
            return row._replace(rating=2**40)  # does not fit an integer: Postgres refuses it
        return row

    monkeypatch.setattr(decode_module, "feedback_row", corrupting)
    await produce(agg, [m for i in range(10) for m in factory.request(now - timedelta(seconds=i), feedback=True)])
    async with running_aggregator(agg) as app:
        ingestor = ingestor_of(app)
        await wait_caught_up(agg)
        armed.append(True)
        # Feedback alone, two days back: the batch must create that day's partitions first,
        # which queues it behind the holder's lock, where its connection is cut.
        old = now - timedelta(days=2)
        late_feedback = [m for i in range(6) for m in factory.request(old - timedelta(seconds=i), feedback=True)
                         if m.role == "feedback"]
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                await holder.execute("LOCK TABLE evaluations IN ACCESS EXCLUSIVE MODE")
                await produce(agg, late_feedback)
                assert await _terminate_lock_waiters(dsn) >= 1
                await wait_for(lambda: _true(ingestor.outage), 30, "the failed attempt to pause consumption")
        finally:
            await holder.close()
        await wait_caught_up(agg, 30)  # the retry: split, the refused record dead-lettered
        assert ingestor.stats.dead_letters == 1
        await produce(agg, [m for i in range(10) for m in factory.request(now - timedelta(seconds=30 + i))])
        await wait_caught_up(agg, 30)
        assert not ingestor.outage and not ingestor.paused_partitions()
    assert await rollup_mismatches(dsn) == {}
    # The store ended the outage itself: the loop's idle safety net had nothing to catch.
    assert not [r for r in caplog.records if "consumption paused for an outage with no batch waiting" in r.getMessage()]


async def _true(value: bool) -> bool:
    return value
