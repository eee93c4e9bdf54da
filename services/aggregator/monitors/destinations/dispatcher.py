"""Delivering the destinations outbox, and test notifications, through one attempt function.

Any replica may deliver. A due row is claimed by pushing its next attempt past the POST's
timeout (``FOR UPDATE SKIP LOCKED``), so two replicas never send the same attempt. Server
errors, 408, 429 and network failures are retried with doubling back-off (shared/retry.py; a
``Retry-After`` is a floor) up to ``webhook_max_attempts``; any other answer, and a destination
that cannot be sent to as configured (a variable unset), is final. Every attempt is a row of
``delivery_log``. A transition whose Alert is ``silenced`` is not sent to any destination (it
still is on the alerts topic and goes to Alertmanager): the row is closed as ``silenced``.

URLs, routing keys and secrets are read from the environment for each attempt and appear in no
log line, error or row: an aiohttp error's text can hold the URL, so only its type is kept.
"""

from __future__ import annotations

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
from shared.retry import Backoff, retry_after_seconds

log = logging.getLogger(__name__)

_BATCH = 100

_CLAIM_SQL = """
UPDATE alert_deliveries SET next_attempt_at = now() + $2::interval
WHERE id IN (SELECT id FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
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


async def deliver_due(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    section: MonitorsSection,
    stats: DeliveryStats,
    public_url: str | None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Send every due outbox row once; returns how many were delivered."""
    environ = os.environ if environ is None else environ
    lease = timedelta(seconds=section.webhook_timeout_seconds + 30)
    async with pool.acquire() as conn:
        claimed = await conn.fetch(_CLAIM_SQL, _BATCH, lease)
        if not claimed:
            return 0
        alerts = {r["id"]: r for r in await conn.fetch(_ALERTS_SQL, sorted({r["alert_id"] for r in claimed}))}
    backoff = Backoff(section.webhook_retry_initial_seconds, section.webhook_retry_max_seconds)
    delivered = 0
    for row in sorted(claimed, key=lambda r: r["id"]):
        alert = alerts[row["alert_id"]]
        definition = alert["definition"]
        notice = notice_from_row(alert, json.loads(definition) if isinstance(definition, str) else definition,
                                 public_url)
        target = row["target"] if isinstance(row["target"], dict) else json.loads(row["target"])
        if notice.silenced:
            stats.silenced += 1
            async with pool.acquire() as conn:
                await conn.execute(_UPDATE_SQL, row["id"], "silenced", row["attempts"], None, None)
                await log_attempt(conn, notice, row["destination"], row["kind"], 0, "silenced", None)
            continue
        number = row["attempts"] + 1
        result = await attempt(session, target, notice, section.webhook_timeout_seconds, environ)
        if result.delivered:
            delivered += 1
            state, outcome, wait = "delivered", "delivered", None
        else:
            stats.webhook_failures += 1
            give_up = result.final or number >= section.webhook_max_attempts
            state, outcome = ("failed", "failed") if give_up else ("pending", "retrying")
            wait = None if give_up else backoff.delay(number, at_least=result.retry_after)
            log.warning("alert %s of monitor %s to destination %s (%s): %s (attempt %d%s)", notice.event_id,
                        notice.monitor_id, row["destination"], row["kind"], result.error, number,
                        ", giving up" if give_up else "")
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_UPDATE_SQL, row["id"], state, number, result.error, wait)
            await log_attempt(conn, notice, row["destination"], row["kind"], number, outcome, result)
    stats.webhooks_delivered += delivered
    return delivered


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

