"""``/healthz`` (the process serves), ``/readyz`` (send it traffic), ``/metrics`` (Prometheus).

Ready means: at least one deployment serves (one that does not load answers 503 on its own
routes and does not make the gateway unready) and room for a request's events. Kafka being away does not make
the gateway unready: events wait in the spool, which is the point of having one. A full spool
does, since every score request would get 503.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.appkeys import DEPLOYMENTS, METRICS, PUBLISHER
from services.gateway.events.metrics import PREFIX, MetricSample
from services.gateway.routes.errors import json_response
from services.gateway.routes.metrics import exposition

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "service": "gateway"})


async def readyz(request: web.Request) -> web.Response:
    deployments = request.app[DEPLOYMENTS]
    publisher = request.app[PUBLISHER]
    reasons = []
    serving = sorted(deployments.current.deployments) if deployments.loaded else []
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


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    deployments = app[DEPLOYMENTS]
    gateway_metrics = app[METRICS]
    loaded = len(deployments.current.deployments) if deployments.loaded else 0
    statuses = [
        MetricSample(f"{PREFIX}deployment_status", "gauge",
                     "1 for each deployment's status: serving, stale (its files no longer load; serving its "
                     "last good version) or unavailable (does not load; answers 503).",
                     1, (("deployment", name), ("status", current.status(name) or "")))
        for current in ([deployments.current] if deployments.loaded else [])
        for name in sorted(set(current.deployments) | set(current.failures))
    ]
    registry = [*statuses,
        MetricSample(f"{PREFIX}deployments", "gauge", "Deployments being served.", loaded),
        MetricSample(f"{PREFIX}deployment_reloads_total", "counter", "Reloads of the deployments (SIGHUP, key files).",
                     deployments.reloads_ok, (("result", "ok"),)),
        MetricSample(f"{PREFIX}deployment_reloads_total", "counter", "Reloads of the deployments (SIGHUP, key files).",
                     deployments.reloads_failed, (("result", "failed"),)),
    ]
    text = exposition([gateway_metrics.samples(), registry, app[PUBLISHER].samples()],
                      gateway_metrics.histogram_text())
    return web.Response(body=text.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})
