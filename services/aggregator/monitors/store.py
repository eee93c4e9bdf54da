"""The monitors in force, kept in Postgres: the deployment files' sections, and API changes.

At start-up each aggregator writes its files' monitors (source ``file``) for every deployment
whose monitors were never set through the API. ``PUT /v1/deployments/{d}/monitors`` replaces a
deployment's monitors (source ``api``) and records the deployment in ``monitor_overrides``, so
from then on the file no longer applies to it: API changes win over the file, on every replica
and after every restart. The evaluator and the API both read this table, never the files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.aggregator.db.pool import DbConnection
from shared.deployments import Deployment, Monitor, format_duration
from shared.deployments.base import DEFER_CHECKS
from shared.deployments.errors import Problem, problems_at, problems_from_validation

log = logging.getLogger(__name__)

# Serialises writers of the monitors table (file sync at start-up, API replacements).
MONITORS_LOCK = 0x5050_4D4F_4E53  # "PPMONS"
MASKED_SECRET = "**********"
MAX_MONITORS_PER_DEPLOYMENT = 200


class MonitorInputError(ValueError):
    """A monitor set sent to the API is invalid; ``problems`` names each bad field."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))

    @property
    def field(self) -> str:
        return self.problems[0].field


@dataclass(frozen=True)
class StoredMonitor:
    deployment: str
    source: str
    monitor: Monitor


def monitor_to_json(monitor: Monitor) -> dict[str, Any]:
    """The monitor for storage: every field, the webhook URL in clear (the store needs it)."""
    data = monitor.model_dump(mode="json")
    url = monitor.notification.webhook_url
    data["notification"]["webhook_url"] = None if url is None else url.get_secret_value()
    return data


def monitor_from_json(definition: Mapping[str, Any] | str) -> Monitor:
    if isinstance(definition, str):
        definition = json.loads(definition)
    return Monitor.model_validate(definition)


def public_monitor(monitor: Monitor) -> dict[str, Any]:
    """The monitor as the API shows it: durations as ``5m``, the webhook URL masked.

    The same shape is accepted by PUT, and a masked URL sent back keeps the stored one, so a
    client can GET, edit a threshold and PUT without ever seeing the secret.
    """
    data = monitor.model_dump(mode="json", exclude_none=True)
    data["window"] = format_duration(monitor.window)
    data["cadence"] = format_duration(monitor.cadence or monitor.window)
    notification = data.get("notification") or {}
    if monitor.notification.webhook_url is not None:
        notification["webhook_url"] = MASKED_SECRET
    data["notification"] = notification
    return data


async def load_monitors(conn: DbConnection, deployment: str | None = None) -> list[StoredMonitor]:
    """The monitors in force, for one deployment or all, in deployment and file order.

    A stored definition this code can no longer read is logged and skipped, so one bad row
    cannot stop every other monitor.
    """
    rows = await conn.fetch(
        """SELECT deployment, source, definition FROM monitors
           WHERE $1::text IS NULL OR deployment = $1 ORDER BY deployment, position, monitor_id""",
        deployment,
    )
    found = []
    for row in rows:
        try:
            found.append(StoredMonitor(row["deployment"], row["source"], monitor_from_json(row["definition"])))
        except (ValidationError, ValueError) as exc:
            log.error("stored monitor of deployment %s is unreadable, skipped: %s", row["deployment"], exc)
    return found


async def overridden(conn: DbConnection, deployment: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM monitor_overrides WHERE deployment = $1", deployment))


async def _insert(conn: DbConnection, deployment: str, source: str, monitors: Sequence[Monitor]) -> None:
    await conn.executemany(
        "INSERT INTO monitors (monitor_id, deployment, source, position, definition) VALUES ($1, $2, $3, $4, $5)",
        [(m.id, deployment, source, i, json.dumps(monitor_to_json(m))) for i, m in enumerate(monitors)],
    )


async def sync_file_monitors(conn: DbConnection, deployments: Mapping[str, Deployment],
                             keep: Collection[str] = ()) -> list[str]:
    """Make the file-sourced monitors equal the files' sections; returns the ids skipped.

    ``keep``: deployments whose file does not load; their stored file monitors stay as they are.

    Deployments set through the API keep theirs. A file monitor whose id an API-set monitor of
    another deployment already uses is skipped (ids are unique: alerts are keyed by them).
    """
    skipped: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MONITORS_LOCK)
        kept = {r["deployment"] for r in await conn.fetch("SELECT deployment FROM monitor_overrides")}
        api_ids = {
            r["monitor_id"]: r["deployment"]
            for r in await conn.fetch("SELECT monitor_id, deployment FROM monitors WHERE source = 'api'")
        }
        await conn.execute("DELETE FROM monitors WHERE source = 'file' AND NOT deployment = ANY($1::text[])",
                           sorted(keep))
        for name in sorted(deployments):
            if name in kept:
                continue
            wanted = []
            for monitor in deployments[name].monitors:
                if monitor.id in api_ids:
                    log.warning(
                        "monitor %s of deployment %s's file is skipped: deployment %s already uses "
                        "that id (set through the API)", monitor.id, name, api_ids[monitor.id],
                    )
                    skipped.append(monitor.id)
                else:
                    wanted.append(monitor)
            await _insert(conn, name, "file", wanted)
    return skipped


