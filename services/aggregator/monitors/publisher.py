"""Delivering alerts from the ``alerts`` outbox: to the alerts topic, and to webhooks.

Topic: under the evaluator's advisory lock, unpublished rows are sent in id order, keyed by
monitor id (one monitor's changes stay in order on one partition), and marked published in the
same transaction once Kafka acknowledged them. A crash between the acknowledgement and the
COMMIT sends the row again: delivery is at least once, and the alert's ``event_id`` lets a
reader drop the repeat.

Webhooks: any replica may deliver. A due row is claimed by pushing its next attempt time past
the POST's timeout (``FOR UPDATE SKIP LOCKED``), so two replicas never POST the same attempt;
server errors, 429 and network failures are retried with doubling back-off up to
``webhook_max_attempts``; other answers are final. The URL is a secret: it is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from services.aggregator.monitors.alerts import slack_body
from services.aggregator.monitors.evaluator import EVALUATOR_LOCK
from services.aggregator.monitors.settings import MonitorsSection
from shared.deployments import Notification
from shared.events.codec import decode_alert_json, event_headers
from shared.retry import Backoff

log = logging.getLogger(__name__)

_BATCH = 100


@dataclass
class DeliveryStats:
    published: int = 0
    publish_failures: int = 0
    webhooks_delivered: int = 0
    webhook_failures: int = 0  # attempts that failed (retried or final)


async def publish_pending(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, topic: str, section: MonitorsSection, stats: DeliveryStats
) -> int:
    """Send unpublished alerts to ``topic``; returns how many were published."""
    published = 0
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EVALUATOR_LOCK):
            return 0
        rows = await conn.fetch(
            "SELECT id, monitor_id, payload FROM alerts WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE",
            _BATCH,
        )
        done = []
        try:
            for row in rows:
                value = row["payload"].encode()
                headers = event_headers(decode_alert_json(value))
                await asyncio.wait_for(
                    producer.send_and_wait(topic, value=value, key=row["monitor_id"].encode(), headers=headers),
                    section.publish_timeout_seconds,
                )
                done.append(row["id"])
        except Exception as exc:  # Kafka away or slow: what was acknowledged is marked, the rest waits
            stats.publish_failures += 1
            log.warning("publishing alerts stopped after %d of %d: %r", len(done), len(rows), exc)
        if done:
            await conn.execute("UPDATE alerts SET published_at = now() WHERE id = ANY($1::bigint[])", done)
            published = len(done)
    stats.published += published
    return published


def webhook_url(target: Mapping[str, str], environ: Mapping[str, str]) -> str | None:
    notification = Notification.model_validate(target)
    url = notification.resolve_webhook_url(environ)
    return None if url is None else url.get_secret_value()


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


async def deliver_webhooks(
    pool: asyncpg.Pool,
    session: aiohttp.ClientSession,
    section: MonitorsSection,
    stats: DeliveryStats,
    environ: Mapping[str, str] | None = None,
) -> int:
    """POST due webhook deliveries once each; returns how many were delivered."""
    environ = os.environ if environ is None else environ
    lease = timedelta(seconds=section.webhook_timeout_seconds + 30)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """UPDATE alerts SET webhook_next_attempt_at = now() + $2::interval
               WHERE id IN (SELECT id FROM alerts
                            WHERE webhook_state = 'pending' AND webhook_next_attempt_at <= now()
                            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            _BATCH,
            lease,
        )
    delivered = 0
    for row in sorted(rows, key=lambda r: r["id"]):
        record = dict(row)
        error, final = await _post(session, record, section, environ)
        attempts = record["webhook_attempts"] + 1
        if error is None:
            delivered += 1
            state, retry_in = "delivered", None
        else:
            stats.webhook_failures += 1
            give_up = final or attempts >= section.webhook_max_attempts
            state = "failed" if give_up else "pending"
            wait = Backoff(section.webhook_retry_initial_seconds, section.webhook_retry_max_seconds).delay(attempts)
            retry_in = None if give_up else timedelta(seconds=wait)
            log.warning("webhook of monitor %s, alert %s: %s (attempt %d%s)", record["monitor_id"],
                        record["event_id"], error, attempts, ", giving up" if give_up else "")
        async with pool.acquire() as conn:
            await conn.execute(
                """UPDATE alerts SET webhook_state = $2, webhook_attempts = $3, webhook_last_error = $4,
                       webhook_next_attempt_at = CASE WHEN $5::interval IS NULL THEN NULL ELSE now() + $5 END
                   WHERE id = $1""",
                record["id"], state, attempts, error, retry_in,
            )
    stats.webhooks_delivered += delivered
    return delivered


async def _post(
    session: aiohttp.ClientSession, row: dict, section: MonitorsSection, environ: Mapping[str, str]
) -> tuple[str | None, bool]:
    """(error or None, whether the error is final)."""
    try:
        url = webhook_url(json.loads(row["webhook"]) if isinstance(row["webhook"], str) else row["webhook"], environ)
    except ValueError as exc:
        return f"invalid webhook setting: {exc}", True
    if url is None:
        return "webhook URL not set (is its environment variable set?)", True
    try:
        async with session.post(
            url,
            data=slack_body(row),
            headers={"Content-Type": "application/json", "X-PromptPulse-Alert-Id": row["event_id"]},
            timeout=aiohttp.ClientTimeout(total=section.webhook_timeout_seconds),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return None, False
            return f"HTTP {response.status}", not _retryable(response.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # The exception text can hold the URL (and so its token): only its type is kept.
        return f"request failed ({type(exc).__name__})", False
