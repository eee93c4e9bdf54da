"""Silence routes (services/aggregator/monitors/silences.py says what a silence does):

- ``GET /v1/deployments/{d}/silences`` (read key): newest first, each with its state
  (active, expired, ended); ``monitor``, ``state`` and ``limit`` narrow it.
- ``POST /v1/deployments/{d}/monitors/{monitor_id}/silences`` (admin key):
  ``{"duration": "2h", "reason": "...", "created_by": "..."}`` starts one now; 201.
- ``DELETE /v1/deployments/{d}/monitors/{monitor_id}/silences`` (admin key, ``by`` optional):
  ends the monitor's silences in force now; the records stay, marked ended.

The admin-only writes are the API's middleware's (auth.py: any method but GET/HEAD needs it).
"""

from __future__ import annotations

from aiohttp import web

from services.aggregator.api.body import read_json
from services.aggregator.api.errors import ApiError, bad_parameter, json_response, not_found
from services.aggregator.api.params import Query, checked
from services.aggregator.api.state import API, ApiState
from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.silences import (
    MAX_NAME_CHARS,
    STATES,
    SilenceInputError,
    create_silence,
    end_silences,
    list_silences,
    parse_silence,
    plain_text,
    public_silence,
)

SILENCE_SHAPE = '{"duration": "2h", "reason": "...", "created_by": "..."}'


def _path(request: web.Request) -> tuple[str, str]:
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    return deployment, checked("monitor_id", request.match_info["monitor_id"], "monitor")


async def _require_monitor(state: ApiState, conn: DbConnection, deployment: str, monitor_id: str) -> None:
    await state.require_deployment(conn, deployment)
    if not await conn.fetchval("SELECT true FROM monitors WHERE deployment = $1 AND monitor_id = $2",
                               deployment, monitor_id):
        raise not_found(f"deployment {deployment!r} has no monitor {monitor_id!r}", "monitor_id")


async def list_route(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("monitor", "state", "limit"))
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    monitor = query.pattern("monitor", "monitor")
    wanted = query.choice("state", STATES, None)
    limit = query.integer("limit", state.section.default_page_size, 1, state.section.max_page_size)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        rows = await list_silences(conn, deployment, monitor, wanted, limit)
    return json_response({"deployment": deployment, "silences": [public_silence(r) for r in rows]})


async def create_route(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    deployment, monitor_id = _path(request)
    body = await read_json(request, field="body", shape=SILENCE_SHAPE)
    try:
        wanted = parse_silence(body)
    except SilenceInputError as exc:
        raise ApiError(400, "invalid_silence", str(exc), field=exc.field) from None
    async with state.pool.acquire() as conn:
        await _require_monitor(state, conn, deployment, monitor_id)
        row = await create_silence(conn, deployment, monitor_id, wanted)
    return json_response(public_silence(row), status=201)


async def end_route(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("by",))
    deployment, monitor_id = _path(request)
    try:
        ended_by = plain_text("by", query.text("by"), MAX_NAME_CHARS, required=False)
    except SilenceInputError as exc:
        raise bad_parameter("by", str(exc).removeprefix("by: ")) from None
    async with state.pool.acquire() as conn:
        await _require_monitor(state, conn, deployment, monitor_id)
        rows = await end_silences(conn, deployment, monitor_id, ended_by)
    return json_response({"deployment": deployment, "monitor_id": monitor_id,
                          "ended": [public_silence(r) for r in rows]})


def setup(router: web.UrlDispatcher) -> None:
    router.add_get("/deployments/{deployment}/silences", list_route)
    router.add_post("/deployments/{deployment}/monitors/{monitor_id}/silences", create_route)
    router.add_delete("/deployments/{deployment}/monitors/{monitor_id}/silences", end_route)