def parse_monitor_set(body: Any, deployment: Deployment | None) -> list[Monitor]:
    """The monitors in a PUT body ``{"monitors": [...]}``, checked like a deployment file's.

    With the deployment's file at hand, variants and metrics are checked against it too.
    Raises MonitorInputError naming every bad field (``monitors[0].threshold``).
    """
    where = "body"
    if not isinstance(body, dict) or set(body) != {"monitors"} or not isinstance(body["monitors"], list):
        raise MonitorInputError([Problem(where, "monitors", 'the body must be {"monitors": [...]}')])
    items = body["monitors"]
    if len(items) > MAX_MONITORS_PER_DEPLOYMENT:
        raise MonitorInputError(
            [Problem(where, "monitors", f"at most {MAX_MONITORS_PER_DEPLOYMENT} monitors per deployment")]
        )
    problems: list[Problem] = []
    monitors: list[Monitor] = []
    for index, item in enumerate(items):
        prefix = ("monitors", index)
        try:
            monitor = Monitor.model_validate(item, context={DEFER_CHECKS: True})
        except ValidationError as exc:
            problems += problems_from_validation(where, exc, prefix)
            continue
        problems += problems_at(where, monitor.all_problems(), prefix)
        monitors.append(monitor)
    seen: set[str] = set()
    for index, monitor in enumerate(monitors):
        if monitor.id in seen:
            problems.append(Problem(where, f"monitors[{index}].id", f"{monitor.id!r} is listed twice"))
        seen.add(monitor.id)
    if deployment is not None and not problems:
        # The file's own cross-checks (variant exists, metric is judged) on the new set.
        candidate = deployment.model_copy(update={"monitors": monitors})
        problems += [p for p in problems_at(where, candidate.problems()) if p.field.startswith("monitors")]
    if problems:
        raise MonitorInputError(problems)
    return monitors


def _keep_masked_secrets(body: Any, current: Mapping[str, Monitor]) -> Any:
    """A masked webhook URL sent back (GET then PUT) keeps the one stored for that monitor id."""
    if not isinstance(body, dict) or not isinstance(body.get("monitors"), list):
        return body
    for item in body["monitors"]:
        notification = item.get("notification") if isinstance(item, dict) else None
        if isinstance(notification, dict) and notification.get("webhook_url") == MASKED_SECRET:
            stored = current.get(item.get("id")) if isinstance(item.get("id"), str) else None
            url = stored.notification.webhook_url if stored is not None else None
            notification["webhook_url"] = url.get_secret_value() if url is not None else None
    return body


@dataclass(frozen=True)
class Replaced:
    monitors: list[Monitor]
    removed: list[Monitor]  # in force before, absent now


async def replace_monitors(
    conn: DbConnection, deployment_name: str, body: Any, deployment: Deployment | None
) -> Replaced:
    """Validate and store a deployment's new monitor set, in one transaction.

    Raises MonitorInputError for an invalid set or an id another deployment uses.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MONITORS_LOCK)
        current = {s.monitor.id: s.monitor for s in await load_monitors(conn, deployment_name)}
        monitors = parse_monitor_set(_keep_masked_secrets(body, current), deployment)
        ids = [m.id for m in monitors]
        taken = {
            r["monitor_id"]: r["deployment"]
            for r in await conn.fetch(
                "SELECT monitor_id, deployment FROM monitors WHERE monitor_id = ANY($1::text[]) AND deployment <> $2",
                ids,
                deployment_name,
            )
        }
        clashes = [
            Problem("body", f"monitors[{i}].id", f"{m.id!r} is a monitor of deployment {taken[m.id]!r}")
            for i, m in enumerate(monitors)
            if m.id in taken
        ]
        if clashes:
            raise MonitorInputError(clashes)
        await conn.execute("DELETE FROM monitors WHERE deployment = $1", deployment_name)
        await _insert(conn, deployment_name, "api", monitors)
        await conn.execute(
            """INSERT INTO monitor_overrides (deployment) VALUES ($1)
               ON CONFLICT (deployment) DO UPDATE SET updated_at = now()""",
            deployment_name,
        )
        removed = [m for monitor_id, m in current.items() if monitor_id not in set(ids)]
    return Replaced(monitors, removed)
