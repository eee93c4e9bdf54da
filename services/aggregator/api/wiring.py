"""The query API as an aiohttp sub-application mounted at ``/v1`` by the aggregator's app.py.

``create_api()`` builds it: the routes, the middlewares (response counts, error shape, keys),
which apply to its routes only. ``serving(api, settings, pool)`` is its lifetime, which app.py
opens in its one ordered list of resources: it fills the sub-application's key ``API`` and runs
the stream hub's LISTEN connection. docs/aggregator-api.md describes every route.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from services.aggregator.api import (
    agreement_routes,
    destination_routes,
    monitor_routes,
    quality_metrics,
    rejudge_routes,
    routes,
    silence_routes,
)
from services.aggregator.api.auth import Authenticator
from services.aggregator.api.errors import error_middleware
from services.aggregator.api.settings import admin_key, api_section, read_key
from services.aggregator.api.state import API, ApiState
from services.aggregator.api.stream import MetricsHub
from services.aggregator.api.stream_route import stream_metrics
from services.aggregator.dashboard.violations import list_violations
from services.aggregator.db.pool import ssl_option
from services.aggregator.rejudge.kafka_side import RejudgeLinks
from services.aggregator.settings import AggregatorSettings
from shared.deployments import Deployment

log = logging.getLogger(__name__)

LISTENER_APPLICATION_NAME = "promptpulse-aggregator-listener"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if API in request.app:
            request.app[API].responses[(route, status)] += 1


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await request.app[API].auth.middleware(request, handler)


@contextlib.asynccontextmanager
async def serving(
    api: web.Application, settings: AggregatorSettings, pool: asyncpg.Pool, deployments: dict[str, Deployment]
) -> AsyncIterator[ApiState]:
    """The query API's state, built once and kept in the sub-application ``api`` (its key
    ``API``) while the block runs: keys, ``deployments`` (those that loaded at start-up), the
    stream hub's LISTEN connection. The aggregator's app.py opens it after the database (it
    uses the pool)."""
    section = api_section(settings)
    read, admin = read_key(settings), admin_key(settings)
    if read is None:
        log.warning("PROMPTPULSE_API_READ_KEY is not set: the /v1 query API answers 503")
    dsn, ssl = settings.database_url.get_secret_value(), ssl_option(settings)

    async def connect() -> asyncpg.Connection:
        # Named, so an operator (or a test) can tell the listening session apart in pg_stat_activity.
        return await asyncpg.connect(dsn, ssl=ssl, timeout=10,
                                     server_settings={"application_name": LISTENER_APPLICATION_NAME})

    hub = MetricsHub(connect, pool, snapshot_minutes=section.sse_snapshot_minutes, deployments=deployments)
    state = ApiState(
        settings=settings,
        section=section,
        pool=pool,
        deployments=deployments,
        auth=Authenticator(read, admin, ttl_seconds=section.session_ttl_seconds, secure=section.cookie_secure,
                           pool=pool),
        hub=hub,
        rejudge=RejudgeLinks(settings, pool),
    )
    api[API] = state
    await hub.start()
    await state.rejudge.start()  # type: ignore[union-attr]  # set just above
    try:
        yield state
    finally:
        await state.rejudge.stop()  # type: ignore[union-attr]
        await hub.stop()
        log.info("shutdown: query API streams ended and its listener closed")


async def _end_streams(app: web.Application) -> None:
    # Runs before aiohttp waits for handlers, so open SSE streams end instead of holding shutdown.
    if API in app:
        app[API].hub.close_subscribers()


async def _create_session(request: web.Request) -> web.Response:
    return await request.app[API].auth.create_session(request)


async def _delete_session(request: web.Request) -> web.Response:
    return await request.app[API].auth.delete_session(request)


def create_api() -> web.Application:
    """The query API as a sub-application, to mount at ``/v1``: its routes, its middlewares
    (which apply to its routes only) and its key ``API``, filled by :func:`serving`."""
    api = web.Application(middlewares=[_count_responses, error_middleware, _authenticate])
    api.on_shutdown.append(_end_streams)
    router = api.router
    router.add_post("/session", _create_session)
    router.add_delete("/session", _delete_session)
    router.add_get("/deployments", routes.list_deployments)
    router.add_get("/deployments/{deployment}/metrics", routes.deployment_metrics)
    router.add_get("/deployments/{deployment}/requests", routes.deployment_requests)
    router.add_get("/deployments/{deployment}/compare", routes.compare_variants)
    router.add_get("/deployments/{deployment}/agreement", agreement_routes.deployment_agreement)
    router.add_get("/deployments/{deployment}/monitors", monitor_routes.get_monitors)
    router.add_put("/deployments/{deployment}/monitors", monitor_routes.put_monitors)
    silence_routes.setup(router)
    router.add_get("/requests/{request_id}", routes.one_request)
    router.add_get("/traces/{trace_id}", routes.trace)
    router.add_get("/alerts", monitor_routes.list_alerts)
    router.add_get("/destinations", destination_routes.list_destinations)
    router.add_get("/deliveries", destination_routes.list_deliveries)
    router.add_post("/deployments/{deployment}/destinations/{destination}/test",
                    destination_routes.send_test_notification)
    router.add_get("/runs/{run_id}", routes.batch_run)
    router.add_post("/deployments/{deployment}/rejudges", rejudge_routes.create_rejudge)
    router.add_get("/deployments/{deployment}/rejudges", rejudge_routes.list_rejudges)
    router.add_get("/rejudges/{rejudge_id}", rejudge_routes.one_rejudge)
    router.add_get("/stream/metrics", stream_metrics)
    # The dashboard's own data route: under /v1, so the API's keys guard it.
    router.add_get("/deployments/{deployment}/violations", list_violations)
    quality_metrics.setup(api)  # GET /prometheus/quality: Prometheus scrapes it with the read key
    return api
