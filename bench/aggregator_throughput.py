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

Beside each rate, the CPU it cost per event: this process (``time.process_time``: decoding,
encoding, and for the Kafka run the consumer too) and the Postgres backends serving it (user
plus system time from ``/proc``, through psutil; "n/a" where another user's processes cannot be
read). On a busy machine the rates move with the load and the CPU figures much less.

Then freshness: the whole aggregator (ingest, monitors, query API on an ephemeral loopback port,
default batch wait) in this process, on its own fresh database and topics, fed a steady trickle
of requests (a request and a response event each) in small batches; per batch, the time from
its send to (a) the first ``GET /v1/deployments/{d}/metrics`` answer, polled every 20 ms, whose
request count includes it and (b) the first ``/v1/stream/metrics`` event whose minutes add up to
a count that includes it.

Usage: ``python bench/aggregator_throughput.py [--requests N] [--naive-requests N]
[--freshness-seconds S] [--freshness-rate R]``. It prints, it does not assert. Needs the local
stack (Kafka on 127.0.0.1:9092, PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, from a checkout

from services.aggregator.app import create_app  # noqa: E402
from services.aggregator.db.migrate import migrate  # noqa: E402
from services.aggregator.db.pool import ssl_option  # noqa: E402
from services.aggregator.ingest.decode import RecordDecoder, SamplingPolicy, TimeWindow  # noqa: E402
from services.aggregator.ingest.writer import write_batch  # noqa: E402
from services.aggregator.retention import ensure_partitions, utc_day  # noqa: E402
from services.aggregator.rollups.deltas import rollup_deltas  # noqa: E402
from services.aggregator.rollups.tables import ROLLUP_TABLES  # noqa: E402
from shared.kafka import make_producer  # noqa: E402
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
    sse_events,
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


async def _stored_rows(url: str) -> int:
    """Raw rows in the database, counted in Postgres (the in-process counters miss a batch
    committed before the timed part began)."""
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        return await conn.fetchval(
            "SELECT (SELECT count(*) FROM inference_requests) + (SELECT count(*) FROM inference_responses)"
            " + (SELECT count(*) FROM evaluations) + (SELECT count(*) FROM feedback) + (SELECT count(*) FROM spans)"
        )
    finally:
        await conn.close()


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    # FORCE cannot end an autovacuum worker busy in the database (a superuser process); it
    # finishes within moments, so try again rather than leave the database behind.
    for attempt in range(20):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            await asyncio.sleep(0.25 * (attempt + 1))
    print(f"  (could not drop database {name}; drop it by hand)")


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


class _Cpu:
    """CPU seconds used by this process and by the Postgres backends of given pids, between
    ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.process = self.backends = 0.0
        self._readable = True
        self._pids: list[int] = []
        self._process_at = 0.0
        self._backends_at: float | None = None

    @staticmethod
    def _backend_seconds(pids: list[int]) -> float | None:
        total = 0.0
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                return None
            total += times.user + times.system
        return total

    def start(self, pids: list[int]) -> None:
        self._pids = pids
        self._process_at = time.process_time()
        self._backends_at = self._backend_seconds(pids)

    def stop(self) -> None:
        self.process += time.process_time() - self._process_at
        now = self._backend_seconds(self._pids)
        if now is None or self._backends_at is None:
            self._readable = False
        else:
            self.backends += now - self._backends_at

    def per_event(self, events: int) -> str:
        backends = f"{self.backends / events * 1e6:5.1f}" if self._readable else "  n/a"
        return f"CPU/event: this process {self.process / events * 1e6:5.1f} us, Postgres {backends} us"


async def _backend_pids(conn: asyncpg.Connection, database: str) -> list[int]:
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    return [row["pid"] for row in rows]


async def _kafka_run(settings, messages: list[Message], admin: asyncpg.Connection, database: str,
                     cpu: _Cpu) -> tuple[float, int]:
    await produce(settings, messages)
    async with running_aggregator(settings) as app:
        stats = ingestor_of(app).stats
        first_at = first_rows = None
        while first_at is None:
            if stats.batches:
                first_at, first_rows = time.perf_counter(), sum(stats.inserted.values())
                cpu.start(await _backend_pids(admin, database))
            await asyncio.sleep(0.005)
        await wait_caught_up(settings, 600)
        cpu.stop()
        elapsed = time.perf_counter() - first_at
        rows = sum(stats.inserted.values()) - first_rows
    return rows / elapsed, sum(stats.inserted.values()) - first_rows


async def _memory_run(url: str, records: list[Record], decoder: RecordDecoder, window, per_batch: int,
                      cpu: _Cpu) -> tuple[float, int]:
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        rows = 0
        started = time.perf_counter()
        cpu.start([conn.get_server_pid()])
        for start in range(0, len(records), per_batch):
            chunk = records[start : start + per_batch]
            decoded = decoder.decode_batch(chunk, window)
            offsets: dict[tuple[str, int], int] = {}
            for record in chunk:
                offsets[(record.topic, record.partition)] = record.offset + 1
            outcome = await write_batch(conn, decoded, offsets, group="bench")
            rows += sum(outcome.inserted.values())
        cpu.stop()
        return rows / (time.perf_counter() - started), rows
    finally:
        await conn.close()


def _naive_upsert_sql(table) -> str:
    """One rollup row per statement: INSERT ... VALUES ... ON CONFLICT DO UPDATE."""
    names = [*table.key_columns, *table.value_columns]
    values = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    updates = ", ".join(f"{v} = {table.name}.{v} + EXCLUDED.{v}" for v in table.value_columns)
    return (f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(table.key_columns)}) DO UPDATE SET {updates}")


async def _naive_rollups(conn: asyncpg.Connection, deltas) -> None:
    for table in ROLLUP_TABLES:  # the aggregator's table order, keys sorted: no deadlocks
        rows = deltas.get(table)
        if rows:
            await conn.executemany(_naive_upsert_sql(table), [(*key, *rows[key]) for key in sorted(rows)])


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
                await _naive_rollups(conn, rollup_deltas(inserted))
                await conn.execute(_NAIVE_OFFSET, record.topic, record.partition, record.offset + 1)
        return rows_stored / (time.perf_counter() - started)
    finally:
        await conn.close()


async def _copy_run(url: str, records: list[Record], decoder: RecordDecoder, window, cpu: _Cpu) -> float:
    decoded = decoder.decode_batch(records, window)  # not timed: the ceiling is the copy alone
    conn = await asyncpg.connect(url, ssl=_SSL[0])
    try:
        started = time.perf_counter()
        cpu.start([conn.get_server_pid()])
        for table, rows in decoded.rows.items():
            await conn.copy_records_to_table(table.name, records=rows, columns=list(table.columns))
        cpu.stop()
        return _rows(decoded) / (time.perf_counter() - started)
    finally:
        await conn.close()


_POLL_SECONDS = 0.02
_BATCHES_PER_SECOND = 10


class _Arrivals:
    """Per produced batch: when it was sent, the request count that includes it, and when each
    reader first saw a count that large."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, int]] = []  # (perf_counter at send, cumulative count)
        self.seen: dict[str, list[float]] = {"api": [], "sse": []}

    def observe(self, reader: str, count: int, at: float) -> None:
        seen = self.seen[reader]
        while len(seen) < len(self.sent) and self.sent[len(seen)][1] <= count:
            seen.append(at - self.sent[len(seen)][0])


async def _poll_api(http: aiohttp.ClientSession, url: str, arrivals: _Arrivals, stop: asyncio.Event) -> None:
    while not stop.is_set():
        async with http.get(url) as response:
            body = await response.json()
            if response.status == 200:
                arrivals.observe("api", body["overview"]["requests"], time.perf_counter())
        await asyncio.sleep(_POLL_SECONDS)


async def _read_stream(response: aiohttp.ClientResponse, arrivals: _Arrivals, ready: asyncio.Event) -> None:
    minutes: dict[str, int] = {}  # a client replaces its minutes by start (docs/aggregator-api.md)
    async for name, event in sse_events(response):
        if name == "snapshot":
            minutes = {}
            ready.set()
        minutes.update({m["start"]: m["requests"] for m in event.get("minutes", [])})
        arrivals.observe("sse", sum(minutes.values()), time.perf_counter())


async def _produce_steadily(settings, factory: EventFactory, arrivals: _Arrivals, seconds: float, rate: int,
                            already: int) -> None:
    topics = Topics.from_settings(settings)
    producer = make_producer(settings, "bench-freshness-producer")
    await producer.start()
    try:
        per_batch = max(1, round(rate / _BATCHES_PER_SECOND))
        count, started = already, time.perf_counter()
        for index in range(int(seconds * _BATCHES_PER_SECOND)):
            await asyncio.sleep(max(0.0, started + index / _BATCHES_PER_SECOND - time.perf_counter()))
            messages = [m for _ in range(per_batch) for m in factory.request(datetime.now(UTC), judged=False)
                        if m.role == "inference"]  # the request and the response; no spans
            sent_at = time.perf_counter()
            count += per_batch
            arrivals.sent.append((sent_at, count))
            futures = [await producer.send(getattr(topics, m.role), value=m.value, key=m.key, headers=m.headers)
                       for m in messages]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _quantiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return "n/a (fewer than 2 batches seen)"
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:6.0f} ms   p95 {cuts[94] * 1000:6.0f} ms   max {max(latencies) * 1000:6.0f} ms"


