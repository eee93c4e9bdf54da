"""Day partitions and retention, and several aggregators sharing the partitions of one group."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from services.aggregator.db.migrate import migrate
from services.aggregator.retention import apply_retention, complete_days, ensure_partitions, utc_day
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
    settings = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name, retention_days=3)
    topics = await create_topics(settings)
    yield settings
    await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


async def test_retention_drops_raw_partitions_and_their_rollup_minutes_together(agg) -> None:
    dsn = agg.database_url.get_secret_value()
    factory = EventFactory(seed=31)
    now = datetime.now(UTC)
    two_days_ago, today = now - timedelta(days=2), now - timedelta(minutes=1)
    too_old = now - timedelta(days=5)
    await produce(agg, [m for _ in range(4) for m in factory.request(two_days_ago, judged=True, feedback=True)]
                  + [m for _ in range(3) for m in factory.request(today, judged=True)]
                  + factory.request(too_old))
    async with running_aggregator(agg) as app:
        await wait_caught_up(agg)
        assert ingestor_of(app).stats.too_old == 7, "the expired request, its response and its 5 spans"
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT sum(requests) FROM rollup_operations") == 7
        days = await complete_days(conn)
        assert {utc_day(two_days_ago), utc_day(today)} <= days
        assert utc_day(today) + timedelta(days=agg.aggregator.partitions_ahead_days) in days, "created ahead"

        # Two days later, with 3 days of retention, the day two_days_ago falls out.
        later = now + timedelta(days=2)
        result = await apply_retention(conn, later, 3, 1)
        expired = utc_day(two_days_ago).strftime("%Y%m%d")
        assert result.ran and f"inference_requests_p{expired}" in result.dropped
        assert f"rollup_operations_p{expired}" in result.dropped and f"spans_p{expired}" in result.dropped
        assert await conn.fetchval("SELECT sum(requests) FROM rollup_operations") == 3
        assert await conn.fetchval("SELECT count(*) FROM inference_requests") == 3
        assert await conn.fetchval("SELECT count(*) FROM feedback") == 0
        assert utc_day(later) + timedelta(days=1) in await complete_days(conn)
    finally:
        await conn.close()
    assert await rollup_mismatches(dsn) == {}, "raw rows and rollup minutes expired together"


async def test_only_one_replica_runs_retention_at_a_time(fresh_database: str) -> None:
    await migrate(fresh_database)
    holder, other = await asyncpg.connect(fresh_database), await asyncpg.connect(fresh_database)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", 0x5050_5245_5445)
            assert (await apply_retention(other, datetime.now(UTC), 3, 1)).ran is False
        assert (await apply_retention(other, datetime.now(UTC), 3, 1)).ran is True
    finally:
        await holder.close()
        await other.close()


async def test_partition_creation_waits_for_no_reader_or_writer(fresh_database: str) -> None:
    """A day's partitions are made while other transactions read and write the parents.

    Before migration 0005, CREATE TABLE ... PARTITION OF queued behind them (and, holding the
    parents it had already locked, could deadlock with a reader of two tables)."""
    await migrate(fresh_database)
    reader, writer, creator = [await asyncpg.connect(fresh_database) for _ in range(3)]
    try:
        today = utc_day(datetime.now(UTC))
        await ensure_partitions(creator, today, today + timedelta(days=1))
        day = today + timedelta(days=30)
        async with reader.transaction(), writer.transaction():
            await reader.fetchval("SELECT count(*) FROM rollup_operations")
            await writer.execute(
                "INSERT INTO rollup_tokens (deployment, minute, variant, run_id, model)"
                " VALUES ('d', date_trunc('minute', now()), 'v', '', 'm')"
            )
            await creator.execute("SET lock_timeout = '5s'")  # the old function failed here
            tables = await creator.fetchval("SELECT count(*) FROM day_partitioned_tables")
            assert await ensure_partitions(creator, day, day) == tables == 16
            await reader.fetchval("SELECT count(*) FROM rollup_histograms")
        assert day in await complete_days(creator)
        indexes = await creator.fetch(
            "SELECT indexrelid::regclass::text AS name, indisunique FROM pg_index "
            "WHERE indrelid = $1::regclass ORDER BY 1", f"spans_p{day:%Y%m%d}"
        )
        assert len(indexes) == 3, f"the primary key, spans_request and spans_otlp_ingested, each once: {indexes}"
        assert any(index["indisunique"] for index in indexes)
    finally:
        for conn in (reader, writer, creator):
            await conn.close()


async def test_retention_gives_way_to_readers_then_drops_the_day(fresh_database: str) -> None:
    """A reader holds an expired day's table: retention's lock waits are bounded, so queries
    arriving meanwhile are not queued behind it for the reader's whole transaction; once the
    reader is done, retention drops the day (all its tables together)."""
    await migrate(fresh_database)
    holder, other, retention = [await asyncpg.connect(fresh_database) for _ in range(3)]
    try:
        now = datetime.now(UTC)
        old_day = utc_day(now) - timedelta(days=10)
        await ensure_partitions(retention, old_day, old_day)
        await other.execute("SET lock_timeout = '5s'")
        async with holder.transaction():
            await holder.fetchval("SELECT count(*) FROM spans")
            dropping = asyncio.create_task(apply_retention(retention, now, 3, 0))
            for _ in range(5):  # queries keep getting through while retention waits
                assert await other.fetchval("SELECT count(*) FROM spans") == 0
                await asyncio.sleep(0.2)
            assert not dropping.done(), "retention waits while the reader holds the table"
        result = await asyncio.wait_for(dropping, 60)
        assert result.ran and len(result.dropped) == 16, "6 raw tables and 10 rollup tables"
        assert {name[-8:] for name in result.dropped} == {old_day.strftime("%Y%m%d")}
        assert old_day not in await complete_days(other)
    finally:
        for conn in (holder, other, retention):
            await conn.close()


async def test_aggregators_of_one_group_share_partitions_through_rebalances(agg) -> None:
    dsn = agg.database_url.get_secret_value()
    factory = EventFactory(seed=37)
    now = datetime.now(UTC)

    def wave(first: int) -> list:
        return [m for i in range(first, first + 60) for m in factory.request(now - timedelta(seconds=i), judged=i % 4 == 0)]

    await produce(agg, wave(0))
    async with running_aggregator(agg) as first:
        await wait_caught_up(agg)
        async with running_aggregator(agg) as second:
            a, b = ingestor_of(first), ingestor_of(second)

            async def shared() -> bool:
                return bool(a.assigned_partitions()) and bool(b.assigned_partitions())

            await wait_for(shared, 60, "both aggregators to own partitions")
            assert not a.assigned_partitions() & b.assigned_partitions()
            await produce(agg, wave(100))
            await wait_caught_up(agg)
            assert a.stats.batches and b.stats.batches
        await produce(agg, wave(200))  # the first takes every partition back
        await wait_caught_up(agg)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT sum(requests) FROM rollup_operations") == 180
        assert await conn.fetchval("SELECT sum(evaluations) FROM rollup_quality") == 45 * 4
    finally:
        await conn.close()
    assert await rollup_mismatches(dsn) == {}


async def test_aggregator_starts_without_kafka_and_stops_cleanly(fresh_database: str, unique_name: str) -> None:
    """Brokers unreachable at start-up: the process comes up (not ready), keeps retrying, and
    still shuts down promptly."""
    from shared.settings import KafkaSettings

    settings = aggregator_settings(fresh_database, "it-nokafka.", unique_name)
    settings = settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers="127.0.0.1:1")})
    async with running_aggregator(settings) as app:
        ingestor = ingestor_of(app)
        await asyncio.sleep(1.5)
        assert not ingestor.ready and not ingestor.assigned_partitions()
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM consumer_offsets") == 0
    finally:
        await conn.close()
