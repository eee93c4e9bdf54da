"""Monitor alerts to Prometheus Alertmanager (API v2 ``POST /api/v2/alerts``).

Alertmanager wants the current state of every alert, not a queue of changes: a firing alert is
sent again and again (here every ``resend_seconds``), with no ``endsAt``, so Alertmanager keeps it
active for its ``resolve_timeout`` after each send; a resolution is sent with ``endsAt``. So the
outbox holds one row per monitor (``alertmanager_alerts``), written by the evaluator in the
transaction of the state change it mirrors, and per Alertmanager what was last delivered
(``alertmanager_sends``). Every configured Alertmanager gets every alert, as Alertmanager's own
HA setup expects.

One replica sends at a time: a pass runs under its own session-level advisory lock (not the
evaluator's, so a slow or unreachable Alertmanager never holds up evaluation). No transaction
stays open across the HTTP posts: due rows are read, posted, then recorded, each statement
committing on its own. A crash between Alertmanager's answer and the recording sends the same
alert again, which Alertmanager merges (same labels: the same alert). Failures are retried with doubling back-off, recorded per monitor and
Alertmanager; a firing alert is retried for as long as it fires, a resolution up to
``resolved_max_attempts`` times (Alertmanager resolves it anyway once no re-send comes).
Routing, grouping and silences are Alertmanager's: PromptPulse always keeps sending.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import asyncpg

from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.alerts import metric_name
from services.aggregator.monitors.settings import AlertmanagerSection
from services.aggregator.monitors.statistics import FIRING
from shared.deployments import Monitor
from shared.deployments.monitors import DEFAULT_SEVERITY
from shared.retry import Backoff, pause

log = logging.getLogger(__name__)

ALERTMANAGER_LOCK = 0x5050_414C_4D47  # "PPALMG"; shared by every replica
_BATCH = 200

# The state change, mirrored: labels are kept from the firing row on resolution (Alertmanager
# matches the resolution to the alert by its labels); annotations are merged (a runbook stays).
_RECORD_SQL = """
INSERT INTO alertmanager_alerts (monitor_id, deployment, state, version, alert_event_id, labels,
    annotations, starts_at, ends_at, window_start, window_end)
VALUES ($1, $2, $3, 1, $4, $5::jsonb, $6::jsonb, $7, $8, $9, $10)
ON CONFLICT (monitor_id) DO UPDATE SET
    deployment = EXCLUDED.deployment,
    state = EXCLUDED.state,
    version = alertmanager_alerts.version + 1,
    alert_event_id = EXCLUDED.alert_event_id,
    labels = CASE WHEN EXCLUDED.state = 'firing' OR alertmanager_alerts.state = 'resolved'
                  THEN EXCLUDED.labels ELSE alertmanager_alerts.labels END,
    annotations = CASE WHEN EXCLUDED.state = 'firing' THEN EXCLUDED.annotations
                       ELSE alertmanager_alerts.annotations || EXCLUDED.annotations END,
    starts_at = CASE WHEN EXCLUDED.state = 'firing' OR alertmanager_alerts.state = 'resolved'
                     THEN EXCLUDED.starts_at ELSE alertmanager_alerts.starts_at END,
    ends_at = EXCLUDED.ends_at,
    window_start = CASE WHEN EXCLUDED.state = 'firing' OR alertmanager_alerts.state = 'resolved'
                        THEN EXCLUDED.window_start ELSE alertmanager_alerts.window_start END,
    window_end = EXCLUDED.window_end,
    updated_at = now()
