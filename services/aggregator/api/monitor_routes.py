"""Monitor and alert routes: ``GET``/``PUT /v1/deployments/{d}/monitors``, ``GET /v1/alerts``."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from services.aggregator.api.body import read_json
from services.aggregator.api.errors import ApiError, json_response
from services.aggregator.api.params import Query, checked, decode_cursor, encode_cursor
from services.aggregator.api.state import API
from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.destinations.kinds import LEGACY_KIND, warn_inline_webhooks
from services.aggregator.monitors.silences import silenced_until
from services.aggregator.monitors.store import (
    MonitorInputError,
    load_monitors,
    overridden,
    public_monitor,
    replace_monitors,
)


async def _monitor_view(conn: DbConnection, deployment: str) -> dict[str, Any]:
    stored = await load_monitors(conn, deployment)
    ids = [s.monitor.id for s in stored]
    states = {
        r["monitor_id"]: r
        for r in await conn.fetch(
            "SELECT monitor_id, state, evaluated_through, changed_at FROM monitor_states WHERE monitor_id = ANY($1)",
            ids,
        )
    }
    last_windows = {
        r["monitor_id"]: r
        for r in await conn.fetch(
            """SELECT DISTINCT ON (monitor_id) monitor_id, window_start, window_end, value, sample_count,
                      ci_low, ci_high, enough_samples, violated, note
               FROM monitor_windows WHERE monitor_id = ANY($1) ORDER BY monitor_id, window_end DESC""",
            ids,
        )
    }
    silenced = await silenced_until(conn, ids)
    monitors = []
    for entry in stored:
        state = states.get(entry.monitor.id)
        window = last_windows.get(entry.monitor.id)
        monitors.append({
            **public_monitor(entry.monitor),
            "source": entry.source,
            "state": state["state"] if state else "ok",
            "state_changed_at": state["changed_at"] if state else None,
            "evaluated_through": state["evaluated_through"] if state else None,
            "silenced_until": silenced.get(entry.monitor.id),  # direct destinations held back until then
            "last_window": None if window is None else {
                "start": window["window_start"], "end": window["window_end"], "value": window["value"],
                "sample_count": window["sample_count"], "confidence_interval": [window["ci_low"], window["ci_high"]],
                "enough_samples": window["enough_samples"], "violated": window["violated"],
                "note": window["note"] or None,
            },
        })
    source = "api" if await overridden(conn, deployment) else "file"
    return {"deployment": deployment, "source": source, "monitors": monitors}


async def get_monitors(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        return json_response(await _monitor_view(conn, deployment))


async def put_monitors(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    body = await read_json(request, field="monitors", shape='{"monitors": [...]}')
    async with state.pool.acquire() as conn:
        file = await state.require_deployment(conn, deployment)
        try:
            replaced = await replace_monitors(conn, deployment, body, file)
        except MonitorInputError as exc:
            problems = [{"field": p.field, "message": p.message} for p in exc.problems]
            raise ApiError(400, "invalid_monitor", str(exc), field=exc.field, problems=problems) from None
        warn_inline_webhooks(deployment, replaced.monitors)
        return json_response(await _monitor_view(conn, deployment))


def _alert(row: asyncpg.Record, deliveries: list[asyncpg.Record]) -> dict[str, Any]:
    shown = [{"destination": d["destination"], "kind": d["kind"], "state": d["state"], "attempts": d["attempts"],
              "last_error": d["last_error"]} for d in deliveries]
    legacy = next((d for d in shown if d["kind"] == LEGACY_KIND), None)
    return {
        "id": row["event_id"],
        "monitor_id": row["monitor_id"],
        "deployment": row["deployment"],
        "variant": row["variant"] or None,
        "statistic": row["statistic"],
        "metric": row["metric"] or None,
        "state": row["state"],
        "window_start": row["window_start"],
        "window_end": row["window_end"],
        "value": row["value"],
        "threshold": row["threshold"],
        "sample_count": row["sample_count"],
        "confidence_interval": [row["ci_low"], row["ci_high"]],
        "message": row["message"],
        "created_at": row["created_at"],
        "published": row["published_at"] is not None,
        "silenced": row["silenced"],  # held back from direct destinations by a silence
        "deliveries": shown,
        # The deprecated per-monitor webhook's delivery, where clients read it before destinations.
        "webhook": None if legacy is None else {k: legacy[k] for k in ("state", "attempts", "last_error")},
    }


async def list_alerts(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("deployment", "monitor", "state", "limit", "cursor"))
    deployment = query.pattern("deployment", "deployment")
    monitor = query.pattern("monitor", "monitor")
    wanted = query.choice("state", ("firing", "resolved"), None)
    limit = query.integer("limit", state.section.default_page_size, 1, state.section.max_page_size)
    cursor = decode_cursor("cursor", query.text("cursor"), (int,))
    async with state.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT * FROM alerts
               WHERE ($1::text IS NULL OR deployment = $1) AND ($2::text IS NULL OR monitor_id = $2)
                 AND ($3::text IS NULL OR state = $3) AND ($4::bigint IS NULL OR id < $4)
               ORDER BY id DESC LIMIT $5""",
            deployment, monitor, wanted, cursor[0] if cursor else None, limit + 1,
        )
        firing = await conn.fetch(
            """SELECT s.monitor_id, m.deployment, s.changed_at FROM monitor_states s
               JOIN monitors m USING (monitor_id)
               WHERE s.state = 'firing' AND ($1::text IS NULL OR m.deployment = $1)
                 AND ($2::text IS NULL OR s.monitor_id = $2)
               ORDER BY s.changed_at, s.monitor_id""",
            deployment, monitor,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        deliveries: dict[int, list[asyncpg.Record]] = {}
        for d in await conn.fetch("SELECT * FROM alert_deliveries WHERE alert_id = ANY($1::bigint[]) ORDER BY id",
                                  [r["id"] for r in rows]):
            deliveries.setdefault(d["alert_id"], []).append(d)
    return json_response({
        "alerts": [_alert(r, deliveries.get(r["id"], [])) for r in rows],
        "firing": [{"monitor_id": r["monitor_id"], "deployment": r["deployment"], "since": r["changed_at"]}
                   for r in firing],
        "next_cursor": encode_cursor([rows[-1]["id"]]) if more and rows else None,
    })
