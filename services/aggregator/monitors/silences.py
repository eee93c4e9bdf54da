"""Silences of a monitor's direct destinations (migration 0012, docs/alerting.md).

A silence holds a monitor's FIRING transitions back from Slack, Teams, PagerDuty and webhooks
for a while; the transition is still stored, published to the alerts topic with
``Alert.silenced = true`` and sent to Alertmanager (whose own silences are Alertmanager's job).
A RESOLVED transition goes where its FIRING went: a receiver that got the firing gets its end
(a PagerDuty incident is not left open), one that did not gets neither.

Silences run on the wall clock (they are set by people for "the next two hours"), not on the
windows' data time: whether one is in force is decided by Postgres' ``now()`` when the
transition is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.aggregator.db.pool import DbConnection
from shared.deployments import format_duration, parse_duration

MIN_SILENCE_SECONDS = 60  # shorter ends before the next window is evaluated: a typo, not a silence
MAX_SILENCE_SECONDS = 30 * 86400  # longer is a forgotten silence: remove or change the monitor instead
MAX_REASON_CHARS = 1000
MAX_NAME_CHARS = 200
STATES = ("active", "expired", "ended")
_FIELDS = frozenset({"duration", "reason", "created_by"})
# Some text and no control character (a newline or an escape would forge lines in a listing);
# the OpenAPI document states the same pattern.
ONE_LINE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"

_IN_FORCE = "ended_at IS NULL AND created_at <= now() AND ends_at > now()"

_SILENCED_NOW_SQL = f"SELECT EXISTS (SELECT 1 FROM monitor_silences WHERE monitor_id = $1 AND {_IN_FORCE})"
_LAST_FIRING_SQL = """
SELECT silenced FROM alerts WHERE monitor_id = $1 AND state = 'firing' ORDER BY id DESC LIMIT 1"""


class SilenceInputError(ValueError):
    """A silence request is invalid; ``field`` names the body field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SilenceRequest:
    seconds: int
    reason: str
    created_by: str


def parse_silence_duration(value: Any, field: str = "duration") -> int:
    """``"2h"`` -> 7200; from 1m to 30d. Anything else is a SilenceInputError naming ``field``."""
    if not isinstance(value, str):
        raise SilenceInputError(field, "must be a duration string like '30m', '2h' or '1d'")
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise SilenceInputError(field, f"{value[:40]!r} is not a duration like '30m', '2h' or '1d'") from None
    if seconds < MIN_SILENCE_SECONDS:
        raise SilenceInputError(field, f"must be at least {format_duration(MIN_SILENCE_SECONDS)}, got {value!r}")
    if seconds > MAX_SILENCE_SECONDS:
        raise SilenceInputError(field, f"must be at most {format_duration(MAX_SILENCE_SECONDS)}, got {value!r}")
    return seconds


def plain_text(field: str, value: Any, limit: int, *, required: bool = True) -> str | None:
    """A one-line, non-empty text of at most ``limit`` characters (None when absent and optional)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SilenceInputError(field, "is required: a non-empty string")
    if len(value) > limit:
        raise SilenceInputError(field, f"must be at most {limit} characters")
    if not re.fullmatch(ONE_LINE, value):
        raise SilenceInputError(field, "must be one line without control characters")
    return value.strip()


def parse_silence(body: Any) -> SilenceRequest:
    """``{"duration": "2h", "reason": "...", "created_by": "..."}``, each field checked."""
    if not isinstance(body, dict):
        raise SilenceInputError("body", 'must be {"duration": "2h", "reason": "...", "created_by": "..."}')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise SilenceInputError(unknown[0], "unknown field (a silence takes duration, reason, created_by)")
    seconds = parse_silence_duration(body.get("duration"))
    reason = plain_text("reason", body.get("reason"), MAX_REASON_CHARS)
    created_by = plain_text("created_by", body.get("created_by"), MAX_NAME_CHARS)
    assert reason is not None and created_by is not None
    return SilenceRequest(seconds, reason, created_by)


async def create_silence(conn: DbConnection, deployment: str, monitor_id: str,
                         request: SilenceRequest) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO monitor_silences (deployment, monitor_id, created_by, reason, ends_at)
           VALUES ($1, $2, $3, $4, now() + $5::interval) RETURNING *, now() AS now""",
        deployment, monitor_id, request.created_by, request.reason, timedelta(seconds=request.seconds),
    )
    assert row is not None
    return row


async def end_silences(conn: DbConnection, deployment: str, monitor_id: str,
                       ended_by: str | None) -> list[asyncpg.Record]:
    """Ends every silence of the monitor in force now; returns them (empty: none was)."""
    return list(await conn.fetch(
        f"""UPDATE monitor_silences SET ended_at = now(), ended_by = $3
            WHERE deployment = $1 AND monitor_id = $2 AND {_IN_FORCE}
            RETURNING *, now() AS now""",
        deployment, monitor_id, ended_by,
    ))


async def list_silences(conn: DbConnection, deployment: str, monitor_id: str | None, state: str | None,
                        limit: int) -> list[asyncpg.Record]:
    """Newest first; ``state``: active, expired (ran to its end) or ended (ended early)."""
    return list(await conn.fetch(
        f"""SELECT *, now() AS now FROM monitor_silences
            WHERE deployment = $1 AND ($2::text IS NULL OR monitor_id = $2)
              AND ($3::text IS NULL
                   OR ($3 = 'active' AND {_IN_FORCE})
                   OR ($3 = 'ended' AND ended_at IS NOT NULL)
                   OR ($3 = 'expired' AND ended_at IS NULL AND ends_at <= now()))
            ORDER BY id DESC LIMIT $4""",
        deployment, monitor_id, state, limit,
    ))


def silence_state(row: asyncpg.Record | dict[str, Any]) -> str:
    if row["ended_at"] is not None:
        return "ended"
    return "active" if row["ends_at"] > row["now"] else "expired"


def public_silence(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "deployment": row["deployment"],
        "monitor_id": row["monitor_id"],
        "state": silence_state(row),
        "created_by": row["created_by"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "ends_at": row["ends_at"],
        "ended_at": row["ended_at"],
        "ended_by": row["ended_by"],
    }


async def silenced_until(conn: DbConnection, monitor_ids: list[str]) -> dict[str, datetime]:
    """Monitor id -> when its silences in force end (the latest), for the monitors silenced now."""
    rows = await conn.fetch(
        f"""SELECT monitor_id, max(ends_at) AS until FROM monitor_silences
            WHERE monitor_id = ANY($1::text[]) AND {_IN_FORCE} GROUP BY monitor_id""",
        monitor_ids,
    )
    return {r["monitor_id"]: r["until"] for r in rows}


async def transition_silenced(conn: DbConnection, monitor_id: str, state: str) -> bool:
    """Whether a transition of ``monitor_id`` to ``state`` is held back from direct destinations."""
    if state == "firing":
        return bool(await conn.fetchval(_SILENCED_NOW_SQL, monitor_id))
    return bool(await conn.fetchval(_LAST_FIRING_SQL, monitor_id))


async def drop_old_silences(conn: DbConnection, cutoff: datetime) -> None:
    """Retention: silences over (by their end) before ``cutoff`` go."""
    await conn.execute("DELETE FROM monitor_silences WHERE coalesce(ended_at, ends_at) < $1", cutoff)
