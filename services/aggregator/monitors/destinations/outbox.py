"""Queueing a transition for its monitor's destinations (in the evaluator's transaction) and the
delivery log every attempt is written to."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.destinations.kinds import legacy_target, target_of
from shared.deployments import Destination, Monitor

UNKNOWN_KIND = "unknown"


def monitor_targets(monitor: Monitor, configured: Sequence[Destination]) -> list[dict[str, Any]]:
    """The outbox targets of one monitor's transitions: the deployment's destinations it chose
    (all when it names none), and its deprecated webhook. A name the deployment does not define
    (possible for monitors set through the API) is kept, so its failure shows in the log."""
    wanted = monitor.notification.destinations
    by_name = {d.name: d for d in configured}
    names = [d.name for d in configured] if wanted is None else list(wanted)
    targets = [target_of(by_name[n]) if n in by_name else {"kind": UNKNOWN_KIND, "name": n} for n in names]
    legacy = legacy_target(monitor.notification)
    if legacy is not None:
        targets.append(legacy)
    return targets


async def enqueue(conn: DbConnection, alert_id: int, targets: Sequence[Mapping[str, Any]]) -> None:
    if targets:
        await conn.executemany(
            """INSERT INTO alert_deliveries (alert_id, destination, kind, target, state, next_attempt_at)
               VALUES ($1, $2, $3, $4::jsonb, 'pending', now()) ON CONFLICT (alert_id, destination) DO NOTHING""",
            [(alert_id, t["name"], t["kind"], json.dumps(t)) for t in targets],
        )


async def enqueue_like(conn: DbConnection, alert_id: int, earlier_alert_id: int) -> None:
    """Queue ``alert_id`` for the destinations ``earlier_alert_id`` went to (a removed monitor's
    last resolution goes where its firing went)."""
    await conn.execute(
        """INSERT INTO alert_deliveries (alert_id, destination, kind, target, state, next_attempt_at)
           SELECT $1, destination, kind, target, 'pending', now() FROM alert_deliveries WHERE alert_id = $2
           ON CONFLICT (alert_id, destination) DO NOTHING""",
        alert_id, earlier_alert_id,
    )


LOG_SQL = """
INSERT INTO delivery_log (deployment, destination, kind, monitor_id, alert_event_id, alert_state, attempt,
    outcome, http_status, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
