"""Direct alert destinations in the query API (docs/alerting.md):

- ``GET /v1/destinations?deployment=``: the destinations the deployment files configure, with the
  NAMES of their environment variables and whether this aggregator has them set (never a value);
- ``GET /v1/deliveries?deployment=&destination=&monitor=&limit=&cursor=``: the delivery log,
  newest first, one row per attempt;
- ``POST /v1/deployments/{d}/destinations/{name}/test`` (admin key): a test notification sent
  from the aggregator, whose environment holds the credentials, through the same code as alerts.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from services.aggregator.api.errors import json_response, not_found
from services.aggregator.api.params import Query, checked, decode_cursor, encode_cursor
from services.aggregator.api.state import API
from services.aggregator.monitors.destinations.dispatcher import send_test
from services.aggregator.monitors.destinations.kinds import target_of


def _destination(deployment: str, destination: Any) -> dict[str, Any]:
    missing = destination.missing(os.environ)
    entry = {"deployment": deployment, "name": destination.name, "kind": destination.kind,
             "variables": destination.secret_names(), "ready": not missing, "missing_variables": missing}
    if destination.kind == "pagerduty":
        entry["events_url"] = destination.events_url
    return entry


async def list_destinations(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("deployment",))
    deployment = query.pattern("deployment", "deployment")
    if deployment is not None and deployment not in state.deployments:
        raise not_found(f"no deployment file named {deployment!r}", "deployment")
    found = [_destination(name, d) for name, dep in sorted(state.deployments.items())
             if deployment in (None, name) for d in dep.destinations]
    return json_response({"destinations": found})


def _delivery(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "at": row["at"], "deployment": row["deployment"], "destination": row["destination"], "kind": row["kind"],
        "monitor_id": row["monitor_id"], "alert_id": row["alert_event_id"], "alert_state": row["alert_state"],
        "test": row["monitor_id"] is None, "attempt": row["attempt"], "outcome": row["outcome"],
        "http_status": row["http_status"], "error": row["error"],
    }


async def list_deliveries(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("deployment", "destination", "monitor", "limit", "cursor"))
    deployment = query.pattern("deployment", "deployment")
    destination = query.pattern("destination", "destination")
    monitor = query.pattern("monitor", "monitor")
    limit = query.integer("limit", state.section.default_page_size, 1, state.section.max_page_size)
    cursor = decode_cursor("cursor", query.text("cursor"), (int,))
    async with state.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT * FROM delivery_log
               WHERE ($1::text IS NULL OR deployment = $1) AND ($2::text IS NULL OR destination = $2)
                 AND ($3::text IS NULL OR monitor_id = $3) AND ($4::bigint IS NULL OR id < $4)
               ORDER BY id DESC LIMIT $5""",
            deployment, destination, monitor, cursor[0] if cursor else None, limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({
        "deliveries": [_delivery(r) for r in rows],
        "next_cursor": encode_cursor([rows[-1]["id"]]) if more and rows else None,
    })


async def send_test_notification(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    name = checked("destination", request.match_info["destination"], "destination")
    file = state.deployments.get(deployment)
    if file is None:
        raise not_found(f"no deployment file named {deployment!r}", "deployment")
    destination = next((d for d in file.destinations if d.name == name), None)
    if destination is None:
        raise not_found(f"deployment {deployment!r} has no destination named {name!r}", "destination")
    section = state.settings.aggregator.monitors
    async with aiohttp.ClientSession() as session:
        results = await send_test(state.pool, session, section, deployment, target_of(destination),
                                  state.settings.aggregator.public_url)
    return json_response({
        "deployment": deployment, "destination": name, "kind": destination.kind,
        "delivered": all(result.delivered for _, result in results),
        "attempts": [{"alert_id": notice.event_id, "alert_state": notice.state, "http_status": result.http_status,
                      "delivered": result.delivered, "error": result.error} for notice, result in results],
    })