async def _freshness(url: str, prefix: str, seconds: float, rate: int) -> None:
    key = secrets.token_urlsafe(24)
    settings = aggregator_settings(url, prefix, f"{prefix}aggregator", batch_max_wait_ms=200).model_copy(
        update={"api_read_key": SecretStr(key)})
    await create_topics(settings)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    now = datetime.now(UTC)
    window = f"from={int(now.timestamp()) - 600}&to={int(now.timestamp()) + 3000}&step=1h"
    arrivals = _Arrivals()
    factory = EventFactory(seed=5, deployment="fresh")
    stop, stream_ready = asyncio.Event(), asyncio.Event()
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"})
    try:
        # One request first, until the API shows it: partitions assigned, the consumer running.
        await produce(settings, [m for m in factory.request(now, judged=False) if m.role == "inference"])
        arrivals.sent.append((time.perf_counter(), 1))
        metrics_url = f"{base}/v1/deployments/fresh/metrics?{window}"
        while not arrivals.seen["api"]:
            async with http.get(metrics_url) as response:
                if response.status == 200:
                    arrivals.observe("api", (await response.json())["overview"]["requests"], time.perf_counter())
            await asyncio.sleep(0.1)
        arrivals = _Arrivals()
        stream = await http.get(f"{base}/v1/stream/metrics?deployment=fresh",
                                timeout=aiohttp.ClientTimeout(total=None, sock_read=120))
        reader = asyncio.create_task(_read_stream(stream, arrivals, stream_ready))
        await asyncio.wait_for(stream_ready.wait(), 30)
        poller = asyncio.create_task(_poll_api(http, metrics_url, arrivals, stop))
        await _produce_steadily(settings, factory, arrivals, seconds, rate, already=1)
        for _ in range(600):  # the last batches, for up to 30 s
            if min(map(len, arrivals.seen.values())) == len(arrivals.sent):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await poller
        reader.cancel()
        stream.close()
        print(f"  freshness, {rate} requests/s for {seconds:.0f} s in batches of {rate // _BATCHES_PER_SECOND}"
              f" ({len(arrivals.sent)} batches; aggregator batch wait {settings.aggregator.batch_max_wait_ms} ms,"
              f" API polled every {_POLL_SECONDS * 1000:.0f} ms), goal p95 <= 1 s:")
        for reader_name, label in (("api", "produce -> GET /v1/deployments/{d}/metrics"),
                                   ("sse", "produce -> SSE metrics event           ")):
            seen = arrivals.seen[reader_name]
            print(f"    {label}: {_quantiles(seen)}   [{len(seen)}/{len(arrivals.sent)} batches seen]")
    finally:
        stop.set()
        await http.close()
        await runner.cleanup()
        await delete_topics(settings, Topics.from_settings(settings).all())


