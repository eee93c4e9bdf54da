"""The aggregator's stall detection against the real broker and Postgres.

- A partition that takes nothing in while records wait turns /healthz 503, naming it, and the
  pod would be restarted. The stall is made genuinely: one partition is paused on the ingest's
  own aiokafka consumer with no reason, and its records wait. The ingest's safety net
  (``_resume_unexplained_pauses``) resumes such a pause, but only when the loop is idle; so
  while steady traffic on another partition keeps the loop busy, the net cannot help, and only
  the detector notices. When the traffic stops the loop goes idle, the net resumes the
  partition, its records are stored and /healthz is 200 again: the net is the recovery, the
  detector the report of what the net did not (yet) fix.
- A caught-up, idle aggregator stays healthy past several ``stall_seconds``.
- A Postgres outage (the relay of test_aggregator_outage.py, cut for this aggregator only)
  pauses every partition on purpose while records wait: held, never a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web
from aiokafka import TopicPartition

from services.aggregator.app import STALLS, create_app
from services.aggregator.ingest.consumer import Ingestor
from services.aggregator.ingest.stall import IntakeWatch
from services.aggregator.settings import AggregatorSettings
from shared.kafka import make_producer
from shared.topics import Topics, delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    wait_caught_up,
    wait_for,
)
from tests.support.pgrelay import PostgresRelay, via
from tests.support.prometheus_text import samples as parsed_samples
from tests.support.rollup_recompute import rollup_mismatches

LOGGER = "services.aggregator.ingest.stall"
INGEST_LOGGER = "services.aggregator.ingest.consumer"  # the loop's own safety net logs there


@contextlib.asynccontextmanager
async def serving(settings: AggregatorSettings) -> AsyncIterator[tuple[web.Application, str]]:
    """The aggregator in this process, with its HTTP listener on a free port."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield runner.app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(base: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(base + path) as response:
            if path == "/metrics":
                return response.status, await response.text()
            return response.status, await response.json()


def samples(text: str) -> dict[str, float]:
    """Every sample of the aggregator's /metrics, by name and labels without the prefix, e.g.
    ``stalled_partitions`` or ``intake_lag{partition="0",topic="t"}`` (labels sorted)."""
    prefix = "promptpulse_aggregator_"
    return {name.removeprefix(prefix) + (
        "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}" if labels else ""): value
        for (name, labels), value in parsed_samples(text).items() if name.startswith(prefix)}


def of(name: str, topic: str, partition: int) -> str:
    return f'{name}{{partition="{partition}",topic="{topic}"}}'


async def wait_for_health(base: str, status: int, within: float) -> dict[str, Any]:
    last: list[Any] = [None]

    async def answered() -> bool:
        last[0] = await get(base, "/healthz")
        return last[0][0] == status

    try:
        await wait_for(answered, within, f"/healthz to answer {status}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {last[0]}") from None
    return last[0][1]


async def answers_over_looks(base: str, watch: IntakeWatch, looks: int) -> list[tuple[int, Any]]:
    """/healthz, asked again and again while the watch looks ``looks`` more times."""
    target = watch.checks + looks
    answers = []
    while watch.checks < target:
        answers.append(await get(base, "/healthz"))
        await asyncio.sleep(0.05)
    answers.append(await get(base, "/healthz"))
    return answers


class PartitionProducer:
    """Sends inference events of the realistic mix to one chosen partition."""

    def __init__(self, settings: AggregatorSettings, seed: int) -> None:
        self._producer = make_producer(settings, "it-aggregator-stall")
        self._factory = EventFactory(seed=seed)
        self.topic = Topics.from_settings(settings).inference
        self.ends: dict[int, int] = {}  # partition -> end offset after what this sent

    async def __aenter__(self) -> PartitionProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, partition: int, requests: int) -> None:
        now = datetime.now(UTC)
        sent = []
        for i in range(requests):
            for m in self._factory.request(now - timedelta(seconds=i)):
                if m.role == "inference":  # a request and its response
                    sent.append(await self._producer.send(
                        self.topic, value=m.value, key=m.key, headers=m.headers, partition=partition))
        for metadata in await asyncio.gather(*sent):
            self.ends[partition] = max(self.ends.get(partition, 0), metadata.offset + 1)


