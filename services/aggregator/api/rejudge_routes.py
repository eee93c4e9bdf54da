"""Re-judge routes: ``POST``/``GET /v1/deployments/{d}/rejudges``, ``GET /v1/rejudges/{id}``.

A POST (admin key) checks the request against what the processor can do, stores the re-judge
and returns 202; the command reaches the processor through the outbox (rejudge/kafka_side.py).
What is checked, each a 400 naming its field:

- ``evaluator``: ``NAME`` or ``NAME@VERSION``, an evaluator of the deployment's file as this
  aggregator loaded it. The processor judges only with the versions it has loaded, which is the
  current configuration: a version other than the current one is refused, naming the current.
- ``from``/``to``: ``from`` before ``to``; ``to`` not in the future (the window must be over);
  ``from`` no older than the inference topic's ``retention.ms`` (read from the broker) allows:
  older records may already be deleted, so the re-judge could not be complete.
- ``sample``: optional, 1 to 1,000,000 requests, chosen deterministically by request id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from services.aggregator.api.body import read_json
from services.aggregator.api.errors import ApiError, bad_parameter, json_response, not_found
from services.aggregator.api.params import Query, checked, parse_time
from services.aggregator.api.state import API, ApiState
from services.aggregator.rejudge.comparison import compare

MAX_SAMPLE = 1_000_000
_FIELDS = {"evaluator", "from", "to", "sample"}
_SHAPE = '{"evaluator": "NAME[@VERSION]", "from": "...", "to": "...", "sample": N}'
_ID_CHARS = 64


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "deployment": row["deployment"],
        "evaluator": row["evaluator"],
        "version": row["evaluator_version"],
        "from": row["window_start"],
        "to": row["window_end"],
        "sample": row["sample"],
        "requested_at": row["requested_at"],
        "status": row["status"],
        "command_published": row["published_at"] is not None,
        "progress": {"total": row["total"], "judged": row["judged"], "published": row["published"],
                     "updated_at": row["progress_at"]},
        "message": row["message"],
    }


def _evaluator(state: ApiState, deployment: str, text: Any) -> tuple[str, str]:
    if not isinstance(text, str) or not text:
        raise bad_parameter("evaluator", "is required: NAME or NAME@VERSION")
    name, _, version = text.partition("@")
    file = state.deployments.get(deployment)
    evaluation = getattr(file, "evaluation", None)
    config = evaluation.evaluator(name) if evaluation is not None else None
    if config is None:
        known = ", ".join(e.name for e in evaluation.all_evaluators()) if evaluation is not None else "none"
        raise bad_parameter("evaluator", f"{name!r} is not an evaluator of {deployment!r} (its evaluators: {known})")
    if version and version != config.version:
        raise bad_parameter("evaluator", (
            f"version {version!r} of {name!r} cannot be judged: the processor judges only with the versions it "
            f"has loaded, which is the current configuration ({name}@{config.version})"))
    return name, config.version


async def _window(request: web.Request, body: dict[str, Any]) -> tuple[datetime, datetime]:
    for name in ("from", "to"):
        if not isinstance(body.get(name), str):
            raise bad_parameter(name, "is required: an RFC 3339 time or Unix seconds, as a string")
    start, end = parse_time("from", body["from"]), parse_time("to", body["to"])
    if start >= end:
        raise bad_parameter("from", "must be before to")
    now = datetime.now(UTC)
    if end > now:
        raise bad_parameter("to", "must not be in the future: only a window that is over can be re-judged")
    links = request.app[API].rejudge
    try:
        retention_ms = await links.inference_retention_ms() if links is not None else None
    except Exception:
        raise ApiError(503, "unavailable", "cannot read the inference topic's retention from Kafka; try again") \
            from None
    if retention_ms is not None and start < now - timedelta(milliseconds=retention_ms):
        raise bad_parameter("from", (
            f"is older than the inference topic keeps records ({retention_ms / 3_600_000:g} hours): "
            "those requests may be deleted already"))
    return start, end


async def create_rejudge(request: web.Request) -> web.Response:
    state = request.app[API]
    Query(request, ())
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    body = await read_json(request, field="evaluator", shape=_SHAPE)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", f"the body must be a JSON object: {_SHAPE}", field="evaluator")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise bad_parameter(unknown[0], f"is not a field of a re-judge ({_SHAPE})")
    if deployment not in state.deployments:
        raise not_found(f"no deployment named {deployment!r} is configured here (re-judging needs its file)",
                        "deployment")
    evaluator, version = _evaluator(state, deployment, body.get("evaluator"))
    sample = body.get("sample")
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool)
                               or not 1 <= sample <= MAX_SAMPLE):
        raise bad_parameter("sample", f"must be a whole number from 1 to {MAX_SAMPLE}")
    start, end = await _window(request, body)
    rejudge_id = f"rj-{uuid.uuid4().hex}"
    async with state.pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO rejudges (id, deployment, evaluator, evaluator_version, window_start, window_end, sample)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            rejudge_id, deployment, evaluator, version, start, end, sample,
        )
    assert row is not None  # INSERT ... RETURNING gives the row
    if state.rejudge is not None:
        state.rejudge.kick()
    return json_response(_view(row), status=202, headers={"Location": f"/v1/rejudges/{rejudge_id}"})


async def list_rejudges(request: web.Request) -> web.Response:
    state = request.app[API]
    query = Query(request, ("limit",))
    deployment = checked("deployment", request.match_info["deployment"], "deployment")
    limit = query.integer("limit", state.section.default_page_size, 1, state.section.max_page_size)
    async with state.pool.acquire() as conn:
        await state.require_deployment(conn, deployment)
        rows = await conn.fetch(
            "SELECT * FROM rejudges WHERE deployment = $1 ORDER BY requested_at DESC, id LIMIT $2", deployment, limit
        )
    return json_response({"deployment": deployment, "rejudges": [_view(r) for r in rows]})


async def one_rejudge(request: web.Request) -> web.Response:
    """Progress, and once outcomes are stored, old version against new (rejudge/comparison.py)."""
    state = request.app[API]
    Query(request, ())
    rejudge_id = request.match_info["rejudge_id"]
    if not (0 < len(rejudge_id) <= _ID_CHARS and rejudge_id.isprintable()):
        raise bad_parameter("rejudge_id", f"must be 1 to {_ID_CHARS} printable characters")
    async with state.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM rejudges WHERE id = $1", rejudge_id)
        if row is None:
            raise not_found(f"no re-judge {rejudge_id!r}", "rejudge_id")
        stored = await conn.fetchval("SELECT count(*) FROM rejudge_evaluations WHERE rejudge_id = $1", rejudge_id)
        comparison = await compare(conn, row, state.deployments.get(row["deployment"]))
    view = _view(row)
    view["progress"]["stored"] = stored
    view["comparison"] = comparison
    return json_response(view)
