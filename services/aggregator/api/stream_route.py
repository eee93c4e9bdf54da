"""``GET /v1/stream/metrics?deployment=``: server-sent events from the process's MetricsHub.

Events: ``snapshot`` first (the last minutes' figures), then ``metrics`` after every committed
batch that changed the deployment (the changed minutes, to be merged by ``start``), and a new
``snapshot`` after the hub lost and re-made its Postgres connection. An idle stream gets a
comment line every ``sse_heartbeat_seconds``. A stream let in by a session cookie checks the
session as often, and ends once it has expired or been ended (on any replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiohttp import web

from services.aggregator.api.auth import SESSION
from services.aggregator.api.errors import DATABASE_AWAY, ApiError, dumps
from services.aggregator.api.params import Query, checked
from services.aggregator.api.state import API
from services.aggregator.api.stream import CLOSE, StreamEvent
from shared import sse

log = logging.getLogger(__name__)

KEEPALIVE = sse.comment("keepalive")


def frame(event: StreamEvent) -> bytes:
    return sse.frame(dumps(event.data), event=event.name, id=event.id)


async def stream_metrics(request: web.Request) -> web.StreamResponse:
    state = request.app[API]
    query = Query(request, ("deployment",))
    deployment = checked("deployment", query.required("deployment"), "deployment")
    hub = state.hub
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
    if hub.subscriber_count >= state.section.sse_max_subscribers:
        raise ApiError(503, "too_many_streams", "too many open streams on this replica; retry later",
                       headers={"Retry-After": "10"})
    # Subscribe before reading the snapshot, so a change committed in between is not missed.
    subscriber = hub.subscribe(deployment)
    try:
        snapshot = await hub.snapshot(deployment)
        response = web.StreamResponse(headers={"Content-Type": sse.MEDIA_TYPE, **sse.NO_BUFFERING})
        await response.prepare(request)
        await response.write(sse.retry(3000) + frame(snapshot))
        heartbeat = state.section.sse_heartbeat_seconds
        session = request.get(SESSION)
        loop = asyncio.get_running_loop()
        checked_at = loop.time()
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    event = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
                except TimeoutError:
                    event = None
                if session is not None and loop.time() - checked_at >= heartbeat:
                    checked_at = loop.time()
                    try:
                        valid = await state.auth.still_valid(session)
                    except (asyncpg.PostgresError, *DATABASE_AWAY) as exc:
                        # The response has begun: no error answer is possible, so the stream ends
                        # (the browser's EventSource reconnects, and is checked afresh).
                        log.warning("live stream ended: its session could not be re-checked: %r", exc)
                        break
                    if not valid:
                        break
                if event is None:
                    await response.write(KEEPALIVE)
                    continue
                if event is CLOSE:
                    break
                await response.write(frame(event))
        return response
    finally:
        hub.unsubscribe(subscriber)
