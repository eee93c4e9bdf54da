"""Evaluating due windows: one transaction per tick, one evaluator at a time.

A tick takes a transaction-level advisory lock with ``pg_try_advisory_xact_lock``: a replica
that does not get it skips the tick, so only one aggregator evaluates at a time, and the lock
goes away with the transaction if the holder dies. Inside it, for each monitor in force: the
windows due since ``monitor_states.evaluated_through`` are measured from the rollups, each
written as a ``monitor_windows`` row, and every state change is written to ``alerts`` (the
outbox the publisher drains), queued for its direct destinations (``alert_deliveries``,
destinations/) and mirrored in ``alertmanager_alerts`` (alertmanager.py), all in the same
transaction. The window's primary key makes a
second evaluation of the same window impossible even if two evaluators ever overlapped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.alertmanager import record_transition
from services.aggregator.monitors.alerts import build_alert
from services.aggregator.monitors.destinations.outbox import enqueue, enqueue_like, monitor_targets
from services.aggregator.monitors.measure import window_figures
from services.aggregator.monitors.schedule import due_window_ends
from services.aggregator.monitors.settings import MonitorsSection
from services.aggregator.monitors.silences import transition_silenced
from services.aggregator.monitors.statistics import (
    FIRING,
    OK,
    RESOLVED,
    Estimate,
    estimate,
    is_violated,
    next_state,
)
from services.aggregator.monitors.store import StoredMonitor, load_monitors
from services.aggregator.rollups.scales import ScaleBook
from services.aggregator.rollups.version_scales import read_versions
from shared.deployments import Destination, Monitor

log = logging.getLogger(__name__)

EVALUATOR_LOCK = 0x5050_4556_414C  # "PPEVAL"; any constant shared by every replica

_WINDOW_SQL = """
INSERT INTO monitor_windows (monitor_id, window_end, window_start, deployment, variant, statistic,
    metric, value, sample_count, ci_low, ci_high, threshold, min_samples, enough_samples, violated, note,
    evaluator_version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (monitor_id, window_end) DO NOTHING
RETURNING true
"""

_ALERT_SQL = """
INSERT INTO alerts (event_id, monitor_id, deployment, variant, statistic, metric, state,
    window_start, window_end, value, threshold, sample_count, ci_low, ci_high, message, payload, webhook_state,
    silenced)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'none', $17)