async def main(requests: int, naive_requests: int, freshness_seconds: float, freshness_rate: int) -> None:
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
        kafka_cpu, memory_cpu, copy_cpu = _Cpu(), _Cpu(), _Cpu()
        exactly_once, timed = await _kafka_run(settings, messages, admin, names["kafka"][0], kafka_cpu)
        stored = await _stored_rows(names["kafka"][1])
        print(f"  exactly once, Kafka -> Postgres (batches <= {settings.aggregator.batch_max_records}):"
              f" {exactly_once:>10,.0f} events/s   [{stored:,} rows stored, {events:,} expected]")
        print(f"    {kafka_cpu.per_event(timed)}   (the timed part: from the first commit)")
        memory, memory_rows = await _memory_run(names["memory"][1], records, decoder, window,
                                                settings.aggregator.batch_max_records, memory_cpu)
        print(f"  exactly once, same writer from memory:            {memory:>10,.0f} events/s")
        print(f"    {memory_cpu.per_event(memory_rows)}   (decode + write)")
        naive = await _naive_run(names["naive"][1], naive_records, decoder, window)
        print(f"  naive, one INSERT per event, one transaction per record ({len(naive_records):,} records):"
              f" {naive:>8,.0f} events/s")
        ceiling = await _copy_run(names["copy"][1], records, decoder, window, copy_cpu)
        print(f"  ceiling, bare copy_records_to_table:              {ceiling:>10,.0f} events/s")
        print(f"    {copy_cpu.per_event(events)}   (encode + copy; decoding not counted)")
        print(f"  exactly once / ceiling: {exactly_once / ceiling:.0%} (goal >= 25%);"
              f" exactly once / naive: {exactly_once / naive:.1f}x; goal >= 20,000 events/s")
        await delete_topics(settings, Topics.from_settings(settings).all())
        if freshness_seconds > 0:
            names["fresh"] = await _fresh_database(admin, base, "fresh")
            created.append(names["fresh"][0])
            await _freshness(names["fresh"][1], f"bench-{uuid.uuid4().hex[:8]}.", freshness_seconds, freshness_rate)
    finally:
        for name in created:
            await _drop_database(admin, name)
        await admin.close()


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests in the main runs")
    parser.add_argument("--naive-requests", type=int, default=1_000, help="requests in the naive run")
    parser.add_argument("--freshness-seconds", type=float, default=15, help="length of the freshness run (0: skip)")
    parser.add_argument("--freshness-rate", type=int, default=50, help="requests per second in the freshness run")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = _args()
    asyncio.run(main(arguments.requests, arguments.naive_requests, arguments.freshness_seconds,
                     arguments.freshness_rate))
