"""The gateway's aiohttp application: deployed flows behind authenticated, streaming endpoints.

Resources live in cleanup contexts, opened in this order and closed in reverse, so shutdown
goes: stop taking requests and drain those in flight (aiohttp, before any cleanup), stop the
reload watchers, flush the event publisher (to Kafka, or to the spool), close the LLM clients
and then their one HTTP session, flush telemetry last so the spans of all that work are exported too.

    telemetry -> LLM session -> deployments (flows, executors, LLM endpoints) -> event publisher -> reloads

Serve it with :func:`start_gateway` (tests, bench) or :func:`run_gateway` (the CLI): both turn
on aiohttp's handler cancellation, which is how a client that disconnects mid-stream cancels
its LLM call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider

from services.gateway.appkeys import (
    DEPLOYMENTS,
    LLM_SESSION,
    METRICS,
    PLAUSIBILITY,
    PUBLISHER,
    RATE_LIMITER,
    SETTINGS,
    SPAN_EXPORTER,
    TRACER,
    TRACER_PROVIDER,
)
from services.gateway.events import EventPublisher
from services.gateway.otlp import route as otlp_route
from services.gateway.ratelimit import RateLimiter
from services.gateway.registry import Deployments, Registry
from services.gateway.routes import admin, feedback, health, openapi, pf_score, score
from services.gateway.routes.errors import json_errors
from services.gateway.routes.metrics import GatewayMetrics
from services.gateway.routes.proxy import add_proxy_routes
from services.gateway.runtime import Runtime
from services.gateway.settings import GatewaySettings
from services.gateway.tracing import add_response_headers, server_span
from services.gateway.worker_metrics import LOCAL_PATH
from services.gateway.workers import worker_socket, worker_spool
from shared import gctuning
from shared.demo_key import LOCAL_KEYS, ensure_demo_key
from shared.deployments import DeploymentConfigError
from shared.logs import quiet_malformed_requests
from shared.plausibility import Plausibility
from shared.prometheus import PROMETHEUS
from shared.telemetry import LoopKafkaSpanExporter, setup_telemetry, shutdown_telemetry
from shared.topics import Topics
from shared.upstream import upstream_session

log = logging.getLogger(__name__)

# One entry of app.cleanup_ctx: set up before its yield, torn down after it.
CleanupContext = Callable[[web.Application], AsyncIterator[None]]

TRACER_NAME = "promptpulse.gateway"


def create_app(
    settings: GatewaySettings,
    *,
    tracer_provider: TracerProvider | None = None,
    handle_sighup: bool = True,
) -> web.Application:
    """The gateway app. ``tracer_provider``: use this one (tests) instead of setting up telemetry
    from the settings; ``handle_sighup``: reload deployments on SIGHUP (one app per process)."""
    section = settings.gateway
    quiet_malformed_requests()  # one rate-limited line per garbled request, not a traceback
    # client_max_size bounds chunked bodies too; the handlers check Content-Length first.
    app = web.Application(client_max_size=section.max_body_bytes,
                          middlewares=[server_span, _count_requests, json_errors])
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics()
    app[PROMETHEUS] = health.service_metrics(app)
    app[RATE_LIMITER] = RateLimiter()
    app[PLAUSIBILITY] = Plausibility(settings.plausibility)
    app.cleanup_ctx.append(_telemetry(tracer_provider))
    app.cleanup_ctx.append(_llm_session)
    app.cleanup_ctx.append(_deployments)
    app.cleanup_ctx.append(_publisher)
    app.cleanup_ctx.append(_reloads(handle_sighup))
    app.on_response_prepare.append(add_response_headers)
    add_routes(app)
    return app


def _started_log(section: Any, index: int) -> Any:
    async def started(app: web.Application) -> None:
        gctuning.tune_for_throughput()
        log.info("gateway worker serving", extra={"url": f"http://{section.host}:{section.port}", "worker": index})

    return started


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/deployments/{deployment}/score", score.score)
    app.router.add_post("/v1/deployments/{deployment}/feedback", feedback.feedback)
    app.router.add_post("/score", pf_score.score)  # prompt flow's client contract (pf flow serve, Azure ML)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get(LOCAL_PATH, health.worker_metrics)  # one worker's own series (--workers)
    app.router.add_get("/openapi.json", openapi.openapi)
    app.router.add_get("/admin/deployments", admin.admin_deployments)
    app.router.add_post(otlp_route.PATH, otlp_route.traces)  # OTLP/HTTP trace ingest (docs/otlp.md)
    add_proxy_routes(app)  # the OpenAI-compatible routes of proxy deployments (docs/proxy.md)


_COUNTED = {"score", "feedback", "traces"}


@web.middleware
async def _count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    # Between the span and the JSON errors: every refusal is a response by the time it gets here.
    endpoint = request.path.rsplit("/", 1)[-1] if request.path.startswith("/v1/deployments/") else None
    if request.path == "/score":
        endpoint = "score"  # same work as the per-deployment route, counted with it
    elif request.path == "/v1/traces":
        endpoint = "traces"
    if endpoint not in _COUNTED:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = 499  # nginx's "client closed request"
        raise
    finally:
        request.app[METRICS].http_requests[(endpoint, status)] += 1


def _telemetry(provider: TracerProvider | None) -> CleanupContext:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if provider is not None:
            app[TRACER] = provider.get_tracer(TRACER_NAME)
            app[TRACER_PROVIDER] = provider
            yield
            return
        # Spans exported from this loop, between requests: no export thread for a request to
        # wait for (shared/telemetry/loop_exporter.py; docs/gateway.md, "Overhead").
        telemetry = setup_telemetry("gateway", app[SETTINGS], loop=asyncio.get_running_loop())
        app[TRACER] = telemetry.tracer(TRACER_NAME)
        app[TRACER_PROVIDER] = telemetry.provider
        if isinstance(telemetry.kafka_exporter, LoopKafkaSpanExporter):  # its counts go on /metrics
            app[SPAN_EXPORTER] = telemetry.kafka_exporter
        try:
            yield
        finally:  # from a thread: the loop exporter's flush runs on this loop meanwhile
            await asyncio.to_thread(shutdown_telemetry, telemetry)

    return context


async def _deployments(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    for name in LOCAL_KEYS if settings.gateway.provision_demo_key else ():
        try:
            demo = ensure_demo_key(settings.deployments_dir, name=name)
        except DeploymentConfigError as exc:
            # A broken demo file makes the demo unavailable (the load reports it), not the gateway.
            log.error("the %s deployment's key was not provisioned: %s", name, exc)
            demo = None
        if demo is not None and demo.created:
            log.info("generated the %s deployment's API key", name, extra={"key_file": str(demo.key_file)})
    limiter = app[RATE_LIMITER]

    def forget_revoked(registry: Registry) -> None:
        runtimes: list[Runtime] = [*registry.deployments.values(), *registry.proxies.values()]
        limiter.forget_except({(rt.name, key.id) for rt in runtimes for key in rt.deployment.api_keys})

    deployments = Deployments(settings, tracer_provider=app[TRACER_PROVIDER], on_reload=forget_revoked,
                              session=app[LLM_SESSION])
    await deployments.load()
    app[DEPLOYMENTS] = deployments
    log.info("deployments loaded", extra={"deployments": deployments.current.serving,
                                          "unavailable": sorted(deployments.current.failures)})
    try:
        yield
    finally:
        await deployments.close()


async def _llm_session(app: web.Application) -> AsyncIterator[None]:
    # One pool for every LLM call of the process, proxy deployments' and flows' alike; opened
    # before the deployments that call through it and closed after them.
    session = upstream_session()
    app[LLM_SESSION] = session
    try:
        yield
    finally:
        await session.close()


async def _publisher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    publisher = EventPublisher(settings, Topics.from_settings(settings), settings.gateway.publisher,
                               client_id="promptpulse-gateway")
    await publisher.start()
    app[PUBLISHER] = publisher
    try:
        yield
    finally:
        await publisher.close()


def _reloads(handle_sighup: bool) -> CleanupContext:
    async def context(app: web.Application) -> AsyncIterator[None]:
        deployments = app[DEPLOYMENTS]
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[object]] = set()

        def on_sighup() -> None:
            task = loop.create_task(deployments.reload("SIGHUP"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        if handle_sighup:
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        interval = app[SETTINGS].gateway.keys_reload_interval_seconds
        if interval > 0:
            tasks.add(loop.create_task(deployments.watch_key_files(interval), name="gateway-key-files"))
        try:
            yield
        finally:
            if handle_sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return context


async def start_gateway(app: web.Application, host: str | None = None, port: int | None = None) -> web.AppRunner:
    """Start serving ``app``; returns the runner (``runner.addresses``; ``await runner.cleanup()``)."""
    section = app[SETTINGS].gateway
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=section.shutdown_timeout_seconds)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host if host is not None else section.host,
                           port if port is not None else section.port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def as_worker(settings: GatewaySettings, index: int) -> GatewaySettings:
    """A worker's settings: its own spool folder under the configured one (services/gateway/workers.py)."""
    section = settings.gateway
    publisher = section.publisher.model_copy(update={"spool_dir": worker_spool(section.publisher.spool_dir, index)})
    return settings.model_copy(update={"gateway": section.model_copy(update={"publisher": publisher})})


