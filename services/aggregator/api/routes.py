"""Read routes of the query API: deployments, metrics, requests, traces, batch runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from services.aggregator.api.compare import compare_quality
from services.aggregator.api.errors import bad_parameter, json_response, not_found
from services.aggregator.api.figures import Breakdown, Figures
from services.aggregator.api.metrics_query import (
    NoSuchVersion,
    Scope,
    extras,
    read_breakdown,
    run_progress,
    violations,
)
from services.aggregator.api.params import (
    Query,
    ceil_minute,
    checked,
    cursor_time,
    decode_cursor,
    encode_cursor,
    floor_minute,
)
from services.aggregator.api.requests_query import RequestFilter, read_request, read_requests
from services.aggregator.api.state import API, ApiState
from services.aggregator.db.pool import DbConnection
from services.aggregator.ingest.values import MAX_ID_CHARS
from services.aggregator.rollups.scales import ScaleBook, configured_metrics
from services.aggregator.traces import TRACE_ID, read_trace

_LEVEL = 0.95
_STEPS_PER_DEFAULT = 60  # the default step gives about this many points


def _deployment(request: web.Request) -> str:
    return checked("deployment", request.match_info["deployment"], "deployment")


async def list_deployments(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    async with state.pool.acquire() as conn:
        seen = await conn.fetch(
            "SELECT deployment, variant, first_minute, last_minute FROM deployment_variants ORDER BY 1, 2"
        )
        monitor_counts = {
            r["deployment"]: r["n"]
            for r in await conn.fetch("SELECT deployment, count(*)::int AS n FROM monitors GROUP BY 1")
        }
    entries: dict[str, dict] = {}
    for name, deployment in state.deployments.items():
        entries[name] = {
            "name": name,
            "description": deployment.description,
            "configured": True,
            "metrics": configured_metrics(deployment),
            # Each metric's scale and pass rule (built-in metrics: 1-5, at least 3).
            "scales": {m: {**(scale := ScaleBook(deployment).of(m)).describe(), "pass_rule": scale.pass_rule()}
                       for m in configured_metrics(deployment)},
            "sampling_rate": deployment.evaluation.sampling_rate if deployment.evaluation else 0.0,
            "variants": {v.id: {"id": v.id, "weight": v.weight, "configured": True, "first_seen": None,
                                "last_seen": None} for v in deployment.variants},
        }
    for row in seen:
        entry = entries.setdefault(row["deployment"], {
            "name": row["deployment"], "description": None, "configured": False, "metrics": [], "scales": {},
            "sampling_rate": None, "variants": {},
        })
        seen_range = {"first_seen": row["first_minute"].isoformat(), "last_seen": row["last_minute"].isoformat()}
        entry.setdefault("seen", []).append(seen_range)
        if row["variant"]:  # '' is an event that did not say its variant (feedback), not a variant
            entry["variants"].setdefault(
                row["variant"], {"id": row["variant"], "weight": None, "configured": False}
            ).update(seen_range)
    for entry in entries.values():
        variants = list(entry["variants"].values())
        seen = entry.pop("seen", [])
        firsts = [s["first_seen"] for s in seen]
        lasts = [s["last_seen"] for s in seen]
        entry["first_seen"] = min(firsts) if firsts else None
        entry["last_seen"] = max(lasts) if lasts else None
        entry["variants"] = variants
        entry["monitors"] = monitor_counts.get(entry["name"], 0)
    return json_response({"deployments": [entries[name] for name in sorted(entries)]})


def evaluator_version(query: Query) -> str | None:
    """The ``version`` parameter: an evaluator version to show instead of each metric's latest."""
    text = query.text("version")
    if text is not None and not (0 < len(text) <= MAX_ID_CHARS and text.isprintable()):
        raise bad_parameter("version", f"must be 1 to {MAX_ID_CHARS} printable characters")
    return text


