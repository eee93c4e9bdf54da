"""Kafka records to raw rows, or to a dead letter with its reason. Never raises.

Routing is by the event type header (the codec's), not by topic, so an event published to the
wrong topic is still stored correctly; spans are recognised by their topic. Token chunks and
alerts are not the aggregator's to store and are skipped. An event with a number outside its
plausible range (shared/plausibility.py: a latency of 1e11 ms, 1e12 tokens in one call, a score
off its scale) is dead-lettered as ``implausible-value``, never stored nor counted. An evaluation
with a ``rejudge_id`` goes to ``rejudge_evaluations``, which feeds no rollup.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from services.aggregator.ingest.rows import (
    EVALUATIONS,
    FEEDBACK,
    REJUDGES,
    REQUESTS,
    RESPONSES,
    SPANS,
    DeadLetter,
    EvaluationRow,
    FeedbackRow,
    RawTable,
    RejudgeRow,
    RequestRow,
    ResponseRow,
)
from services.aggregator.ingest.spans import SpanDecodeError, decode_spans
from services.aggregator.ingest.values import (
    EPOCH,
    InvalidValue,
    clean_text,
    identifier,
    json_text,
    trace_id_of,
    uuid7_time,
)
from shared.events.codec import decode
from shared.events.errors import EventDecodeError
from shared.events.messages import (
    Alert,
    Evaluation,
    EvaluationErrorType,
    EventMeta,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    TokenChunk,
)
from shared.plausibility import Implausible, Plausibility
from shared.sampling import is_sampled

log = logging.getLogger(__name__)

_MAX_MESSAGE = 4000
_MAX_COMMENT = 10_000
_MAX_VERSION = 200  # a judge prompt version, as stored since 0002
_MAX_LABEL = 200
_DETAIL = 300


class TimeWindow(NamedTuple):
    """Start times accepted now: from the retention cutoff to a little into the future."""

    earliest: datetime
    latest: datetime


@dataclass
class Decoded:
    """What one batch of records turned into."""

    rows: dict[RawTable, list[Any]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Events whose request started before the retention cutoff: not stored (a replay beyond
    # retention cannot be exact, since the rows it would deduplicate against are gone).
    too_old: int = 0
    skipped: int = 0  # token chunks and alerts that reached a topic we read

    def add(self, table: RawTable, row: Any) -> None:
        self.rows.setdefault(table, []).append(row)


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:_DETAIL]


class SamplingPolicy:
    """Which requests keep their inputs and outputs: the shared sampling decision at each
    deployment's rate, and every request of a batch run."""

    def __init__(self, rates: Mapping[str, float], default_rate: float) -> None:
        self._rates = dict(rates)
        self._default = default_rate
        # A request and its response usually arrive in the same batch: decide once.
        self._recent: dict[tuple[str, str], bool] = {}

    @classmethod
    def from_deployments(cls, deployments: Mapping[str, Any], default_rate: float) -> SamplingPolicy:
        return cls(
            {
                name: (d.evaluation.sampling_rate if d.evaluation is not None else 0.0)
                for name, d in deployments.items()
            },
            default_rate,
        )

    def rate(self, deployment: str) -> float:
        return self._rates.get(deployment, self._default)

    def sampled(self, request_id: str, deployment: str) -> bool:
        key = (request_id, deployment)
        decision = self._recent.pop(key, None)  # a request has one response: use it once
        if decision is None:
            decision = is_sampled(request_id, self._rates.get(deployment, self._default))
            if len(self._recent) >= 100_000:  # bounded, whatever the traffic looks like
                self._recent.clear()
            self._recent[key] = decision
        return decision


def dead_letter_headers(headers: Any) -> str:
    pairs = []
    for name, value in headers or ():
        text = None if value is None else bytes(value).decode("utf-8", "backslashreplace")
        pairs.append({"name": str(name), "value": text})
    return json_text(pairs)


