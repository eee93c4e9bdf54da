"""Delivering alerts from the ``alerts`` outbox to the alerts topic (direct destinations,
webhooks among them, are destinations/dispatcher.py's).

Topic: under the evaluator's advisory lock, unpublished rows are sent in id order, keyed by
monitor id (one monitor's changes stay in order on one partition), and marked published in the
same transaction once Kafka acknowledged them. A crash between the acknowledgement and the
COMMIT sends the row again: delivery is at least once, and the alert's ``event_id`` lets a
reader drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer

from services.aggregator.monitors.evaluator import EVALUATOR_LOCK
from services.aggregator.monitors.settings import MonitorsSection
from shared.events.codec import decode_alert_json, event_headers

log = logging.getLogger(__name__)

_BATCH = 100


@dataclass
class DeliveryStats:
    published: int = 0
    publish_failures: int = 0
    # Direct destinations (destinations/dispatcher.py), every kind: the names predate them.
    webhooks_delivered: int = 0
    webhook_failures: int = 0  # attempts that failed (retried or final)
    silenced: int = 0  # transitions not sent to destinations because their monitor was silenced


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
