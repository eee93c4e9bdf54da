"""``/healthz`` (the process serves), ``/readyz`` (send it traffic), ``/metrics`` (Prometheus).

Ready means: at least one deployment serves (one that does not load answers 503 on its own
routes and does not make the gateway unready) and room for a request's events. Kafka being away does not make
the gateway unready: events wait in the spool, which is the point of having one. A full spool
does, since every score request would get 503.
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from services.gateway.appkeys import DEPLOYMENTS, METRICS, PUBLISHER, SETTINGS, SPAN_EXPORTER
from services.gateway.events.metrics import PREFIX
from services.gateway.routes.errors import json_response
from services.gateway.worker_metrics import every_worker
from services.gateway.workers import worker_socket
from shared.prometheus import CONTENT_TYPE, PROMETHEUS, Families, ServiceMetrics, metrics_handler


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": "gateway"})


async def readyz(request: web.Request) -> web.Response:
    deployments = request.app[DEPLOYMENTS]
    publisher = request.app[PUBLISHER]
    reasons = []
    serving = deployments.current.serving if deployments.loaded else []
    if not deployments.loaded:
        reasons.append("deployments not loaded")
    elif not serving:
        reasons.append("no deployment serves (GET /admin/deployments lists why)")
    if not publisher.accepting():
        reasons.append("no room for more events (event spool or queue full)")
    body = {
        "status": "not_ready" if reasons else "ready",
        "deployments": serving,
        "unavailable": sorted(deployments.current.failures) if deployments.loaded else [],
        "events_spooling": publisher.spooling,
    }
    if reasons:
        body["reasons"] = reasons
    return json_response(body, status=503 if reasons else 200)


def collect_metrics(app: web.Application, out: Families) -> None:
    """The gateway's series at scrape time: requests, deployments, the event publisher, span export."""
    deployments = app[DEPLOYMENTS]
    app[METRICS].collect(out)
    loaded = len(deployments.current.serving) if deployments.loaded else 0
    status = out.gauge("deployment_status", "1 for each deployment's status: serving, stale (its files no longer "
                       "load; serving its last good version) or unavailable (does not load; answers 503).",
                       ["deployment", "status"])
    for current in [deployments.current] if deployments.loaded else []:
        for name in sorted(set(current.serving) | set(current.failures)):
            status.add(1, deployment=name, status=current.status(name) or "")
    out.gauge("deployments", "Deployments being served.").add(loaded)
    reloads = out.counter("deployment_reloads_total", "Reloads of the deployments (SIGHUP, key files).", ["result"])
    reloads.add(deployments.reloads_ok, result="ok")
    reloads.add(deployments.reloads_failed, result="failed")
    app[PUBLISHER].collect_metrics(out)
    # Written as 0 without an exporter too, so an alert rule sees the series exist.
    spans = app.get(SPAN_EXPORTER)
    out.counter("spans_dropped_total", "Spans never published to Kafka: the export queue was full, the broker "
                "away, or the span larger than a message.").add(spans.dropped_spans if spans else 0)
    out.counter("span_messages_lost_total", "Span messages sent to Kafka and not acknowledged.").add(
        spans.lost_messages if spans else 0)


def service_metrics(app: web.Application) -> ServiceMetrics:
    return ServiceMetrics(PREFIX, partial(collect_metrics, app))


worker_metrics = metrics_handler  # GET /metrics/worker: this process's series only


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: this process's series; with --workers, every worker's, labelled ``worker``."""
    section = request.app[SETTINGS].gateway
    index = section.worker_index
    own = request.app[PROMETHEUS]
    if index is None or section.workers <= 1:
        return await own.handle(request)
    root = section.publisher.spool_dir.parent  # a worker's spool is <spool_dir>/worker-<i>
    sockets = {other: worker_socket(root, other) for other in range(section.workers) if other != index}
    body = await every_worker((index, own.text().decode()), sockets, PREFIX)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})
