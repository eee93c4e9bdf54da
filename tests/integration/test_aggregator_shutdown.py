"""The aggregator's graceful shutdown, against real Kafka and PostgreSQL: with a batch in flight
(its write held back by a lock another session holds), stopping the app stops intake, waits for
that batch to commit, stops the monitors and flushes their producer, and only then closes the
pool; the order of services/aggregator/app.py's docstring, seen in its log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web

from services.aggregator.app import INGESTOR, create_app
from tests.support.aggregator import (
    EventFactory,
    produce,
    settings_on_own_topics,
    stored_offsets,
    wait_for,
)


@pytest.fixture
async def agg(fresh_database: str, unique_name: str) -> AsyncIterator:
    async with settings_on_own_topics(fresh_database, unique_name) as made:
        yield made


def _steps(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(";")[0] for r in caplog.records if r.getMessage().startswith("shutdown:")]


async def test_shutdown_stops_intake_drains_flushes_then_closes(agg, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.aggregator")
    settings = agg
    dsn, group = settings.database_url.get_secret_value(), settings.group_id()
    factory = EventFactory(seed=5)
    now = datetime.now(UTC)
    messages = [m for i in range(40) for m in factory.request(now - timedelta(seconds=i))]

    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    holder = await asyncpg.connect(dsn)
    stopping: asyncio.Task | None = None
    try:
        ingestor = runner.app[INGESTOR]
        await wait_for(lambda: _true(ingestor.ready), 60, "the ingest to be positioned")
        # Every batch commits its offsets in consumer_offsets: with that table locked, the first
        # batch taken in stays in flight until the lock goes.
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE consumer_offsets IN EXCLUSIVE MODE")
        await produce(settings, messages)
        await wait_for(lambda: _true(ingestor.stats.held_records > 0), 60, "a batch in flight")
        in_flight = ingestor.stats.held_records

        stopping = asyncio.create_task(runner.cleanup())
        await wait_for(lambda: _true("shutdown: intake stopped" in _steps(caplog)), 30, "intake to stop")
        await asyncio.sleep(0.5)  # room for a wrong order to show: nothing may close while the batch waits
        assert _steps(caplog) == ["shutdown: query API streams ended and its listener closed",
                                  "shutdown: stall watch stopped",
                                  "shutdown: OTLP assembly stopped",
                                  "shutdown: intake stopped"]
        assert ingestor.stats.records == 0  # the batch is still waiting for the lock
        await tx.rollback()
        await asyncio.wait_for(stopping, 60)
    finally:
        await holder.close()  # releases the lock if the test failed while holding it
        await (stopping if stopping is not None else runner.cleanup())

    # The batch in flight was committed during the shutdown, with its offsets, before the pool closed.
    assert ingestor.stats.records >= in_flight > 0
    assert sum((await stored_offsets(dsn, group)).values()) == ingestor.stats.records
    steps = _steps(caplog)
    assert steps == [
        "shutdown: query API streams ended and its listener closed",
        "shutdown: stall watch stopped",
        "shutdown: OTLP assembly stopped",
        "shutdown: intake stopped",
        "shutdown: ingest drained",
        "shutdown: monitor evaluation stopped",
        "shutdown: alerts producer flushed and closed",
        "shutdown: webhook session closed",
        "shutdown: pool closed",
    ]


async def _true(value: bool) -> bool:
    return value