class RecordDecoder:
    def __init__(self, topics_spans: str, sampling: SamplingPolicy, plausibility: Plausibility | None = None) -> None:
        self._spans_topic = topics_spans
        self._sampling = sampling
        self._plausibility = plausibility if plausibility is not None else Plausibility()

    def decode_batch(self, records: list[Any], window: TimeWindow) -> Decoded:
        return self.decode_into(records, window, Decoded())

    def decode_into(self, records: list[Any], window: TimeWindow, decoded: Decoded) -> Decoded:
        """Add ``records`` to ``decoded``: a batch can be decoded a slice at a time."""
        for record in records:
            try:
                self._decode_one(record, window, decoded)
            except Rejected as exc:
                decoded.dead_letters.append(self.dead_letter(record, exc.reason, exc.detail))
            except Exception as exc:  # a bug must cost one record, never the consumer
                log.exception("unexpected failure decoding %s[%s]@%s", record.topic, record.partition, record.offset)
                decoded.dead_letters.append(self.dead_letter(record, "unprocessable", repr(exc)[:_DETAIL]))
        return decoded

    @staticmethod
    def dead_letter(record: Any, reason: str, detail: str) -> DeadLetter:
        stamp = None
        if isinstance(getattr(record, "timestamp", None), int) and record.timestamp >= 0:
            stamp = EPOCH + timedelta(milliseconds=record.timestamp)
        try:
            headers = dead_letter_headers(record.headers)
        except Exception:  # headers that are not (str, bytes) pairs
            headers = "[]"
        return DeadLetter(
            topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
            kafka_timestamp=stamp,
            key=record.key,
            value=record.value,
            headers=headers,
            reason=reason,
            detail=clean_text(detail, _DETAIL),
        )

    def _decode_one(self, record: Any, window: TimeWindow, out: Decoded) -> None:
        if record.topic == self._spans_topic:
            try:
                spans = decode_spans(record.value)
            except SpanDecodeError as exc:
                raise Rejected(exc.reason, exc.detail) from None
            except InvalidValue as exc:
                raise Rejected("invalid-span", str(exc)) from None
            earliest, latest = window
            for span in spans:  # _in_window, inline: two spans in three events
                start = span.start_time
                if earliest <= start <= latest:
                    out.add(SPANS, span)
                else:
                    self._in_window(start, window, out)
            return
        try:
            event = decode(record.value, record.headers)
        except EventDecodeError as exc:
            raise Rejected(exc.reason, exc.detail) from None
        table = _TABLES.get(type(event))
        if table is EVALUATIONS and cast(Evaluation, event).rejudge_id:  # _TABLES: its type is Evaluation
            table = REJUDGES  # stored for comparison, never rolled up (rows.py)
        if table is None:
            if isinstance(event, _NOT_STORED):
                out.skipped += 1
                return
            raise Rejected("invalid-value", f"{type(event).__name__} is not stored by the aggregator")
        try:
            self._plausibility.check(event)
        except Implausible as exc:
            raise Rejected("implausible-value", str(exc)) from None
        try:
            row = self._row(table, event)
        except InvalidValue as exc:
            raise Rejected("invalid-value", str(exc)) from None
        if self._in_window(row.request_start_time, window, out):
            out.add(table, row)

    @staticmethod
    def _in_window(start: datetime, window: TimeWindow, out: Decoded) -> bool:
        if start < window.earliest:
            out.too_old += 1
            return False
        if start > window.latest:
            raise Rejected(
                "time-out-of-range",
                f"start time {start.isoformat()} is after {window.latest.isoformat()}",
            )
        return True

    def _row(self, table: RawTable, event: Any) -> Any:
        meta = _meta(event.meta)
        if table is REQUESTS:
            sampled = self._sampling.sampled(meta.request_id, meta.deployment)
            keep = sampled or meta.run_id != ""
            inputs = _struct_json(event, "inputs") if keep else None
            client_request_id = clean_text(event.client_request_id, 200)
            return _new(RequestRow, (*meta, client_request_id, event.streaming, sampled, inputs))
        if table is RESPONSES:
            return self._response(event, meta)
        if table is EVALUATIONS:
            return _evaluation(event, meta)
        if table is REJUDGES:
            row = _evaluation(event, meta)
            return RejudgeRow(*row, rejudge_id=identifier(event.rejudge_id, "rejudge_id"))
        return _feedback(event, meta)

    def _response(self, event: InferenceResponse, meta: _Meta) -> ResponseRow:
        sampled = self._sampling.sampled(meta.request_id, meta.deployment)
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


_NOT_STORED = (TokenChunk, Alert)  # a tuple: ``A | B`` would build a union type on every call
# By exact type: a dict lookup, where a chain of isinstance calls on protobuf classes costs a
# metaclass __instancecheck__ per miss.
_TABLES: dict[type, RawTable] = {
    InferenceRequest: REQUESTS,
    InferenceResponse: RESPONSES,
    Evaluation: EVALUATIONS,
    Feedback: FEEDBACK,
}
# Rows and _Meta are built with tuple.__new__ and their values in column order: a NamedTuple's
# own __new__ is a Python function, and it runs once per event.
_new = tuple.__new__
_STATUS = {
    InferenceStatus.INFERENCE_STATUS_OK: "ok",
    InferenceStatus.INFERENCE_STATUS_ERROR: "error",
    InferenceStatus.INFERENCE_STATUS_CANCELLED: "cancelled",
}


class _Meta(NamedTuple):
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


def _meta(meta: EventMeta) -> _Meta:
    start = _moment(meta.request_start_time) if meta.HasField("request_start_time") else None
    return _new(_Meta, (
        start,
        identifier(meta.request_id, "request_id"),
        identifier(meta.event_id, "event_id"),
        _moment(meta.event_time),
        identifier(meta.deployment, "deployment"),
        identifier(meta.variant, "variant", required=False),
        identifier(meta.run_id, "run_id", required=False),
        trace_id_of(meta.traceparent),
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


def _evaluation(event: Evaluation, meta: _Meta) -> EvaluationRow:
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


def _feedback(event: Feedback, meta: _Meta) -> FeedbackRow:
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