async def breakdown_of(conn: DbConnection, state: ApiState, scope: Scope, version: str | None) -> Breakdown:
    """read_breakdown with the deployment's scales; a ``version`` not in the range is a 404."""
    try:
        return await read_breakdown(conn, scope, ScaleBook(state.deployments.get(scope.deployment)), version)
    except NoSuchVersion:
        raise not_found(f"no metric of {scope.deployment!r} has evaluator version {version!r} in the range",
                        "version") from None


def metrics_scope(query: Query, deployment: str, max_points: int, max_days: int, now: datetime) -> Scope:
    end = ceil_minute(query.time("to", now))
    start = floor_minute(query.time("from", end - timedelta(hours=1)))
    if start >= end:
        raise bad_parameter("from", "must be before to")
    if end - start > timedelta(days=max_days):
        raise bad_parameter("from", f"the range may cover at most {max_days} days")
    span = (end - start).total_seconds()
    default_step = max(60, int(span / _STEPS_PER_DEFAULT) // 60 * 60)
    step = query.duration("step", default_step)
    if span / step > max_points:
        raise bad_parameter("step", f"gives {int(span // step)} points, more than {max_points}: use a larger step")
    variant = query.pattern("variant", "variant")
    return Scope(deployment, start, end, timedelta(seconds=step), variant=variant)


async def deployment_metrics(request: web.Request) -> web.Response:
    state = request.app[API]
    deployment = _deployment(request)
    query = Query(request, ("from", "to", "step", "variant", "pass_score", "version"))
    section = state.section
    scope = metrics_scope(query, deployment, section.max_series_points, section.max_range_days, datetime.now(UTC))
    pass_score = query.integer("pass_score", 3, 1, 5)
    version = evaluator_version(query)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        breakdown = await breakdown_of(conn, state, scope, version)
        more = await extras(conn, scope)
        monitors, per_metric = await violations(conn, scope)
    overview = breakdown.overview(pass_score, _LEVEL)
    breakdown.describe_versions(overview["quality"])
    for metric, figures in overview["quality"].items():
        figures["violations"] = per_metric.get(metric, {"windows": 0, "violations": 0, "violation_rate": None})
    for metric, counts in per_metric.items():  # a watched metric with no scores in range
        overview["quality"].setdefault(metric, {"average": None, "pass_rate": None, "samples": 0,
                                                "violations": counts})
    overview.update(more)
    overview["monitors"] = monitors
    return json_response({
        "deployment": deployment,
        "variant": scope.variant,
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "step_seconds": int(scope.step.total_seconds()),
        "pass_score": pass_score,
        "overview": overview,
        "by_variant": breakdown.by_variant(pass_score, _LEVEL),
        "series": breakdown.series(scope.steps(), pass_score, _LEVEL),
    })


async def compare_variants(request: web.Request) -> web.Response:
    """Two variants over one range: each one's figures, and per quality metric the difference
    with its confidence interval and a verdict (compare.py). Production traffic only."""
    state = request.app[API]
    deployment = _deployment(request)
    query = Query(request, ("baseline", "candidate", "from", "to", "pass_score", "version"))
    baseline = checked("baseline", query.required("baseline"), "variant")
    candidate = checked("candidate", query.required("candidate"), "variant")
    if baseline == candidate:
        raise bad_parameter("candidate", "must differ from baseline")
    section = state.section
    whole = metrics_scope(query, deployment, section.max_series_points, section.max_range_days, datetime.now(UTC))
    scope = Scope(deployment, whole.start, whole.end, whole.end - whole.start)
    pass_score = query.integer("pass_score", 3, 1, 5)
    version = evaluator_version(query)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        breakdown = await breakdown_of(conn, state, scope, version)
    sides = {name: breakdown.cells.get((None, name)) or Figures() for name in (baseline, candidate)}
    return json_response({
        "deployment": deployment,
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "baseline": baseline,
        "candidate": candidate,
        "level": _LEVEL,
        "pass_score": pass_score,
        "quality": compare_quality(sides[baseline], sides[candidate], pass_score, _LEVEL, breakdown.scales),
        "versions": breakdown.versions,
        "figures": {name: figures.render(pass_score, _LEVEL, detail=False, scales=breakdown.scales)
                    for name, figures in sides.items()},
    })


async def deployment_requests(request: web.Request) -> web.Response:
    state = request.app[API]
    deployment = _deployment(request)
    query = Query(request, ("sampled", "limit", "cursor", "variant", "run_id", "from", "to"))
    sampled = query.boolean("sampled", True)
    limit = query.integer("limit", state.section.default_page_size, 1, state.section.max_page_size)
    cursor = decode_cursor("cursor", query.text("cursor"), (str, str))
    after = None if cursor is None else (cursor_time("cursor", cursor[0]), cursor[1])
    end = query.optional_time("to")
    start = query.optional_time("from")
    if start is None and not sampled:
        # Unsampled requests have no index by deployment and time: bound the scan by default.
        start = (end or datetime.now(UTC)) - timedelta(hours=1)
    if start is not None and end is not None and start >= end:
        raise bad_parameter("from", "must be before to")
    where = RequestFilter(
        deployment=deployment,
        run_id=query.pattern("run_id", "run_id") or "",
        sampled_only=sampled,
        variant=query.pattern("variant", "variant"),
        start=start,
        end=end,
    )
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        rows, last = await read_requests(conn, where, limit, after)
    next_cursor = encode_cursor([last[0].isoformat(), last[1]]) if last else None
    return json_response({"deployment": deployment, "requests": rows, "next_cursor": next_cursor})


async def one_request(request: web.Request) -> web.Response:
    """A request by its id (the gateway's ``x-request-id``), in any deployment: what an on-call
    engineer starts from when someone reports one bad answer."""
    state = request.app[API]
    Query(request, ())
    request_id = request.match_info["request_id"]
    if len(request_id) > MAX_ID_CHARS or not request_id.isprintable():
        raise bad_parameter("request_id", f"must be at most {MAX_ID_CHARS} printable characters")
    async with state.pool.acquire() as conn:
        found = await read_request(conn, request_id)
    if found is None:
        raise not_found(
            f"no request {request_id!r} is stored: not ingested yet, older than retention, or unknown",
            "request_id",
        )
    return json_response(found)


async def trace(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    trace_id = request.match_info["trace_id"].lower()
    if not TRACE_ID.fullmatch(trace_id):
        raise bad_parameter("trace_id", "must be 32 hexadecimal characters (a W3C trace id)")
    async with state.pool.acquire() as conn:
        found = await read_trace(conn, trace_id)
    if found is None:
        raise not_found(f"no span of trace {trace_id} is stored", "trace_id")
    return json_response(found)


async def batch_run(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    run_id = checked("run_id", request.match_info["run_id"], "run_id")
    async with state.pool.acquire() as conn:
        ranges = await conn.fetch(
            "SELECT deployment, first_minute, last_minute FROM batch_runs WHERE run_id = $1 ORDER BY deployment",
            run_id,
        )
        if not ranges:
            raise not_found(f"no batch run {run_id!r} was seen", "run_id")
        deployments = []
        for row in ranges:
            start, end = row["first_minute"], row["last_minute"] + timedelta(minutes=1)
            scope = Scope(row["deployment"], start, end, end - start, run_id=run_id)
            breakdown = await read_breakdown(conn, scope, ScaleBook(state.deployments.get(row["deployment"])))
            deployments.append({
                "deployment": row["deployment"],
                "first_minute": start.isoformat(),
                "last_minute": row["last_minute"].isoformat(),
                "progress": await run_progress(conn, run_id, row["deployment"], start, end),
                "overview": breakdown.overview(3, _LEVEL),
                "by_variant": breakdown.by_variant(3, _LEVEL),
            })
    return json_response({"run_id": run_id, "deployments": deployments})
