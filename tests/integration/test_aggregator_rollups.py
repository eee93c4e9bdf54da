"""Reading rollups back: percentiles from histograms merged over many minutes, per variant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg

from services.aggregator.rollups.read import histogram, pass_rate, quantiles
from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    aggregator_settings,
    create_topics,
    produce,
    running_aggregator,
    wait_caught_up,
)


async def test_window_percentiles_from_merged_minutes_match_the_raw_latencies(fresh_database, unique_name) -> None:
    settings = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name)
    topics = await create_topics(settings)
    try:
        factory = EventFactory(seed=41)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        # 30 minutes of traffic, so the window really merges many minutes' histograms.
        await produce(settings, [m for i in range(900) for m in factory.request(now - timedelta(seconds=2 * i + 1))])
        async with running_aggregator(settings):
            await wait_caught_up(settings)
        conn = await asyncpg.connect(fresh_database)
        try:
            start, end = now - timedelta(minutes=31), now + timedelta(minutes=1)
            assert await conn.fetchval(
                "SELECT count(DISTINCT minute) FROM rollup_histograms WHERE measure = 'latency_ms'"
            ) >= 30
            for variant in (None, "a"):
                latencies = [
                    r["latency_ms"]
                    for r in await conn.fetch(
                        "SELECT latency_ms FROM inference_responses WHERE $1::text IS NULL OR variant = $1 "
                        "ORDER BY latency_ms",
                        variant,
                    )
                ]
                merged = await histogram(conn, "demo", start, end, variant=variant)
                assert merged.total == len(latencies)
                estimates = await quantiles(conn, "demo", start, end, variant=variant)
                for q in (0.5, 0.95, 0.99):
                    # The same rank convention as the histogram: order statistic floor(q*(n-1)).
                    # (With a few hundred samples, neighbouring order statistics in the tail can
                    # be further apart than 2%, so conventions must match for the bound to hold.)
                    exact = latencies[int(q * (len(latencies) - 1))]
                    assert abs(estimates[q] - exact) / exact <= 0.01 + 1e-9, (variant, q)
            empty = await histogram(conn, "demo", now + timedelta(hours=1), now + timedelta(hours=2))
            assert empty.total == 0 and empty.quantile(0.5) is None
        finally:
            await conn.close()
    finally:
        await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


def test_pass_rate_at_any_threshold() -> None:
    assert pass_rate([1, 2, 3, 4, 5], 3) == (12, 15)
    assert pass_rate([1, 2, 3, 4, 5], 5) == (5, 15)
