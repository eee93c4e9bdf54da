"""Delivering the destinations outbox, and test notifications, through one attempt function.

Any replica may deliver, in a task of its own beside evaluation. A due row is claimed by pushing
its next attempt past the POST's timeout (``FOR UPDATE SKIP LOCKED``), so two replicas never send
the same attempt; of one monitor's changes to one destination only the oldest pending one is
due, so they arrive in order. Server
errors, 408, 429 and network failures are retried with doubling back-off (shared/retry.py; a
``Retry-After`` is a floor) up to ``webhook_max_attempts``; any other answer, and a destination
that cannot be sent to as configured (a variable unset), is final. Every attempt is a row of
``delivery_log``. A transition whose Alert is ``silenced`` is not sent to any destination (it
still is on the alerts topic and goes to Alertmanager): the row is closed as ``silenced``.

URLs, routing keys and secrets are read from the environment for each attempt and appear in no
log line, error or row: an aiohttp error's text can hold the URL, so only its type is kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from services.aggregator.monitors.destinations.kinds import NotReady, outgoing
from services.aggregator.monitors.destinations.notice import Notice, notice_from_row, test_notice
from services.aggregator.monitors.destinations.outbox import LOG_SQL, UNKNOWN_KIND
from services.aggregator.monitors.publisher import DeliveryStats
from services.aggregator.monitors.settings import MonitorsSection
from services.aggregator.monitors.statistics import FIRING, RESOLVED
from shared.events.errors import EventDecodeError
from shared.retry import Backoff, pause, retry_after_seconds

log = logging.getLogger(__name__)

_BATCH = 100

_CONCURRENCY = 8

# Due rows, each the oldest pending change of its monitor for its destination: a resolution
# waits while its firing is still being retried (PagerDuty would otherwise get the resolve first
# and keep the incident open), and is sent once the firing is delivered or given up.
_CLAIM_SQL = """
UPDATE alert_deliveries SET next_attempt_at = now() + $2::interval
WHERE id IN (
    SELECT d.id FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (SELECT 1 FROM alert_deliveries e JOIN alerts ea ON ea.id = e.alert_id
                      WHERE e.state = 'pending' AND e.destination = d.destination AND e.id < d.id
                        AND ea.monitor_id = a.monitor_id)
    ORDER BY d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED)
RETURNING id, alert_id, destination, kind, target, attempts
"""

_ALERTS_SQL = """
SELECT a.id, a.event_id, a.monitor_id, a.deployment, a.variant, a.statistic, a.state, a.window_start,
       a.window_end, a.value, a.threshold, a.sample_count, a.message, a.payload, m.definition
FROM alerts a LEFT JOIN monitors m ON m.monitor_id = a.monitor_id WHERE a.id = ANY($1::bigint[])
"""

_UPDATE_SQL = """
UPDATE alert_deliveries SET state = $2, attempts = $3, last_error = $4, updated_at = now(),
    next_attempt_at = CASE WHEN $5::float8 IS NULL THEN NULL ELSE now() + $5 * interval '1 second' END