ON CONFLICT (monitor_id, window_end, state) DO NOTHING
RETURNING id
"""

_STATE_SQL = """
INSERT INTO monitor_states (monitor_id, state, evaluated_through, changed_at, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (monitor_id) DO UPDATE
SET state = EXCLUDED.state, evaluated_through = EXCLUDED.evaluated_through,
    changed_at = EXCLUDED.changed_at, updated_at = now()
"""


@dataclass
class TickResult:
    leader: bool = False
    windows: int = 0
    violations: int = 0
    alerts: int = 0
    skipped_windows: int = 0
    pending_monitors: int = 0  # monitors with windows left for the next tick (per-tick cap)
    errors: list[str] = field(default_factory=list)


async def _write_alert(
    conn: DbConnection,
    monitor: Monitor,
    deployment: str,
    state: str,
    start: datetime,
    end: datetime,
    result: Estimate,
    *,
    extra: str = "",
) -> int | None:
    """Write the transition (the alerts row, its destinations' outbox rows, its Alertmanager
    mirror); returns the alerts row's id, None when this change was written before."""
    silenced = await transition_silenced(conn, monitor.id, state)  # held back from direct destinations
    record = build_alert(monitor, deployment, state, start, end, result, extra=extra, silenced=silenced)
    alert_id = await conn.fetchval(
        _ALERT_SQL,
        record.alert.event_id,
        monitor.id,
        deployment,
        monitor.variant or "",
        monitor.statistic,
        monitor.metric or "",
        state,
        start,
        end,
        result.value,
        monitor.threshold,
        result.sample_count,
        result.ci_low,
        result.ci_high,
        record.alert.message,
        record.payload,
        silenced,
    )
    await record_transition(conn, monitor, deployment, state, start, end,
                            event_id=record.alert.event_id, message=record.alert.message)
    return alert_id


class Evaluator:
    """Evaluates every monitor's due windows; ``tick(now)`` is one pass (tests pass ``now``)."""

    def __init__(self, pool: asyncpg.Pool, section: MonitorsSection) -> None:
        self._pool = pool
        self._section = section
        # Deployment -> its direct destinations (from the files; the service sets them at sync).
        self.destinations: Mapping[str, Sequence[Destination]] = {}
        # The loaded deployment files (MonitorService.sync_files): each metric's scale and pass
        # rule. A deployment not loaded here has the built-in metrics' 1-5 only.
        self.deployments: Mapping[str, Any] = {}

    async def tick(self, now: datetime) -> TickResult:
        result = TickResult()
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EVALUATOR_LOCK):
                return result
            result.leader = True
            states = {
                r["monitor_id"]: r
                for r in await conn.fetch(
                    "SELECT monitor_id, state, evaluated_through, changed_at FROM monitor_states"
                )
            }
            stored = await load_monitors(conn)
            budget = self._section.max_windows_per_tick
            scales: dict[str, ScaleBook] = {}  # per deployment: read once a tick, not per monitor
            for entry in stored:
                if budget <= 0:
                    result.pending_monitors += 1
                    continue
                budget -= await self._evaluate_monitor(conn, entry, states.get(entry.monitor.id), now, budget, result,
                                                       scales)
            await self._resolve_removed(conn, {s.monitor.id for s in stored}, states, result)
        return result

    async def _evaluate_monitor(
        self,
        conn: DbConnection,
        entry: StoredMonitor,
        state_row: asyncpg.Record | None,
        now: datetime,
        budget: int,
        result: TickResult,
        scales_of: dict[str, ScaleBook],
    ) -> int:
        monitor, deployment = entry.monitor, entry.deployment
        window = timedelta(seconds=monitor.window)
        due = due_window_ends(
            state_row["evaluated_through"] if state_row else None,
            now,
            cadence_seconds=monitor.cadence or monitor.window,
            grace_seconds=self._section.grace_seconds,
            max_catch_up=self._section.max_catch_up_windows,
        )
        if due.skipped:
            log.warning("monitor %s: %d missed windows are older than the catch-up limit, skipped",
                        monitor.id, due.skipped)
            result.skipped_windows += due.skipped
        ends = due.ends[:budget]
        if len(due.ends) > budget:
            result.pending_monitors += 1
        if not ends:
            return 0
        state = state_row["state"] if state_row else OK
        changed_at = state_row["changed_at"] if state_row else None
        scales = scales_of.get(deployment)
        if scales is None and monitor.statistic in ("average", "pass_rate"):
            scales = scales_of[deployment] = ScaleBook(self.deployments.get(deployment),
                                                       recorded=await read_versions(conn, deployment))
        for end in ends:
            start = end - window
            figures = await window_figures(conn, deployment, monitor, start, end, scales)
            measured = estimate(monitor, figures, monitor.window, self._section.confidence_level)
            enough = measured.value is not None and measured.sample_count >= monitor.min_samples
            violated = is_violated(monitor, measured)
            inserted = await conn.fetchval(
                _WINDOW_SQL, monitor.id, end, start, deployment, monitor.variant or "", monitor.statistic,
                monitor.metric or "", measured.value, measured.sample_count, measured.ci_low, measured.ci_high,
                monitor.threshold, monitor.min_samples, enough, violated, measured.note,
                figures.evaluator_version,
            )
            if not inserted:
                continue  # evaluated before (only possible if evaluators ever overlapped)
            result.windows += 1
            result.violations += violated
            new_state = next_state(state, violated, enough)
            if new_state is not None:
                alert_id = await _write_alert(conn, monitor, deployment, new_state, start, end, measured)
                if alert_id is not None:
                    await enqueue(conn, alert_id, monitor_targets(monitor, self.destinations.get(deployment, ())))
                result.alerts += 1
                state, changed_at = new_state, end
        await conn.execute(_STATE_SQL, monitor.id, state, ends[-1], changed_at)
        return len(ends)

    async def _resolve_removed(
        self, conn: DbConnection, in_force: set[str], states: dict, result: TickResult
    ) -> None:
        """A monitor removed while firing gets a last ``resolved`` alert, so no subscriber is
        left with an alert that never ends; the state of any removed monitor is dropped."""
        gone = [monitor_id for monitor_id in states if monitor_id not in in_force]
        for monitor_id in gone:
            if states[monitor_id]["state"] == FIRING:
                last = await conn.fetchrow(
                    "SELECT * FROM alerts WHERE monitor_id = $1 AND state = 'firing' ORDER BY id DESC LIMIT 1",
                    monitor_id,
                )
                if last is not None:
                    await self._resolve_from_row(conn, last, states[monitor_id]["evaluated_through"])
                    result.alerts += 1
            await conn.execute("DELETE FROM monitor_states WHERE monitor_id = $1", monitor_id)

    @staticmethod
    async def _resolve_from_row(conn: DbConnection, last: asyncpg.Record, end: datetime) -> None:
        definition = {
            "id": last["monitor_id"],
            "variant": last["variant"] or None,
            "statistic": last["statistic"],
            "metric": last["metric"] or None,
            "threshold": last["threshold"],
            "window": max(60, int((last["window_end"] - last["window_start"]).total_seconds())),
            "min_samples": 1,
        }
        monitor = Monitor.model_validate(definition)
        end = max(end or last["window_end"], last["window_end"])
        start = end - (last["window_end"] - last["window_start"])
        empty = Estimate(None, 0, None, None)
        alert_id = await _write_alert(conn, monitor, last["deployment"], RESOLVED, start, end, empty,
                                      extra="The monitor was removed.")
        if alert_id is not None:  # where its firing went (the monitor's own settings are gone)
            await enqueue_like(conn, alert_id, last["id"])
