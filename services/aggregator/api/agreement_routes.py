"""``GET /v1/deployments/{d}/agreement``: each judge's agreement with people (agreement/human.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from services.aggregator.agreement.human import read_agreement, render_all
from services.aggregator.api.errors import bad_parameter, json_response
from services.aggregator.api.params import Query, checked
from services.aggregator.api.state import API
from services.aggregator.rollups.scales import ScaleBook
from services.aggregator.rollups.version_scales import read_versions

_LEVEL = 0.95


async def deployment_agreement(request: web.Request) -> web.Response:
    state = request.app[API]
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    query = Query(request, ("from", "to", "metric", "min_labels"))
    now = datetime.now(UTC)
    end = query.time("to", now)
    start = query.time("from", end - timedelta(days=7))
    if start >= end:
        raise bad_parameter("from", "must be before to")
    if end - start > timedelta(days=state.section.max_range_days):
        raise bad_parameter("from", f"the range may cover at most {state.section.max_range_days} days")
    metric = query.text("metric")
    if metric is not None and not 0 < len(metric) <= 200:
        raise bad_parameter("metric", "must be 1-200 characters")
    min_labels = query.integer("min_labels", 10, 2, 100_000)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        agreements = await read_agreement(conn, deployment, start, end, metric)
        scales = ScaleBook(state.deployments.get(deployment), recorded=await read_versions(conn, deployment))
    return json_response({
        "deployment": deployment,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "level": _LEVEL,
        "min_labels": min_labels,
        "agreement": render_all(agreements, scales, min_labels, _LEVEL),
    })
