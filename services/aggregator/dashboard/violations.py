"""``GET /v1/deployments/{d}/violations?from=&to=&variant=&limit=``: violated monitor windows.

The quality charts mark each violated window at its end, where the metrics route only counts
them. The answer also carries those counts (windows, violations, rate per monitor and per
metric, computed by the metrics route's own function), so the dashboard can refresh markers
and counts together without asking for the figures again. Windows are the ones ending in
``(from, to]``, as the metrics route counts them; newest first, at most ``limit``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from services.aggregator.api.errors import bad_parameter, json_response
from services.aggregator.api.metrics_query import Scope, violations
from services.aggregator.api.params import Query, ceil_minute, checked, floor_minute
from services.aggregator.api.state import API

_MAX = 5000

_SQL = """
SELECT monitor_id, variant, statistic, metric, window_start, window_end, value, sample_count,
       ci_low, ci_high, threshold, note
FROM violations
WHERE deployment = $1 AND window_end > $2 AND window_end <= $3 AND ($4::text IS NULL OR variant = $4)
ORDER BY window_end DESC, monitor_id
LIMIT $5
"""


async def list_violations(request: web.Request) -> web.Response:
    state = request.app[API]
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    query = Query(request, ("from", "to", "variant", "limit"))
    end = ceil_minute(query.time("to", datetime.now(UTC)))
    start = floor_minute(query.time("from", end - timedelta(hours=1)))
    if start >= end:
        raise bad_parameter("from", "must be before to")
    variant = query.pattern("variant", "variant")
    limit = query.integer("limit", 1000, 1, _MAX)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        rows = await conn.fetch(_SQL, deployment, start, end, variant, limit + 1)
        monitors, by_metric = await violations(conn, Scope(deployment, start, end, end - start, variant=variant))
    windows = [{
        "monitor_id": r["monitor_id"],
        "variant": r["variant"] or None,
        "statistic": r["statistic"],
        "metric": r["metric"] or None,
        "window_start": r["window_start"].isoformat(),
        "window_end": r["window_end"].isoformat(),
        "value": r["value"],
        "threshold": r["threshold"],
        "sample_count": r["sample_count"],
        "confidence_interval": [r["ci_low"], r["ci_high"]],
        "note": r["note"] or None,
    } for r in rows[:limit]]
    return json_response({
        "deployment": deployment,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "violations": windows,
        "truncated": len(rows) > limit,
        "monitors": monitors,
        "by_metric": by_metric,
    })
