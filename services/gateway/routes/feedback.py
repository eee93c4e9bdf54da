"""``POST /v1/deployments/{deployment}/feedback``: an end user's rating or comment on a response.

Body ``{"request_id": "<id from a score reply>", "rating": 1, "comment": "..."}``; at least one
of rating and comment. Answered 202 once the feedback event is queued. The gateway keeps no
state, so it checks the request id's form (the UUIDs it hands out), not that it exists; the
aggregator joins feedback to its request.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from aiohttp import web

from services.gateway.appkeys import PUBLISHER, SERVER_SPAN
from services.gateway.events import PublisherClosed, PublisherError, PublisherFull
from services.gateway.routes.common import (
    RUN_HEADER,
    RUN_ID_PATTERN,
    authorize,
    find_any_deployment,
    optional_header,
    read_json,
)
from services.gateway.routes.errors import ApiError, json_response
from services.gateway.tracing import trace_header
from shared.deployments.schema import Evaluation
from shared.events.builders import new_meta
from shared.events.messages import Feedback
from shared.plausibility import FEEDBACK_RATING

# The aggregator dead-letters a rating outside this range: accept exactly what it will count.
RATING_RANGE = (int(FEEDBACK_RATING.low), int(FEEDBACK_RATING.high))
MAX_COMMENT_CHARS = 4000
_FIELDS = {"request_id", "rating", "comment", "labels"}
MAX_LABELS = 50


def parse_feedback(body: Any) -> tuple[str, int | None, str]:
    """(request id, rating, comment) from a feedback body; ApiError 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_feedback", "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(400, "invalid_feedback",
                       f"unknown field {unknown[0]!r} (expected request_id, rating, comment, labels)",
                       field=unknown[0])
    request_id = body.get("request_id")
    if not isinstance(request_id, str):
        raise ApiError(400, "invalid_feedback", "request_id is required: the request_id of a score reply",
                       field="request_id")
    try:
        request_id = str(uuid.UUID(request_id))
    except ValueError:
        raise ApiError(400, "invalid_feedback", "request_id is not a request id returned by this gateway",
                       field="request_id") from None
    rating = body.get("rating")
    if rating is not None:
        if isinstance(rating, float) and rating.is_integer():
            rating = int(rating)
        low, high = RATING_RANGE
        if isinstance(rating, bool) or not isinstance(rating, int) or not low <= rating <= high:
            raise ApiError(400, "invalid_feedback", f"rating must be a whole number from {low} to {high}",
                           field="rating")
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise ApiError(400, "invalid_feedback", "comment must be a string", field="comment")
    if comment is not None and len(comment) > MAX_COMMENT_CHARS:
        raise ApiError(400, "invalid_feedback", f"comment is longer than {MAX_COMMENT_CHARS} characters",
                       field="comment")
    if rating is None and not comment and not body.get("labels"):
        raise ApiError(400, "invalid_feedback", "give a rating, a comment, labels or several", field="rating")
    return request_id, rating, comment or ""


def parse_labels(body: Any, evaluation: Evaluation | None) -> dict[str, float]:
    """A person's scores per metric (``{"relevance": 4, "eval_x.citation": "cited"}``), each on
    its metric's scale (a label's name stands for its number); 400 naming ``labels.<metric>``."""
    labels = body.get("labels") if isinstance(body, dict) else None
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not labels:
        raise ApiError(400, "invalid_feedback", "labels must be an object of metric: score", field="labels")
    if len(labels) > MAX_LABELS:
        raise ApiError(400, "invalid_feedback", f"at most {MAX_LABELS} labels", field="labels")
    judged = evaluation.metric_names() if evaluation is not None else []
    out: dict[str, float] = {}
    for metric, value in labels.items():
        where = f"labels.{metric}"[:200]
        evaluator = evaluation.evaluator_of(metric) if evaluation is not None else None
        if evaluator is None:
            raise ApiError(400, "invalid_feedback", f"{metric!r} is not a metric this deployment judges "
                           f"({', '.join(judged) or 'it judges none'})", field=where)
        scale = evaluator.scale_of(metric)
        out[metric] = _on_scale(value, scale, where)
    return out


def _on_scale(value: Any, scale: Any, where: str) -> float:
    if scale.type == "labels":
        numbers = scale.labels or {}
        if isinstance(value, str) and value in numbers:
            return float(numbers[value])
        if _number(value) and float(value) in {float(n) for n in numbers.values()}:
            return float(value)
        raise ApiError(400, "invalid_feedback", f"must be one of the labels {sorted(numbers)} "
                       "(or its number)", field=where)
    if not _number(value):
        raise ApiError(400, "invalid_feedback", "must be a number", field=where)
    number = float(value)
    if scale.type == "float":
        if not 0.0 <= number <= 1.0:
            raise ApiError(400, "invalid_feedback", "must be from 0 to 1", field=where)
        return number
    low, high = scale.min if scale.min is not None else 1, scale.max if scale.max is not None else 5
    if not number.is_integer() or not low <= number <= high:
        raise ApiError(400, "invalid_feedback", f"must be a whole number from {low} to {high}", field=where)
    return number


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


async def feedback(request: web.Request) -> web.Response:
    runtime = find_any_deployment(request)  # a proxy deployment's answers are rated too
    authorize(request, runtime)
    body, _ = await read_json(request)
    request_id, rating, comment = parse_feedback(body)
    labels = parse_labels(body, runtime.deployment.evaluation)
    run_id = optional_header(request, RUN_HEADER, RUN_ID_PATTERN,
                             "1-128 letters, digits or _.:- starting with a letter or digit")
    span = request.get(SERVER_SPAN)
    meta = new_meta(request_id=request_id, deployment=runtime.name, request_start_time=None, run_id=run_id,
                    traceparent=(trace_header(span) or "") if span is not None else "")
    event = Feedback(meta=meta, comment=comment, labels=labels)
    if rating is not None:
        event.rating = rating
    try:
        request.app[PUBLISHER].publish(event)
    except PublisherFull:
        raise ApiError(503, "overloaded", "the gateway cannot record feedback right now; retry later",
                       headers={"Retry-After": "5"}) from None
    except (PublisherClosed, PublisherError):
        raise ApiError(503, "shutting_down", "the gateway is shutting down", headers={"Retry-After": "1"}) from None
    return json_response({"status": "accepted", "event_id": meta.event_id, "request_id": request_id}, status=202)