async def keep_busy(producer: PartitionProducer, ingestor: Ingestor, partition: int, stop: asyncio.Event) -> None:
    """Steady traffic on one partition: its backlog never runs dry, so the ingest loop never
    idles (and its safety net never runs) until ``stop``."""
    tp = TopicPartition(producer.topic, partition)
    while not stop.is_set():
        position = ingestor.intake_positions().get(tp, (None, 0))[0] or 0
        # Refilled well before it runs low: in a loaded CI run a backlog kept at 1,000 records ran
        # dry once, the loop idled, its safety net resumed the stalled partition and healthz read 200.
        if producer.ends.get(partition, 0) - position < 4000:
            await producer.send(partition, 1500)  # 3,000 records: a few seconds of batches
        await asyncio.sleep(0.02)


@pytest.fixture
async def agg(fresh_database: str, unique_name: str) -> AsyncIterator[AggregatorSettings]:
    settings = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name)
    topics = await create_topics(settings)
    yield settings
    await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


def with_section(settings: AggregatorSettings, **section: Any) -> AggregatorSettings:
    return aggregator_settings(
        settings.database_url.get_secret_value(), settings.kafka.topic_prefix, settings.group_id(), **section
    )


@pytest.mark.timeout(180)
async def test_a_partition_paused_for_no_reason_under_traffic_turns_healthz_503_until_it_moves(
    agg: AggregatorSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    caplog.set_level(logging.INFO, logger=INGEST_LOGGER)
    settings = with_section(agg, stall_seconds=2, batch_max_records=20)
    stop = asyncio.Event()
    busy: asyncio.Task | None = None
    async with serving(settings) as (app, base), PartitionProducer(settings, seed=51) as producer:
        ingestor, watch = ingestor_of(app), app[STALLS]
        topic = producer.topic
        stuck = TopicPartition(topic, 0)
        await producer.send(0, 1)
        await producer.send(1, 1)
        await wait_caught_up(settings)
        await wait_for(lambda: _true(stuck in dict(watch.partition_rows())), 30, "the watch to see the partition")
        status, body = await get(base, "/healthz")
        assert (status, body["status"], body["stalled_partitions"]) == (200, "ok", [])
        try:
            busy = asyncio.create_task(keep_busy(producer, ingestor, 1, stop))
            await wait_for(lambda: _true(ingestor.intake_positions()[TopicPartition(topic, 1)][1] > 100), 60,
                           "the loop busy with partition 1")
            ingestor._consumer.pause(stuck)  # no reason the ingest knows of
            await producer.send(0, 2)  # four records wait behind the pause

            body = await wait_for_health(base, 503, within=60)
            assert body["status"] == "stalled"
            assert [(r["topic"], r["partition"], r["lag"]) for r in body["stalled_partitions"]] == [(topic, 0, 4)]
            assert body["stalled_partitions"][0]["seconds_without_intake"] >= 2
            # Still stalled look after look, logged once; the busy loop never ran the net.
            target = watch.checks + 4
            await wait_for(lambda: _true(watch.checks >= target), 30, "4 more looks")
            status, body = await get(base, "/healthz")
            assert status == 503 and [r["partition"] for r in body["stalled_partitions"]] == [0]
            assert stuck in ingestor.paused_partitions()
            metrics = samples((await get(base, "/metrics"))[1])
            assert metrics["stalled_partitions"] == 1
            assert metrics[of("partition_stalled", topic, 0)] == 1
            assert metrics[of("partition_stalled", topic, 1)] == 0
            assert metrics[of("intake_lag", topic, 0)] == 4
            assert metrics["intake_stalls_total"] == 1
            warnings = [r.getMessage() for r in caplog.records
                        if r.levelno == logging.WARNING and r.name in (LOGGER, INGEST_LOGGER)]
            stall_warnings = [m for m in warnings if "intake stalled" in m]
            assert len(stall_warnings) == 1, warnings
            assert f"{topic}[0]" in stall_warnings[0] and "4 records" in stall_warnings[0]
            assert "'paused': True" in stall_warnings[0]
            assert not any("paused for no reason" in m for m in warnings)
        finally:
            stop.set()
            if busy is not None:
                await busy

        # Traffic stops: the loop idles, the net resumes the partition, its records come in.
        body = await wait_for_health(base, 200, within=60)
        assert body["status"] == "ok" and body["stalled_partitions"] == []
        await wait_caught_up(settings, 60)
        assert stuck not in ingestor.paused_partitions()
        metrics = samples((await get(base, "/metrics"))[1])
    messages = [r.getMessage() for r in caplog.records if r.name in (LOGGER, INGEST_LOGGER)]
    assert any("paused for no reason" in m and f"{topic}[0]" in m for m in messages)
    assert any("no longer stalled" in m and f"{topic}[0]" in m for m in messages)
    assert metrics["stalled_partitions"] == 0
    assert metrics[of("partition_stalled", topic, 0)] == 0
    assert metrics["intake_stalls_total"] == 1
    assert await rollup_mismatches(settings.database_url.get_secret_value()) == {}


@pytest.mark.timeout(120)
async def test_a_caught_up_idle_aggregator_stays_healthy_past_stall_seconds(agg: AggregatorSettings) -> None:
    settings = with_section(agg, stall_seconds=1)
    factory = EventFactory(seed=53)
    now = datetime.now(UTC)
    await produce(settings, [m for i in range(20) for m in factory.request(now - timedelta(seconds=i))])
    async with serving(settings) as (app, base):
        watch = app[STALLS]
        await wait_caught_up(settings)
        assert watch.interval == 0.25
        answers = await answers_over_looks(base, watch, 12)  # 3 x stall_seconds of looks
        metrics = samples((await get(base, "/metrics"))[1])
        held = watch.held
    assert answers and all(status == 200 and body["stalled_partitions"] == [] for status, body in answers)
    # The watch did look at every partition, caught up, and did not call the idle loop held
    # (a watch that looks at nothing, or excuses everything, is also quiet).
    topics = Topics.from_settings(settings)
    for role in CONSUMED:
        for partition in range(settings.kafka.partitions):
            assert metrics[of("intake_lag", getattr(topics, role), partition)] == 0
    assert not held and metrics["intake_held"] == 0
    assert metrics["stalled_partitions"] == 0 and metrics["intake_stalls_total"] == 0


@pytest.mark.timeout(180)
async def test_a_postgres_outage_holds_intake_and_is_not_a_stall(agg: AggregatorSettings) -> None:
    dsn = agg.database_url.get_secret_value()
    parts = urlsplit(dsn)
    relay = PostgresRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    await relay.start()
    through_relay = aggregator_settings(
        via(dsn, relay.port), agg.kafka.topic_prefix, agg.group_id(),
        stall_seconds=1, batch_max_records=50, retry_initial_seconds=0.05, retry_max_seconds=0.3,
    )
    factory = EventFactory(seed=57)
    now = datetime.now(UTC)
    try:
        await produce(agg, [m for i in range(20) for m in factory.request(now - timedelta(seconds=i))])
        async with serving(through_relay) as (app, base):
            ingestor, watch = ingestor_of(app), app[STALLS]
            await wait_caught_up(agg)
            await relay.stop()
            # A few records, one batch: its write fails and every partition is paused. The loop
            # then polls for the next batch and gets nothing (it is not waiting on a write), so
            # only the outage itself tells the watch that intake is held.
            await produce(agg, [m for i in range(3) for m in factory.request(now - timedelta(seconds=60 + i))])
            await wait_for(lambda: _true(ingestor.outage), 30, "the aggregator to notice the outage")
            await produce(agg, [m for i in range(100) for m in factory.request(now - timedelta(seconds=70 + i))])
            answers = await answers_over_looks(base, watch, 12)  # 3 x stall_seconds of looks
            metrics = samples((await get(base, "/metrics"))[1])
            ready, _ = await get(base, "/readyz")
            assert ingestor.outage  # still away throughout

            await relay.start()
            await wait_caught_up(agg, 60)
            after = await answers_over_looks(base, watch, 4)
    finally:
        with contextlib.suppress(Exception):
            await relay.stop()
    assert answers and all(status == 200 and body["stalled_partitions"] == [] for status, body in answers)
    assert answers[-1][1]["intake_held"] is True and metrics["intake_held"] == 1
    assert ready == 503  # /readyz is where an outage shows
    lags = [value for name, value in metrics.items() if name.startswith("intake_lag{")]
    assert lags and max(lags) > 0  # records did wait beyond the intake position
    assert metrics["stalled_partitions"] == 0 and metrics["intake_stalls_total"] == 0
    assert all(status == 200 for status, _ in after)
    assert await rollup_mismatches(dsn) == {}


async def _true(value: bool) -> bool:
    return value
