"""Aggregator ingest throughput: events stored exactly once per second, beside a naive
one-transaction-per-event writer and a bare ``copy_records_to_table`` ceiling, in one run.

An event is a stored row: per request 1 request, 1 response, 5 spans and on average 0.4
evaluations (10% of requests judged on 4 metrics). Spans travel as one Kafka message per trace,
as the span exporter sends them. Each variant writes into its own fresh database:

1. exactly once, Kafka -> Postgres: the aggregator (in this process) consumes a pre-loaded
   topic set; timed from its first commit to the last, so start-up does not count;
2. exactly once, from memory: the same writer fed the same records without Kafka;
3. naive: the same records, one transaction per record, one INSERT ... VALUES per event, then
   its rollup deltas and its offset (exactly once too, the obvious way);
4. ceiling: the decoded rows copied into the raw tables, no dedup, no rollups, no offsets.

Usage: ``python bench/aggregator_throughput.py [--requests N] [--naive-requests N]``. It prints,
it does not assert. Needs the local stack (Kafka on 127.0.0.1:9092, PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, from a checkout

from services.aggregator.db.migrate import migrate  # noqa: E402
from services.aggregator.db.pool import ssl_option  # noqa: E402
from services.aggregator.ingest.decode import RecordDecoder, SamplingPolicy, TimeWindow  # noqa: E402
from services.aggregator.ingest.writer import write_batch  # noqa: E402
from services.aggregator.retention import ensure_partitions, utc_day  # noqa: E402
from services.aggregator.rollups.deltas import rollup_deltas  # noqa: E402
from services.aggregator.rollups.tables import apply_deltas  # noqa: E402
from shared.settings import ServiceSettings, load_settings  # noqa: E402
from shared.topics import Topics, delete_topics  # noqa: E402
from tests.support.aggregator import (  # noqa: E402
    EventFactory,
    Message,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    running_aggregator,
    wait_caught_up,
)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: list


# The configured TLS mode (PROMPTPULSE_DATABASE__SSL), for every connection the bench opens, so
# all four variants pay the same transport cost as the aggregator's pool.
_SSL: list = ["prefer"]


def _database_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + name))


async def _fresh_database(admin: asyncpg.Connection, base: str, label: str) -> tuple[str, str]:
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(base, name)
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        today = utc_day(datetime.now(UTC))
        await ensure_partitions(conn, today - timedelta(days=1), today + timedelta(days=1))
    finally:
        await conn.close()
    return name, url


def _records(messages: list[Message], topics: Topics) -> list[Record]:
    offsets: dict[str, int] = {}
    records = []
    for message in messages:
        topic = getattr(topics, message.role)
        offsets[topic] = offsets.get(topic, -1) + 1
        records.append(Record(topic, 0, offsets[topic], 0, message.key, message.value, message.headers))
    return records


def _rows(decoded) -> int:
    return sum(len(rows) for rows in decoded.rows.values())


async def _kafka_run(settings, messages: list[Message]) -> tuple[float, int]:
    await produce(settings, messages)
    async with running_aggregator(settings) as app:
        stats = ingestor_of(app).stats
        first_at = first_rows = None
        while first_at is None:
            if stats.batches:
                first_at, first_rows = time.perf_counter(), sum(stats.inserted.values())
            await asyncio.sleep(0.005)
        await wait_caught_up(settings, 600)
        elapsed = time.perf_counter() - first_at
        rows = sum(stats.inserted.values()) - first_rows
    return rows / elapsed, sum(stats.inserted.values())


async def _memory_run(url: str, records: list[Record], decoder: RecordDecoder, window, per_batch: int) -> float:
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        rows = 0
        started = time.perf_counter()
        for start in range(0, len(records), per_batch):
            chunk = records[start : start + per_batch]
            decoded = decoder.decode_batch(chunk, window)
            offsets: dict[tuple[str, int], int] = {}
            for record in chunk:
                offsets[(record.topic, record.partition)] = record.offset + 1
            outcome = await write_batch(conn, decoded, offsets, group="bench")
            rows += sum(outcome.inserted.values())
        return rows / (time.perf_counter() - started)
    finally:
        await conn.close()


_NAIVE_OFFSET = """
INSERT INTO consumer_offsets (consumer_group, topic, kafka_partition, next_offset) VALUES ('bench', $1, $2, $3)
ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset
"""


async def _naive_run(url: str, records: list[Record], decoder: RecordDecoder, window) -> float:
    """Still exactly once, but the obvious way: per record one transaction, per event one
    INSERT ... VALUES, then its rollup deltas and its offset."""
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        rows_stored = 0
        started = time.perf_counter()
        for record in records:
            decoded = decoder.decode_batch([record], window)
            async with conn.transaction():
                inserted: dict[Any, list] = {}
                for table, rows in decoded.rows.items():
                    columns = ", ".join(table.columns)
                    values = ", ".join(f"${i}" for i in range(1, len(table.columns) + 1))
                    sql = f"INSERT INTO {table.name} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING RETURNING 1"
                    for row in rows:
                        if await conn.fetchval(sql, *row):
                            inserted.setdefault(table, []).append(row)
                            rows_stored += 1
                await apply_deltas(conn, rollup_deltas(inserted))
                await conn.execute(_NAIVE_OFFSET, record.topic, record.partition, record.offset + 1)
        return rows_stored / (time.perf_counter() - started)
    finally:
        await conn.close()


async def _copy_run(url: str, records: list[Record], decoder: RecordDecoder, window) -> float:
    decoded = decoder.decode_batch(records, window)  # not timed: the ceiling is the copy alone
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        started = time.perf_counter()
        for table, rows in decoded.rows.items():
            await conn.copy_records_to_table(table.name, records=rows, columns=list(table.columns))
        return _rows(decoded) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def main(requests: int, naive_requests: int) -> None:
    service = load_settings(ServiceSettings)
    base = service.database_url.get_secret_value()
    _SSL[0] = ssl_option(service)
    admin = await asyncpg.connect(base)
    factory = EventFactory(seed=1)
    now = datetime.now(UTC)
    messages = [m for i in range(requests) for m in factory.request(now - timedelta(milliseconds=20 * i))]
    created: list[str] = []
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    try:
        names = {}
        for label in ("kafka", "memory", "naive", "copy"):
            names[label] = await _fresh_database(admin, base, label)
            created.append(names[label][0])
        settings = aggregator_settings(names["kafka"][1], prefix, f"{prefix}aggregator")
        topics = await create_topics(settings)
        decoder = RecordDecoder(topics.spans, SamplingPolicy({}, 0.1))
        window = TimeWindow(now - timedelta(days=1), now + timedelta(days=1))
        records = _records(messages, topics)
        naive_records = records[: int(len(records) * naive_requests / requests)]
        events = _rows(decoder.decode_batch(records, window))

        print(f"aggregator ingest, {requests:,} requests = {len(messages):,} Kafka records = {events:,} events")
        print("  (per request: 1 request, 1 response, 5 spans in one message, ~0.4 evaluations);"
              f" Postgres TLS mode {settings.database.ssl!r} (PROMPTPULSE_DATABASE__SSL)")
        exactly_once, stored = await _kafka_run(settings, messages)
        print(f"  exactly once, Kafka -> Postgres (batches <= {settings.aggregator.batch_max_records}):"
              f" {exactly_once:>10,.0f} events/s   [{stored:,} rows stored, {events:,} expected]")
        memory = await _memory_run(names["memory"][1], records, decoder, window, settings.aggregator.batch_max_records)
        print(f"  exactly once, same writer from memory:            {memory:>10,.0f} events/s")
        naive = await _naive_run(names["naive"][1], naive_records, decoder, window)
        print(f"  naive, one INSERT per event, one transaction per record ({len(naive_records):,} records):"
              f" {naive:>8,.0f} events/s")
        ceiling = await _copy_run(names["copy"][1], records, decoder, window)
        print(f"  ceiling, bare copy_records_to_table:              {ceiling:>10,.0f} events/s")
        print(f"  exactly once / ceiling: {exactly_once / ceiling:.0%} (goal >= 25%);"
              f" exactly once / naive: {exactly_once / naive:.1f}x; goal >= 20,000 events/s")
        print("  freshness (produce -> visible in the API / SSE stream), p50/p95: TODO, measured once the"
              " query API and SSE exist (issue 5 items 4-6)")
        await delete_topics(settings, Topics.from_settings(settings).all())
    finally:
        for name in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the main runs")
    parser.add_argument("--naive-requests", type=int, default=1_000, help="requests in the naive run")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _args()
    asyncio.run(main(arguments.requests, arguments.naive_requests))
