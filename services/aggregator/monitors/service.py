"""The monitor evaluator as a background resource of the aggregator's aiohttp application.

``running(settings, pool)`` (the aggregator's app.py opens it after the database) syncs the
deployment files' monitors into Postgres, then runs a loop that every ``tick_seconds``:
evaluates due windows (if this replica holds the evaluator lock), publishes pending alerts to
the alerts topic, delivers what is due to direct destinations (destinations/), and now and then drops windows and alerts older than
the retention; beside it, a task sends alerts to Alertmanager when one is configured. Postgres or Kafka being away only delays alerts: they wait in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.aggregator.monitors.alertmanager import AlertmanagerSender
from services.aggregator.monitors.destinations.dispatcher import Dispatcher
from services.aggregator.monitors.destinations.kinds import warn_inline_webhooks
from services.aggregator.monitors.evaluator import EVALUATOR_LOCK, Evaluator, TickResult
from services.aggregator.monitors.publisher import DeliveryStats, publish_pending
from services.aggregator.monitors.settings import MonitorsSection
from services.aggregator.monitors.silences import drop_old_silences
from services.aggregator.monitors.store import sync_file_monitors
from services.aggregator.settings import AggregatorSettings
from shared.deployments import DeploymentFolder, load_deployment_folder
from shared.kafka import make_producer
from shared.topics import TopicError, Topics, ensure_topics

log = logging.getLogger(__name__)

_RETENTION_EVERY_SECONDS = 3600.0


def monitors_section(settings: AggregatorSettings) -> MonitorsSection:
    """Where the monitors' settings live in the aggregator's settings (one place to change)."""
    return settings.aggregator.monitors


@dataclass
class EvaluatorStats:
    ticks: int = 0
    leader_ticks: int = 0
    windows: int = 0
    violations: int = 0
    alerts: int = 0
    failed_ticks: int = 0
    is_leader: bool = False


class MonitorService:
    def __init__(self, settings: AggregatorSettings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._section = monitors_section(settings)
        self._pool = pool
        self.topic = Topics.from_settings(settings).alerts
        self.evaluator = Evaluator(pool, self._section)
        self.stats = EvaluatorStats()
        self.delivery = DeliveryStats()
        self._producer: AIOKafkaProducer | None = None
        self.alertmanager = AlertmanagerSender(pool, self._section.alertmanager, settings.aggregator.public_url)
        self.dispatcher = Dispatcher(pool, self._section, self.delivery, settings.aggregator.public_url)
        self._stop = asyncio.Event()
        self._last_retention = 0.0

    async def sync_files(self) -> None:
        """Reads the deployments folder again and syncs its monitors (after its files changed)."""
        folder = self._settings.deployments_dir
        await self.sync_loaded(load_deployment_folder(folder, check_flow=False) if folder.is_dir() else None)

    async def sync_loaded(self, loaded: DeploymentFolder | None) -> None:
        """Syncs the file monitors of ``loaded``, the folder as parsed (None: it does not exist)."""
        if loaded is None:
            # Syncing an empty set would delete every file monitor for all replicas.
            log.warning("deployments folder %s not found: file monitors left as stored", self._settings.deployments_dir)
            return
        for name, deployment in sorted(loaded.deployments.items()):
            warn_inline_webhooks(name, deployment.monitors)
        # A broken file keeps no destinations: its monitors' alerts still reach the topic.
        self.evaluator.destinations = {name: list(d.destinations) for name, d in loaded.deployments.items()}
        self.evaluator.deployments = loaded.deployments
        async with self._pool.acquire() as conn:
            # A file that does not load keeps its stored monitors: a typo must not silence alerts.
            await sync_file_monitors(conn, loaded.deployments, keep=loaded.broken_names)

    async def _ensure_producer(self) -> AIOKafkaProducer | None:
        if self._producer is None:
            producer = make_producer(self._settings, "promptpulse-aggregator-alerts")
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("alerts producer cannot start yet (alerts wait in Postgres): %r", exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                return None
            self._producer = producer
        return self._producer

    async def once(self, now: datetime) -> TickResult:
        """One pass: evaluate, publish, retention (destinations are delivered by their own task)."""
        tick = await self.evaluator.tick(now)
        stats = self.stats
        stats.ticks += 1
        stats.is_leader = tick.leader
        if tick.leader:
            stats.leader_ticks += 1
            stats.windows += tick.windows
            stats.violations += tick.violations
            stats.alerts += tick.alerts
            producer = await self._ensure_producer()
            if producer is not None:
                await publish_pending(self._pool, producer, self.topic, self._section, self.delivery)
            if time.monotonic() - self._last_retention > _RETENTION_EVERY_SECONDS:
                await self._retention(now)
        return tick

    async def _retention(self, now: datetime) -> None:
        cutoff = now - timedelta(days=self._settings.aggregator.retention_days)
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EVALUATOR_LOCK):
                await conn.execute("DELETE FROM monitor_windows WHERE window_end < $1", cutoff)
                await conn.execute(
                    "DELETE FROM alerts WHERE window_end < $1 AND published_at IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM alert_deliveries d WHERE d.alert_id = alerts.id AND d.state = 'pending')",
                    cutoff,
                )
                await conn.execute("DELETE FROM delivery_log WHERE at < $1", cutoff)
                # Resolved long ago: Alertmanager has long forgotten them too (sends go with them).
                await conn.execute(
                    "DELETE FROM alertmanager_alerts WHERE state = 'resolved' AND updated_at < $1", cutoff
                )
                await drop_old_silences(conn, cutoff)
        self._last_retention = time.monotonic()

    async def run(self) -> None:
        # Their own tasks: an Alertmanager or destination slow or away never delays evaluation.
        senders = [
            asyncio.create_task(self.alertmanager.run(self._stop, self._section.tick_seconds),
                                name="aggregator-alertmanager"),
            asyncio.create_task(self.dispatcher.run(self._stop, self._section.tick_seconds),
                                name="aggregator-destinations"),
        ]
        try:
            await self._evaluate_until_stopped()
        finally:
            self._stop.set()
            for sender in senders:
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _evaluate_until_stopped(self) -> None:
        while not self._stop.is_set():
            try:
                await self.once(datetime.now(UTC))
            except Exception as exc:  # Postgres away, a bug in one pass: the next tick retries
                self.stats.failed_ticks += 1
                log.warning("monitor evaluation pass failed: %r", exc, exc_info=not isinstance(exc, OSError))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._section.tick_seconds)

    def stop(self) -> None:
        self._stop.set()

    async def open(self) -> None:
        """The destinations' HTTP session, and the producer unless Kafka is away (each pass retries it)."""
        self.dispatcher.open()
        await self._ensure_producer()

    async def close(self) -> None:
        await self.alertmanager.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()  # sends what it still holds first
            self._producer = None
            log.info("shutdown: alerts producer flushed and closed")
        if await self.dispatcher.close():
            log.info("shutdown: webhook session closed")


@contextlib.asynccontextmanager
async def running(
    settings: AggregatorSettings, pool: asyncpg.Pool, deployments: DeploymentFolder | None
) -> AsyncIterator[MonitorService]:
    """The evaluator's lifetime (the aggregator's app.py opens it after the database): the file
    monitors of ``deployments`` (the folder as parsed at start-up) synced, then, when enabled, the alerts producer and the destinations' HTTP session
    opened here, the loop run, and on leaving: the loop stopped after its pass in flight, the
    producer flushed and closed, the session closed, in that order."""
    service = MonitorService(settings, pool)
    try:
        await service.sync_loaded(deployments)
        if not monitors_section(settings).enabled:
            yield service  # no loop; what a caller opened by hand is still closed below
            return
        try:
            await ensure_topics(settings, [service.topic])
        except (TopicError, KafkaError, OSError) as exc:  # not fatal: alerts wait in the outbox
            log.warning("could not ensure the alerts topic exists: %s", exc)
        await service.open()
        task = asyncio.create_task(service.run(), name="aggregator-monitors")
        try:
            yield service
        finally:
            service.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            log.info("shutdown: monitor evaluation stopped")
    finally:
        await service.close()
