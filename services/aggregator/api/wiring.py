"""Wiring the query API into the aggregator's application.

``setup(app)`` adds the routes, the middlewares (error shape, keys, response counts) and a
cleanup context that opens the stream hub's LISTEN connection. Call it on the application
``create_app`` builds, after its database context is appended (the API uses its pool), and
give the settings the fields in :mod:`services.aggregator.api.settings`.
docs/aggregator-api.md describes every route.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from aiohttp import web

from services.aggregator import dashboard
from services.aggregator.api import monitor_routes, prometheus, routes
from services.aggregator.api.auth import Authenticator
from services.aggregator.api.errors import error_middleware
from services.aggregator.api.openapi import openapi
from services.aggregator.api.settings import admin_key, api_section, read_key
from services.aggregator.api.state import API, ApiState
from services.aggregator.api.stream import MetricsHub
from services.aggregator.api.stream_route import stream_metrics
from services.aggregator.db.pool import ssl_option
from shared.deployments import load_deployment_folder

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


async def _api_context(app: web.Application) -> AsyncIterator[None]:
    # Imported here: app.py imports this package to wire it in.
    from services.aggregator.app import POOL, SETTINGS

    settings = app[SETTINGS]
    section = api_section(settings)
    folder = settings.deployments_dir
    # Deployments whose file does not load are left out (sampling_policy logs their problems).
    deployments = load_deployment_folder(folder, check_flow=False).deployments if folder.is_dir() else {}
    read, admin = read_key(settings), admin_key(settings)
    if read is None:
        log.warning("PROMPTPULSE_API_READ_KEY is not set: the /v1 query API answers 503")
    dsn, ssl = settings.database_url.get_secret_value(), ssl_option(settings)

    async def connect() -> asyncpg.Connection:
        # Named, so an operator (or a test) can tell the listening session apart in pg_stat_activity.
        return await asyncpg.connect(dsn, ssl=ssl, timeout=10,
                                     server_settings={"application_name": LISTENER_APPLICATION_NAME})

    hub = MetricsHub(connect, app[POOL], snapshot_minutes=section.sse_snapshot_minutes)
    app[API] = ApiState(
        settings=settings,
        section=section,
        pool=app[POOL],
        deployments=deployments,
        auth=Authenticator(read, admin, ttl_seconds=section.session_ttl_seconds, secure=section.cookie_secure,
                           pool=app[POOL]),
        hub=hub,
    )
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


async def _end_streams(app: web.Application) -> None:
    # Runs before aiohttp waits for handlers, so open SSE streams end instead of holding shutdown.
    if API in app:
        app[API].hub.close_subscribers()


async def _create_session(request: web.Request) -> web.Response:
    return await request.app[API].auth.create_session(request)


async def _delete_session(request: web.Request) -> web.Response:
    return await request.app[API].auth.delete_session(request)


def setup(app: web.Application) -> None:
    """Add the query API to the aggregator's application (before it starts)."""
    app.middlewares.append(_count_responses)
    app.middlewares.append(error_middleware)
    app.middlewares.append(_authenticate)
    app.cleanup_ctx.append(_api_context)
    app.on_shutdown.append(_end_streams)
    router = app.router
    router.add_post("/v1/session", _create_session)
    router.add_delete("/v1/session", _delete_session)
    router.add_get("/v1/deployments", routes.list_deployments)
    router.add_get("/v1/deployments/{deployment}/metrics", routes.deployment_metrics)
    router.add_get("/v1/deployments/{deployment}/requests", routes.deployment_requests)
    router.add_get("/v1/deployments/{deployment}/compare", routes.compare_variants)
    router.add_get("/v1/deployments/{deployment}/monitors", monitor_routes.get_monitors)
    router.add_put("/v1/deployments/{deployment}/monitors", monitor_routes.put_monitors)
    router.add_get("/v1/requests/{request_id}", routes.one_request)
    router.add_get("/v1/traces/{trace_id}", routes.trace)
    router.add_get("/v1/alerts", monitor_routes.list_alerts)
    router.add_get("/v1/runs/{run_id}", routes.batch_run)
    router.add_get("/v1/stream/metrics", stream_metrics)
    prometheus.setup(app)  # GET /metrics
    router.add_get("/openapi.json", openapi)
    dashboard.setup(app)  # the page (/dashboard/) and its violations route

