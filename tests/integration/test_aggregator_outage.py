"""Postgres goes away during ingestion and comes back: consumption pauses with one batch held,
resumes by itself, and nothing is lost or counted twice.

Why a proxy and not `pg_ctlcluster 15 main stop`: the PostgreSQL server on this machine is
shared by every test and every developer session running at the same time; stopping it would
fail their work. To the aggregator, a relay that refuses connections and cuts the open ones is
indistinguishable from a stopped server (connection refused, connections reset mid-query,
including mid-transaction), and it affects this test's aggregator only.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from uuid import uuid4

import asyncpg

from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    running_aggregator,
    stored_offsets,
    wait_caught_up,
    wait_for,
)
from tests.support.pgrelay import PostgresRelay, via
from tests.support.rollup_recompute import rollup_mismatches


async def _request_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM inference_requests")
    finally:
        await conn.close()


async def test_postgres_outage_pauses_ingestion_and_it_resumes_by_itself(fresh_database: str, unique_name: str) -> None:
    parts = urlsplit(fresh_database)
    relay = PostgresRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    prefix = f"it-{uuid4().hex[:8]}."
    batch = 50
    through_relay = aggregator_settings(
        via(fresh_database, relay.port), prefix, unique_name,
        batch_max_records=batch, retry_initial_seconds=0.05, retry_max_seconds=0.3,
    )
    direct = aggregator_settings(fresh_database, prefix, unique_name)  # the test's own view
    topics = await create_topics(direct)
    factory = EventFactory(seed=23)
    now = datetime.now(UTC)
    try:
        await produce(direct, [m for i in range(40) for m in factory.request(now - timedelta(seconds=i))])
        async with running_aggregator(through_relay) as app:
            ingestor = ingestor_of(app)
            await wait_caught_up(direct)

            await relay.stop()
            offsets_at_outage = await stored_offsets(fresh_database, unique_name)
            await produce(direct, [m for i in range(150) for m in factory.request(now - timedelta(seconds=60 + i))])

            async def paused() -> bool:
                return ingestor.outage

            await wait_for(paused, 30, "the aggregator to notice the outage")
            await asyncio.sleep(2)  # many retries' worth, while records keep waiting in Kafka
            assert ingestor.outage and not ingestor.stats.database_available
            assert ingestor.assigned_partitions() and ingestor.paused_partitions() == ingestor.assigned_partitions()
            # Bounded memory: the batch being written and the next one, never more, however
            # long the outage lasts; the rest waits in Kafka.
            assert 0 < ingestor.stats.held_records <= 2 * batch
            assert ingestor.stats.max_held_records <= 2 * batch
            assert ingestor.stats.failed_attempts >= 2
            assert await stored_offsets(fresh_database, unique_name) == offsets_at_outage
            assert await _request_count(fresh_database) == 40

            await relay.start()  # same port: the pool reconnects on its own
            await wait_caught_up(direct, 60)
            assert not ingestor.outage and ingestor.stats.database_available
            assert not ingestor.paused_partitions()
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()
        await delete_topics(direct, [getattr(topics, role) for role in CONSUMED])

    assert await _request_count(fresh_database) == 190
    assert await rollup_mismatches(fresh_database) == {}
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT sum(requests) FROM rollup_operations") == 190
        assert await conn.fetchval("SELECT count(*) FROM spans") == 190 * 5
    finally:
        await conn.close()
