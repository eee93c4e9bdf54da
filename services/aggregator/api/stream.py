"""Live figures over server-sent events, driven by Postgres ``LISTEN promptpulse_metrics``.

The ingest writer notifies once per committed batch per deployment, with the minutes that
changed; Postgres delivers it to every listening session at COMMIT. Each process keeps ONE
dedicated listening connection (not a pool connection: a pooled one would lose its LISTEN when
returned) and fans notifications out to its subscribers, so any replica serves any subscriber.

Per deployment, the changed minutes are read once and the same event goes to every subscriber
of it; notifications arriving while a read runs are merged into the next one, so a burst of
batches costs one read, and a slow subscriber only ever misses intermediate versions (its
queue keeps the newest events). After the listening connection is lost and re-made, every
subscriber gets a fresh snapshot, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.aggregator.api.figures import Breakdown
from services.aggregator.api.metrics_query import Scope, read_breakdown
from services.aggregator.rollups.scales import ScaleBook
from shared.retry import Backoff, pause

log = logging.getLogger(__name__)

CHANNEL = "promptpulse_metrics"  # services/aggregator/ingest/writer.py NOTIFY_CHANNEL
MAX_CHANGED_MINUTES = 60  # a late event far back only re-sends the last hour of its range
_QUEUE_SIZE = 32
_HEALTH_CHECK_SECONDS = 15.0


@dataclass(frozen=True)
class StreamEvent:
    name: str  # snapshot | metrics | resync | close
    data: dict[str, Any]
    id: int = 0


CLOSE = StreamEvent("close", {})


@dataclass(eq=False)
class Subscriber:
    deployment: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(_QUEUE_SIZE))

    def offer(self, event: StreamEvent) -> None:
        if self.queue.full():  # keep the newest: figures supersede each other
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(event)


def minute_series(breakdown: Breakdown, scope: Scope, pass_score: int = 3) -> dict[str, Any]:
    return {
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "overview": breakdown.overview(pass_score, 0.95),
        "minutes": breakdown.series(scope.steps(), pass_score, 0.95),
    }


Connect = Callable[[], Awaitable[asyncpg.Connection]]


class MetricsHub:
    def __init__(self, connect: Connect, pool: asyncpg.Pool, *, snapshot_minutes: int,
                 deployments: Mapping[str, Any] | None = None) -> None:
        self._deployments = dict(deployments or {})  # for each metric's scale (rollups/scales.py)
        self._connect = connect
        self._pool = pool
        self._snapshot_minutes = snapshot_minutes
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._pending: dict[str, tuple[datetime, datetime]] = {}
        self._readers: dict[str, asyncio.Task] = {}
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._sequence = 0
        self.connected = False
        self.notifications = 0
        self.events_sent = 0
        self.reconnects = 0

    # -- subscribers ---------------------------------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def subscribe(self, deployment: str) -> Subscriber:
        subscriber = Subscriber(deployment)
        self._subscribers[deployment].add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._subscribers.get(subscriber.deployment)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._subscribers[subscriber.deployment]

    def close_subscribers(self) -> None:
        for group in self._subscribers.values():
            for subscriber in group:
                subscriber.offer(CLOSE)

    def _event(self, name: str, data: dict[str, Any]) -> StreamEvent:
        self._sequence += 1
        return StreamEvent(name, data, self._sequence)

    async def snapshot(self, deployment: str, now: datetime | None = None) -> StreamEvent:
        end = (now or datetime.now(UTC)).replace(second=0, microsecond=0) + timedelta(minutes=1)
        scope = Scope(deployment, end - timedelta(minutes=self._snapshot_minutes), end, timedelta(minutes=1))
        async with self._pool.acquire() as conn:
            breakdown = await read_breakdown(conn, scope, ScaleBook(self._deployments.get(deployment)))
        return self._event("snapshot", {"deployment": deployment, **minute_series(breakdown, scope)})

    # -- notifications -------------------------------------------------------------------------

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        self.notifications += 1
        try:
            if not isinstance(payload, str):  # asyncpg hands NOTIFY payloads over as text
                raise TypeError(f"payload is {type(payload).__name__}")
            change = json.loads(payload)
            deployment = change["deployment"]
            first = datetime.fromisoformat(change["first_minute"])
            last = datetime.fromisoformat(change["last_minute"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed %s notification: %r", CHANNEL, exc)
            return
        if deployment not in self._subscribers:
            return
        if deployment in self._pending:
            old_first, old_last = self._pending[deployment]
            first, last = min(first, old_first), max(last, old_last)
        self._pending[deployment] = (first, last)
        if deployment not in self._readers:
            self._readers[deployment] = asyncio.create_task(self._read_changes(deployment))

    async def _read_changes(self, deployment: str) -> None:
        try:
            while deployment in self._pending:
                first, last = self._pending.pop(deployment)
                end = last + timedelta(minutes=1)
                start = max(first, end - timedelta(minutes=MAX_CHANGED_MINUTES))
                scope = Scope(deployment, start, end, timedelta(minutes=1))
                try:
                    async with self._pool.acquire() as conn:
                        breakdown = await read_breakdown(conn, scope, ScaleBook(self._deployments.get(deployment)))
                except Exception as exc:  # the database is away: the next notification retries
                    log.warning("could not read changed figures of %s: %r", deployment, exc)
                    continue
                series = minute_series(breakdown, scope)
                series.pop("overview")  # the changed minutes only: a client merges them by start
                event = self._event("metrics", {"deployment": deployment, **series})
                for subscriber in list(self._subscribers.get(deployment, ())):
                    subscriber.offer(event)
                    self.events_sent += 1
        finally:
            self._readers.pop(deployment, None)

    # -- the listening connection -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="aggregator-metrics-listener")

    async def stop(self) -> None:
        self._stopping.set()
        self.close_subscribers()
        for task in [self._task, *self._readers.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _listen_forever(self) -> None:
        backoff = Backoff(0.5, 10.0)
        first = True
        while not self._stopping.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self.connected = True
                backoff.reset()
                if not first:
                    self.reconnects += 1
                    await self._resync()
                first = False
                while not lost.is_set() and not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _HEALTH_CHECK_SECONDS)
                    if not lost.is_set():
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)  # a silently dead link
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected or first:
                    log.warning("metrics listener lost its connection: %r (reconnecting)", exc)
                first = False
            finally:
                self.connected = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 5)
            await pause(backoff.next(), self._stopping)

    async def _resync(self) -> None:
        for deployment in list(self._subscribers):
            try:
                event = await self.snapshot(deployment)
            except Exception as exc:
                log.warning("could not resync subscribers of %s: %r", deployment, exc)
                continue
            for subscriber in list(self._subscribers.get(deployment, ())):
                subscriber.offer(event)
