"""The aggregator's aiohttp application: every resource's lifetime, in one ordered list.

``create_app`` opens them in the order of ``RESOURCES`` and aiohttp closes them in reverse, which
is the shutdown order the project asks for (test_shutdown_stops_intake_drains_flushes_then_closes
in tests/integration/test_aggregator_shutdown.py checks it). The HTTP listener stops taking
requests first (aiohttp), then (the first resource, the deployments folder parsed once for
all the others, has nothing to close):

1. the query API's streams end and its LISTEN connection closes;
2. stop intake: the stall watch, the OTLP assembly (its pass in flight ends, its producer is
   flushed), then the ingest, which stops fetching and lets the batch in flight commit (its
   offsets in the same transaction);
3. monitor evaluation finishes its pass in flight; the alerts producer is flushed and closed,
   the webhooks' session closed;
4. retention stops; the pool closes; telemetry is flushed last by the caller (__main__).

The query API is a sub-application mounted at ``/v1`` (api/wiring.py) with its own key; the
keys of this application are in appkeys.py. See docs/aggregator.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web
from aiokafka.errors import KafkaError

from services.aggregator import dashboard
from services.aggregator.api import prometheus
from services.aggregator.api import wiring as query_api
from services.aggregator.api.openapi import openapi
from services.aggregator.appkeys import (
    DEPLOYMENTS,
    INGESTOR,
    MONITORS,
    PARTITIONS,
    POOL,
    QUERY_API,
    SETTINGS,
    STALLS,
)
from services.aggregator.db.migrate import migrate
from services.aggregator.db.pool import create_pool
from services.aggregator.ingest.consumer import Ingestor
from services.aggregator.ingest.decode import SamplingPolicy
from services.aggregator.ingest.stall import IntakeWatch
from services.aggregator.monitors.service import running as monitors_running
from services.aggregator.otlp.assembler import running as otlp_running
from services.aggregator.retention import PartitionCache, retention_loop
from services.aggregator.rollups.scales import MetricScale, scale_lookup
from services.aggregator.rollups.version_scales import read_every_version, record_versions
from services.aggregator.settings import AggregatorSettings
from shared import gctuning
from shared.deployments import (
    Deployment,
    DeploymentConfigError,
    DeploymentFolder,
    load_deployment_folder,
)
from shared.plausibility import Plausibility
from shared.topics import TopicError, ensure_topics

log = logging.getLogger(__name__)

__all__ = ["INGESTOR", "MONITORS", "POOL", "SETTINGS", "STALLS", "create_app", "healthz", "readyz"]

_PRICES_SQL = """
INSERT INTO model_prices (model, prompt_per_1k, completion_per_1k, currency, updated_at)
SELECT *, now() FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::text[])
ON CONFLICT (model) DO UPDATE
SET prompt_per_1k = EXCLUDED.prompt_per_1k, completion_per_1k = EXCLUDED.completion_per_1k,
    currency = EXCLUDED.currency, updated_at = EXCLUDED.updated_at