async def _serve_worker(app: web.Application, settings: GatewaySettings, socket: Path) -> None:
    """One worker: the public port shared with the others (SO_REUSEPORT), plus a private Unix
    socket the other workers read its /metrics/worker from."""
    section = settings.gateway
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=section.shutdown_timeout_seconds)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, section.host, section.port, reuse_port=True).start()
        # Private by its folder (the spool root, 0700, made so by the supervisor).
        await web.UnixSite(runner, str(socket)).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def run_gateway(settings: GatewaySettings) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (what ``promptpulse gateway`` calls)."""
    section = settings.gateway
    index = section.worker_index
    if index is not None:
        root = section.publisher.spool_dir
        settings = as_worker(settings, index)
        app = create_app(settings)
        app.on_startup.append(_started_log(section, index))
        worker_socket(root, index).unlink(missing_ok=True)  # a crashed predecessor's
        asyncio.run(_serve_worker(app, settings, worker_socket(root, index)))
        return
    app = create_app(settings)

    async def started(app: web.Application) -> None:  # after every cleanup context opened
        gctuning.tune_for_throughput()
        log.info("gateway started", extra={"url": f"http://{section.host}:{section.port}"})

    app.on_startup.append(started)
    web.run_app(app, host=section.host, port=section.port, print=None, access_log=None,
                handler_cancellation=True, shutdown_timeout=section.shutdown_timeout_seconds)