"""

# Due for one Alertmanager: a change it has not had, a firing alert not sent for a resend
# interval; never before a failure's back-off ends, never a resolution given up on.
_DUE_SQL = """
SELECT a.*, coalesce(s.attempts, 0) AS attempts
FROM alertmanager_alerts a
LEFT JOIN alertmanager_sends s ON s.monitor_id = a.monitor_id AND s.target = $1
WHERE (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
  AND (s.monitor_id IS NULL OR s.version < a.version
       OR (a.state = 'firing' AND (s.last_sent_at IS NULL OR s.last_sent_at <= now() - $2::interval)))
  AND NOT (a.state = 'resolved' AND coalesce(s.gave_up, false))
ORDER BY a.monitor_id
LIMIT $3
"""

_DELIVERED_SQL = """
INSERT INTO alertmanager_sends (monitor_id, target, version, sends, last_sent_at)
SELECT m, $2, v, 1, now() FROM unnest($1::text[], $3::bigint[]) AS t(m, v)
ON CONFLICT (monitor_id, target) DO UPDATE SET
    version = EXCLUDED.version, sends = alertmanager_sends.sends + 1, last_sent_at = now(),
    attempts = 0, next_attempt_at = NULL, last_error = NULL, gave_up = false
"""

_FAILED_SQL = """
INSERT INTO alertmanager_sends (monitor_id, target, attempts, next_attempt_at, last_error, gave_up)
SELECT m, $2, n, now() + w * interval '1 second', $4, g
FROM unnest($1::text[], $3::integer[], $5::float8[], $6::boolean[]) AS t(m, n, w, g)
ON CONFLICT (monitor_id, target) DO UPDATE SET
    attempts = EXCLUDED.attempts, next_attempt_at = EXCLUDED.next_attempt_at,
    last_error = EXCLUDED.last_error, gave_up = EXCLUDED.gave_up
"""


def alert_name(monitor: Monitor) -> str:
    """``PromptPulsePassRate``, ``PromptPulseLatencyP95``...: one name per kind of watch, so
    Alertmanager groups and routes by it; the monitor itself is the ``monitor`` label."""
    return "PromptPulse" + "".join(part.capitalize() for part in monitor.statistic.split("_"))


def alert_labels(monitor: Monitor, deployment: str) -> dict[str, str]:
    labels = {
        "alertname": alert_name(monitor),
        "deployment": deployment,
        "monitor": monitor.id,
        "metric": metric_name(monitor),
        "severity": monitor.severity or DEFAULT_SEVERITY,
    }
    if monitor.variant:  # absent for a whole-deployment monitor, as Prometheus leaves empty labels out
        labels["variant"] = monitor.variant
    return labels


def alert_annotations(monitor: Monitor, message: str) -> dict[str, str]:
    annotations = {"summary": message}
    if monitor.runbook_url:
        annotations["runbook_url"] = monitor.runbook_url
    return annotations


async def record_transition(
    conn: DbConnection,
    monitor: Monitor,
    deployment: str,
    state: str,
    window_start: datetime,
    window_end: datetime,
    *,
    event_id: str,
    message: str,
) -> None:
    """Mirror one state change into the Alertmanager outbox (inside the evaluator's transaction).

    Written whether or not an Alertmanager is configured (one row per monitor), so one added
    later learns the alerts already firing."""
    firing = state == FIRING
    await conn.execute(
        _RECORD_SQL, monitor.id, deployment, state, event_id,
        json.dumps(alert_labels(monitor, deployment)), json.dumps(alert_annotations(monitor, message)),
        window_end if firing else window_start, None if firing else window_end, window_start, window_end,
    )
    # A new change is due at once, whatever back-off or give-up the previous one was in.
    await conn.execute(
        "UPDATE alertmanager_sends SET attempts = 0, next_attempt_at = NULL, gave_up = false WHERE monitor_id = $1",
        monitor.id,
    )


def target_id(url: str) -> str:
    """How an Alertmanager is named in the database: a hash of its URL (which may hold a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def display_url(url: str) -> str:
    """The URL as logs may show it: scheme, host and port only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dashboard_link(public_url: str, deployment: str, variant: str | None, start: datetime, end: datetime) -> str:
    """The dashboard's monitoring view of one deployment over ``[start, end]`` (``#/d/NAME?from&to``,
    services/aggregator/dashboard/static/monitor.js), narrowed to the variant if there is one."""
    params = {"from": _rfc3339(start), "to": _rfc3339(end)}
    if variant:
        params["variant"] = variant
    return f"{public_url.rstrip('/')}/dashboard/#/d/{quote(deployment, safe='')}?{urlencode(params)}"


def api_alert(row: Mapping[str, Any] | asyncpg.Record, public_url: str | None) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2 for an outbox row."""
    labels = _json(row["labels"])
    annotations = dict(_json(row["annotations"]))
    body: dict[str, Any] = {"labels": labels, "startsAt": _rfc3339(row["starts_at"])}
    if public_url:
        link = dashboard_link(public_url, row["deployment"], labels.get("variant"), row["window_start"],
                              row["window_end"])
        annotations["dashboard_url"] = link
        body["generatorURL"] = link
    body["annotations"] = annotations
    if row["state"] != FIRING and row["ends_at"] is not None:
        body["endsAt"] = _rfc3339(row["ends_at"])
    # Firing: no endsAt, so Alertmanager holds the alert for its resolve_timeout after each send.
    return body


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class AlertmanagerStats:
    sent: int = 0  # alerts delivered, re-sends included, over every Alertmanager
    failed: int = 0  # alerts whose send failed (retried later)
    passes: int = 0


class AlertmanagerSender:
    """Sends due alerts to every configured Alertmanager; ``send_due()`` is one pass."""

    def __init__(self, pool: asyncpg.Pool, section: AlertmanagerSection, public_url: str | None) -> None:
        self._pool = pool
        self._section = section
        self._public_url = public_url
        self._session: aiohttp.ClientSession | None = None
        self.stats = AlertmanagerStats()

    @property
    def enabled(self) -> bool:
        return bool(self._section.urls)

    async def send_due(self) -> int:
        """One pass over every Alertmanager; returns how many alerts were delivered. Does nothing
        (returns 0) when another replica is sending."""
        if not self.enabled:
            return 0
        if self._session is None:
            self._session = aiohttp.ClientSession()
        delivered = 0
        async with self._pool.acquire() as conn:
            # A session lock, not a transaction's: a transaction held open through posts of up to
            # timeout_seconds each would pin a snapshot and show as "idle in transaction".
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ALERTMANAGER_LOCK):
                return 0
            try:
                self.stats.passes += 1
                for url in self._section.urls:
                    delivered += await self._send_to(conn, url)
            finally:
                # (The pool's reset on release unlocks too, should this statement fail.)
                await conn.execute("SELECT pg_advisory_unlock($1)", ALERTMANAGER_LOCK)
        return delivered

    async def _send_to(self, conn: DbConnection, url: str) -> int:
        target = target_id(url)
        resend = timedelta(seconds=self._section.resend_seconds)
        rows = await conn.fetch(_DUE_SQL, target, resend, _BATCH)
        if not rows:
            return 0
        error = await self._post(url, [api_alert(row, self._public_url) for row in rows])
        ids = [row["monitor_id"] for row in rows]
        if error is None:
            await conn.execute(_DELIVERED_SQL, ids, target, [row["version"] for row in rows])
            self.stats.sent += len(rows)
            return len(rows)
        self.stats.failed += len(rows)
        # Never wait longer than a re-send interval: Alertmanager resolves what it does not hear of.
        backoff = Backoff(self._section.retry_initial_seconds,
                          min(self._section.retry_max_seconds, self._section.resend_seconds))
        attempts = [row["attempts"] + 1 for row in rows]
        gave_up = [row["state"] != FIRING and n >= self._section.resolved_max_attempts
                   for row, n in zip(rows, attempts, strict=True)]
        await conn.execute(_FAILED_SQL, ids, target, attempts, error,
                           [backoff.delay(n) for n in attempts], gave_up)
        log.warning("alertmanager %s: sending %d alerts failed: %s (attempt %d%s)", display_url(url), len(rows),
                    error, max(attempts), ", resolutions given up" if any(gave_up) else "")
        return 0

    async def _post(self, url: str, alerts: list[dict[str, Any]]) -> str | None:
        """None on success, else what went wrong (without the URL: it may hold a password)."""
        assert self._session is not None
        try:
            async with self._session.post(
                f"{url}/api/v2/alerts",
                json=alerts,
                timeout=aiohttp.ClientTimeout(total=self._section.timeout_seconds),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return None
                text = (await response.text())[:200]
                return f"HTTP {response.status}: {_one_line(text)}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"request failed ({type(exc).__name__})"

    async def run(self, stop: asyncio.Event, every_seconds: float) -> None:
        """Send passes until ``stop`` is set; a failing pass (Postgres away) is retried next time."""
        if not self.enabled:
            return
        while not stop.is_set():
            try:
                await self.send_due()
            except Exception as exc:
                log.warning("alertmanager pass failed: %r", exc, exc_info=not isinstance(exc, OSError))
            if not await pause(every_seconds, stop):
                return

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