"""


def read_deployments(settings: AggregatorSettings) -> DeploymentFolder | None:
    """The deployments folder, parsed once at start-up and handed to every part that reads it
    (sampling, evaluator scales, file monitors, the query API); None when it does not exist.

    A missing folder is not fatal: the default sampling rate applies and file monitors stay as
    stored. A deployment whose file does not load is logged here, once.
    """
    try:
        folder = load_deployment_folder(settings.deployments_dir, check_flow=False)
    except DeploymentConfigError:
        log.warning(
            "deployments folder %s not found: every deployment samples at %.0f%%, file monitors left as stored",
            settings.deployments_dir,
            settings.aggregator.default_sampling_rate * 100,
        )
        return None
    folder.log_problems(log, "no payloads of it are kept and its file monitors stay as stored")
    return folder


def sampling_policy(settings: AggregatorSettings, folder: DeploymentFolder | None) -> SamplingPolicy:
    """Each deployment's sampling rate from the deployments folder (the default rate for all
    when there is none). A deployment whose file does not load keeps no payloads (rate 0) until
    it loads again, so the aggregator never keeps payloads on a misread configuration; the
    other deployments are unaffected."""
    if folder is None:
        return SamplingPolicy({}, settings.aggregator.default_sampling_rate)
    rates = {name: d.evaluation.sampling_rate if d.evaluation is not None else 0.0
             for name, d in folder.deployments.items()}
    return SamplingPolicy(rates | dict.fromkeys(folder.broken_names, 0.0), settings.aggregator.default_sampling_rate)


def loaded_deployments(folder: DeploymentFolder | None) -> dict[str, Deployment]:
    """The deployments that loaded ({} when there is no folder)."""
    return folder.deployments if folder is not None else {}


def evaluator_plausibility(settings: AggregatorSettings, deployments: Mapping[str, Deployment],
                           recorded: Mapping[tuple[str, str, str], MetricScale] | None = None) -> Plausibility:
    """The plausibility checks with each evaluator version's scale (the loaded files', and
    ``recorded`` for older versions): a value off its version's scale is dead-lettered as
    implausible-value (rollups/scales.py). A folder that does not load leaves only the built-in
    and unknown-scale checks."""
    return Plausibility(settings.plausibility, scale_of=scale_lookup(deployments, recorded))


async def _deployments(app: web.Application) -> AsyncIterator[None]:
    app[DEPLOYMENTS] = read_deployments(app[SETTINGS])
    yield


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    applied = await migrate(settings.database_url.get_secret_value())
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    pool = await create_pool(settings)
    prices = settings.aggregator.prices
    if prices:
        models = sorted(prices)
        await pool.execute(
            _PRICES_SQL,
            models,
            [prices[m].prompt_per_1k for m in models],
            [prices[m].completion_per_1k for m in models],
            [prices[m].currency for m in models],
        )
    # Each evaluator version the files describe keeps the scale it was first seen with, so its
    # figures are read on it after the file's scale changes (rollups/version_scales.py).
    async with pool.acquire() as conn:
        if recorded := await record_versions(conn, loaded_deployments(app[DEPLOYMENTS])):
            log.info("recorded the scale of %d new evaluator versions", recorded)
    app[POOL] = pool
    try:
        yield
    finally:
        await pool.close()
        log.info("shutdown: pool closed")


async def _retention(app: web.Application) -> AsyncIterator[None]:
    section = app[SETTINGS].aggregator
    cache = PartitionCache()
    app[PARTITIONS] = cache
    task = asyncio.create_task(
        retention_loop(
            app[POOL],
            retention_days=section.retention_days,
            ahead_days=section.partitions_ahead_days,
            interval_seconds=section.retention_interval_seconds,
            cache=cache,
        ),
        name="aggregator-retention",
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _ingestion(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with app[POOL].acquire() as conn:
        recorded = await read_every_version(conn)
    folder = app[DEPLOYMENTS]
    ingestor = Ingestor(settings, app[POOL], sampling_policy(settings, folder), partitions=app[PARTITIONS],
                        plausibility=evaluator_plausibility(settings, loaded_deployments(folder), recorded))
    try:
        await ensure_topics(settings, ingestor.topics)
    except (TopicError, KafkaError, OSError) as exc:  # no permission, broker away: not fatal here
        log.warning("could not ensure the aggregator's topics exist: %s", exc)
    app[INGESTOR] = ingestor
    gctuning.tune_for_throughput()
    task = asyncio.create_task(ingestor.run(), name="aggregator-ingest")
    task.add_done_callback(_report_ingest_end)
    yield
    ingestor.stop()
    log.info("shutdown: intake stopped; the batch in flight commits")
    wait = settings.aggregator.shutdown_wait_seconds + 5
    try:
        await asyncio.wait_for(asyncio.shield(task), wait)
    except TimeoutError:
        log.warning("ingestion did not stop within %.0fs; cancelling it", wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:
        pass  # already reported by _report_ingest_end
    log.info("shutdown: ingest drained; committed %d batches, %d records", ingestor.stats.batches,
             ingestor.stats.records)


async def _stall_watch(app: web.Application) -> AsyncIterator[None]:
    """Watches the ingest for partitions that take nothing in while records wait (stall
    detection, docs/aggregator.md); /healthz turns 503 while one does."""
    watch = IntakeWatch(app[SETTINGS], app[INGESTOR])
    app[STALLS] = watch
    task = asyncio.create_task(watch.run(), name="aggregator-stall-check")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("shutdown: stall watch stopped")


async def _monitors(app: web.Application) -> AsyncIterator[None]:
    async with monitors_running(app[SETTINGS], app[POOL], app[DEPLOYMENTS]) as service:
        app[MONITORS] = service
        yield


async def _otlp_assembly(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    section = settings.aggregator
    policy = sampling_policy(settings, app[DEPLOYMENTS])
    async with otlp_running(settings, app[POOL], policy.rate, interval=section.otlp_assemble_interval_seconds,
                            settle_seconds=section.otlp_settle_seconds):
        yield
    log.info("shutdown: OTLP assembly stopped")


async def _query_api(app: web.Application) -> AsyncIterator[None]:
    async with query_api.serving(app[QUERY_API], app[SETTINGS], app[POOL], loaded_deployments(app[DEPLOYMENTS])):
        yield


# Opened in this order, closed in reverse (the module docstring says why this order).
RESOURCES = (_deployments, _database, _retention, _monitors, _ingestion, _otlp_assembly, _stall_watch, _query_api)


def _report_ingest_end(task: asyncio.Task) -> None:
    # A bug that ends the loop must be loud at once, not at shutdown; /readyz turns 503 too.
    if not task.cancelled() and task.exception() is not None:
        log.error("ingestion stopped on an unexpected error", exc_info=task.exception())


async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves; 503 while a partition is stalled: records wait and the
    ingest took none in for ``stall_seconds``, not held on purpose (a Postgres outage shows on
    /readyz instead). Nothing in the process would unstick it, so the liveness probe restarts
    the pod, and the next owner reads on from the offsets stored in Postgres."""
    watch = request.app.get(STALLS)
    stalled = watch.stalled_rows() if watch is not None else []
    body = {
        "status": "stalled" if stalled else "ok",
        "service": "aggregator",
        "intake_held": bool(watch and watch.held),
        "stall_seconds": request.app[SETTINGS].aggregator.stall_seconds,
        "stalled_partitions": stalled,
    }
    return web.json_response(body, status=503 if stalled else 200)


async def readyz(request: web.Request) -> web.Response:
    ingestor = request.app[INGESTOR]
    stats = ingestor.stats
    body = {
        "ready": ingestor.ready,
        "database_available": stats.database_available,
        "ingest_paused_for_outage": ingestor.outage,
        "batches": stats.batches,
        "records": stats.records,
        "dead_letters": stats.dead_letters,
    }
    return web.json_response(body, status=200 if ingestor.ready else 503)


def create_app(settings: AggregatorSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.extend(RESOURCES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    prometheus.setup(app)  # GET /metrics
    app.router.add_get("/openapi.json", openapi)
    dashboard.setup(app)
    api = query_api.create_api()
    app[QUERY_API] = api
    app.add_subapp("/v1", api)
    return app
