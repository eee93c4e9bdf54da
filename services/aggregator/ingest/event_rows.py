"""One decoded event to its raw row (rows.py): the column values, each cleaned and bounded.

Apart from decode.py, which routes each Kafka record (by event type, the retention window,
plausibility) and dead-letters what it refuses: this module knows the columns of each raw table
and how an event's fields fill them. An :class:`InvalidValue` raised here is the record's dead letter.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from services.aggregator.ingest.rows import EvaluationRow, FeedbackRow, RequestRow, ResponseRow
from services.aggregator.ingest.values import (
    EPOCH,
    InvalidValue,
    clean_text,
    identifier,
    json_text,
    trace_id_of,
    uuid7_time,
)
from shared.events.messages import (
    Evaluation,
    EvaluationErrorType,
    EventMeta,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
)

_MAX_MESSAGE = 4000
_MAX_COMMENT = 10_000
_MAX_VERSION = 200  # a judge prompt version, as stored since 0002
_MAX_LABEL = 200

# Rows and RowMeta are built with tuple.__new__ and their values in column order: a NamedTuple's
# own __new__ is a Python function, and it runs once per event.
_new = tuple.__new__
_STATUS = {
    InferenceStatus.INFERENCE_STATUS_OK: "ok",
    InferenceStatus.INFERENCE_STATUS_ERROR: "error",
    InferenceStatus.INFERENCE_STATUS_CANCELLED: "cancelled",
}


class RowMeta(NamedTuple):
    """The request context every raw row starts with (RequestRow's first eight columns)."""

    request_start_time: datetime | None
    request_id: str
    event_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None


def _moment(stamp: Any) -> datetime:
    # Same value as protobuf's Timestamp.ToDatetime(tzinfo=UTC) (valid nanos are 0..999999999),
    # at a third of its cost, positional timedelta arguments cheaper still than keywords; this
    # runs twice for every event.
    return EPOCH + timedelta(0, stamp.seconds, stamp.nanos // 1000)


def event_meta(meta: EventMeta) -> RowMeta:
    """The context columns of any event's row, from its EventMeta."""
    start = _moment(meta.request_start_time) if meta.HasField("request_start_time") else None
    return _new(RowMeta, (
        start,
        identifier(meta.request_id, "request_id"),
        identifier(meta.event_id, "event_id"),
        _moment(meta.event_time),
        identifier(meta.deployment, "deployment"),
        identifier(meta.variant, "variant", required=False),
        identifier(meta.run_id, "run_id", required=False),
        trace_id_of(meta.traceparent),
    ))


def request_row(event: InferenceRequest, meta: RowMeta, sampled: bool) -> RequestRow:
    """An inference request's row; its inputs kept when ``sampled`` or part of a batch run."""
    keep = sampled or meta.run_id != ""
    inputs = _struct_json(event, "inputs") if keep else None
    client_request_id = clean_text(event.client_request_id, 200)
    return _new(RequestRow, (*meta, client_request_id, event.streaming, sampled, inputs))


def response_row(event: InferenceResponse, meta: RowMeta, sampled: bool) -> ResponseRow:
    """An inference response's row; its outputs kept when ``sampled`` or part of a batch run."""
    keep = sampled or meta.run_id != ""
    usage = []
    prompt = completion = total = 0
    for call in event.usage[:]:  # [:]: see spans.decode_spans. Counts checked by Plausibility.
        call_prompt = call.prompt_tokens
        call_completion = call.completion_tokens
        call_total = call.total_tokens
        prompt, completion, total = prompt + call_prompt, completion + call_completion, total + call_total
        usage.append(
            {
                "node": clean_text(call.node, 200),
                "model": identifier(call.model or "unknown", "usage.model"),
                "prompt_tokens": call_prompt,
                "completion_tokens": call_completion,
                "total_tokens": call_total,
            }
        )
    status = _STATUS.get(event.status, "unspecified")
    error_type = identifier(event.error_type or "unknown", "error_type") if status == "error" else None
    ttft = event.time_to_first_token_ms if event.HasField("time_to_first_token_ms") else None
    return _new(ResponseRow, (
        *meta,
        status,
        error_type,
        clean_text(event.error_message, _MAX_MESSAGE) or None,
        event.latency_ms,
        ttft,
        prompt,
        completion,
        total,
        json_text(usage),
        sampled,
        _struct_json(event, "outputs") if keep else None,
    ))


def _struct_json(event: Any, name: str) -> str | None:
    if not event.HasField(name):
        return None
    try:
        value = _struct_dict(getattr(event, name))
    except ValueError as exc:  # a NaN or infinite number in the Struct
        raise InvalidValue(f"{name}: {exc}") from None
    return json_text(value)


def _struct_dict(struct: Any) -> dict[str, Any]:
    """A google.protobuf.Struct as plain values, as json_format.MessageToJson writes it (numbers
    stay floats, an unset value is null), at a tenth of its cost."""
    fields = struct.fields
    return {key: _struct_value(fields[key]) for key in fields}


def _struct_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            name = "NaN" if math.isnan(number) else "Infinity"
            raise ValueError(f"Fail to serialize {name} for Value.number_value, which would parse as string_value")
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _struct_dict(value.struct_value)
    if kind == "list_value":
        return [_struct_value(item) for item in value.list_value.values]
    return None  # null_value, or no kind set


def error_type_name(value: int) -> str:
    """EVALUATION_ERROR_TYPE_TIMEOUT -> timeout; an unknown number -> unknown."""
    try:
        name = EvaluationErrorType.Name(value)
    except ValueError:
        return "unknown"
    short = name.removeprefix("EVALUATION_ERROR_TYPE_").lower()
    return "unknown" if short == "unspecified" else short


def evaluation_row(event: Evaluation, meta: RowMeta) -> EvaluationRow:
    outcome = event.WhichOneof("outcome")
    score = reason = error_type = error_message = value = None
    label = ""
    if outcome == "scored":
        scored = event.scored
        score, reason = scored.score, clean_text(scored.reason, _MAX_MESSAGE)
        # An event written before evaluators had scales has no value: its score is the value.
        value = scored.value if scored.HasField("value") else float(score)
        label = clean_text(scored.label, _MAX_LABEL)
    elif outcome == "not_applicable":
        reason = clean_text(event.not_applicable.reason, _MAX_MESSAGE)
    else:
        error_type = error_type_name(event.error.type)
        error_message = clean_text(event.error.message, _MAX_MESSAGE)
    judged = event.HasField("judge")
    judge = event.judge
    prompt_version = clean_text(judge.prompt_version, _MAX_VERSION) if judged else None
    metric = identifier(event.metric, "metric")
    # Before evaluators were configurable an event named only its metric (a built-in evaluator)
    # and the judge's prompt version: that is its evaluator and version (migration 0011 gave
    # the rows stored then the same key, so a redelivered old event still deduplicates).
    evaluator = identifier(event.evaluator, "evaluator", required=False) or metric
    version = identifier(event.evaluator_version, "evaluator_version", required=False) or prompt_version or ""
    if meta.request_start_time is None:  # validation refuses such an evaluation before this
        raise InvalidValue("evaluation has no request_start_time")
    return EvaluationRow(
        request_start_time=meta.request_start_time,
        request_id=meta.request_id,
        metric=metric,
        event_id=meta.event_id,
        event_time=meta.event_time,
        deployment=meta.deployment,
        variant=meta.variant,
        run_id=meta.run_id,
        trace_id=meta.trace_id,
        outcome=outcome,
        score=score,
        reason=reason,
        error_type=error_type,
        error_message=error_message,
        judge_model=identifier(judge.model or "unknown", "judge.model") if judged else None,
        judge_prompt_version=prompt_version,
        judge_prompt_tokens=judge.prompt_tokens if judged else None,
        judge_completion_tokens=judge.completion_tokens if judged else None,
        judge_latency_ms=judge.latency_ms if judged else None,
        evaluator=evaluator,
        evaluator_version=version,
        value=value,
        label=label,
    )


def feedback_row(event: Feedback, meta: RowMeta) -> FeedbackRow:
    start, source = meta.request_start_time, "event"
    if start is None:
        # Request ids are the gateway's UUIDv7s: their first 48 bits are the start time in ms.
        # Failing that, the feedback's own time: stable across redeliveries, so dedup holds.
        start, source = uuid7_time(meta.request_id), "request_id"
        if start is None:
            start, source = meta.event_time, "event_time"
    return FeedbackRow(
        request_start_time=start,
        event_id=meta.event_id,
        request_id=meta.request_id,
        event_time=meta.event_time,
        deployment=meta.deployment,
        variant=meta.variant,
        run_id=meta.run_id,
        trace_id=meta.trace_id,
        rating=event.rating if event.HasField("rating") else None,
        comment=clean_text(event.comment, _MAX_COMMENT),
        start_time_source=source,
        labels=_labels(event),
    )


_MAX_LABELS = 50


def _labels(event: Feedback) -> str:
    labels = dict(event.labels)
    if len(labels) > _MAX_LABELS:
        raise InvalidValue(f"labels: more than {_MAX_LABELS}")
    for metric, value in labels.items():
        if not metric or len(metric) > 200:
            raise InvalidValue("labels: a metric name must be 1-200 characters")
        if not math.isfinite(value):
            raise InvalidValue(f"labels.{metric[:200]}: not a finite number")
    return json.dumps(labels, sort_keys=True)