WHERE id = $1
"""


@dataclass(frozen=True)
class Attempt:
    http_status: int | None
    error: str | None  # None: delivered
    final: bool = False
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.error is None


def retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def attempt(
    session: aiohttp.ClientSession,
    target: Mapping[str, Any],
    notice: Notice,
    timeout_seconds: float,
    environ: Mapping[str, str],
) -> Attempt:
    """One POST of ``notice`` to ``target``."""
    if target.get("kind") == UNKNOWN_KIND:
        return Attempt(None, f"destination {target.get('name')} is not one of deployment "
                             f"{notice.deployment}'s destinations", final=True)
    try:
        request = outgoing(target, notice, environ, int(time.time()))
    except NotReady as exc:
        return Attempt(None, str(exc), final=True)
    try:
        async with session.post(
            request.url, data=request.body, headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds), allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return Attempt(response.status, None)
            # The answer's text is not kept: a misconfigured receiver may echo the request back.
            return Attempt(response.status, f"HTTP {response.status}", final=not retryable(response.status),
                           retry_after=retry_after_seconds(response.headers))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Attempt(None, f"request failed ({type(exc).__name__})")


async def log_attempt(conn: Any, notice: Notice, destination: str, kind: str, number: int, outcome: str,
                      result: Attempt | None) -> None:
    await conn.execute(
        LOG_SQL, notice.deployment, destination, kind, None if notice.test else notice.monitor_id,
        notice.event_id, notice.state, number, outcome,
        None if result is None else result.http_status, None if result is None else result.error,
    )


class Dispatcher:
    """Delivers the destinations outbox; ``deliver_due()`` is one pass, ``run()`` the loop the
    monitor service runs as its own task (beside evaluation, like the Alertmanager sender, so a
    slow or hanging destination never delays an evaluation)."""

    def __init__(self, pool: asyncpg.Pool, section: MonitorsSection, stats: DeliveryStats, public_url: str | None,
                 environ: Mapping[str, str] | None = None) -> None:
        self._pool = pool
        self._section = section
        self._stats = stats
        self._public_url = public_url
        self._environ = os.environ if environ is None else environ
        self._session: aiohttp.ClientSession | None = None
        self._backoff = Backoff(section.webhook_retry_initial_seconds, section.webhook_retry_max_seconds)

    def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def deliver_due(self) -> int:
        """Send every due outbox row once; returns how many were delivered. Rows are sent
        concurrently (at most _CONCURRENCY at a time): the claim only returns the oldest pending
        change of each monitor and destination, so no two of them are ordered."""
        self.open()
        lease = timedelta(seconds=self._section.webhook_timeout_seconds + 30)
        async with self._pool.acquire() as conn:
            claimed = await conn.fetch(_CLAIM_SQL, _BATCH, lease)
            if not claimed:
                return 0
            alerts = {r["id"]: r for r in await conn.fetch(_ALERTS_SQL, sorted({r["alert_id"] for r in claimed}))}
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(row: asyncpg.Record) -> bool:
            async with gate:
                return await self._deliver(row, alerts[row["alert_id"]])

        results = await asyncio.gather(*(one(row) for row in sorted(claimed, key=lambda r: r["id"])))
        delivered = sum(results)
        self._stats.webhooks_delivered += delivered
        return delivered

    async def _deliver(self, row: asyncpg.Record, alert: asyncpg.Record) -> bool:
        assert self._session is not None
        section, stats = self._section, self._stats
        definition = alert["definition"]
        try:
            notice = notice_from_row(alert, json.loads(definition) if isinstance(definition, str) else definition,
                                     self._public_url)
            target = row["target"] if isinstance(row["target"], dict) else json.loads(row["target"])
        except (EventDecodeError, ValueError, TypeError, KeyError) as exc:
            # A row this code cannot read is closed, not retried each pass for ever.
            stats.webhook_failures += 1
            log.error("alert row %s for destination %s is unreadable, not sent: %s", row["alert_id"],
                      row["destination"], type(exc).__name__)
            async with self._pool.acquire() as conn:
                await conn.execute(_UPDATE_SQL, row["id"], "failed", row["attempts"], "stored alert unreadable", None)
            return False
        if notice.silenced:
            stats.silenced += 1
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_UPDATE_SQL, row["id"], "silenced", row["attempts"], None, None)
                await log_attempt(conn, notice, row["destination"], row["kind"], 0, "silenced", None)
            return False
        number = row["attempts"] + 1
        result = await attempt(self._session, target, notice, section.webhook_timeout_seconds, self._environ)
        if result.delivered:
            state, outcome, wait = "delivered", "delivered", None
        else:
            stats.webhook_failures += 1
            give_up = result.final or number >= section.webhook_max_attempts
            state, outcome = ("failed", "failed") if give_up else ("pending", "retrying")
            wait = None if give_up else self._backoff.delay(number, at_least=result.retry_after)
            log.warning("alert %s of monitor %s to destination %s (%s): %s (attempt %d%s)", notice.event_id,
                        notice.monitor_id, row["destination"], row["kind"], result.error, number,
                        ", giving up" if give_up else "")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_UPDATE_SQL, row["id"], state, number, result.error, wait)
            await log_attempt(conn, notice, row["destination"], row["kind"], number, outcome, result)
        return result.delivered

    async def run(self, stop: asyncio.Event, every_seconds: float) -> None:
        """Delivery passes until ``stop`` is set; a failing pass (Postgres away) is retried next time."""
        while not stop.is_set():
            try:
                await self.deliver_due()
            except Exception as exc:
                log.warning("destination delivery pass failed: %r", exc, exc_info=not isinstance(exc, OSError))
            if not await pause(every_seconds, stop):
                return

    async def close(self) -> bool:
        """Close the HTTP session; whether there was one."""
        if self._session is None:
            return False
        await self._session.close()
        self._session = None
        return True


async def send_test(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    section: MonitorsSection,
    deployment: str,
    target: Mapping[str, Any],
    public_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[Notice, Attempt]]:
    """A test notification to one destination, through the same request building and attempt
    as alerts, logged like them (no monitor). One attempt, not retried: the caller wants to know
    now whether the destination works. PagerDuty gets a trigger then its resolve, so the test
    leaves no incident open."""
    environ = os.environ if environ is None else environ
    now = datetime.now(UTC)
    name = str(target["name"])
    states = [FIRING, RESOLVED] if target.get("kind") == "pagerduty" else [FIRING]
    results = []
    event_id = None
    for state in states:
        notice = test_notice(deployment, name, state, now, public_url)
        if event_id is not None:  # the resolve is of the same test alert
            notice = replace(notice, event_id=event_id)
        event_id = notice.event_id
        result = await attempt(session, target, notice, section.webhook_timeout_seconds, environ)
        async with pool.acquire() as conn:
            await log_attempt(conn, notice, name, str(target.get("kind")), 1,
                              "delivered" if result.delivered else "failed", result)
        results.append((notice, result))
        if not result.delivered:
            break
    return results

