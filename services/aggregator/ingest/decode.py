"""Kafka records to raw rows, or to a dead letter with its reason. Never raises.

Routing is by the event type header (the codec's), not by topic, so an event published to the
wrong topic is still stored correctly; spans are recognised by their topic. Token chunks and
alerts are not the aggregator's to store and are skipped. An event with a number outside its
plausible range (shared/plausibility.py: a latency of 1e11 ms, 1e12 tokens in one call, a score
off its scale) is dead-lettered as ``implausible-value``, never stored nor counted. An evaluation
with a ``rejudge_id`` goes to ``rejudge_evaluations``, which feeds no rollup. What each event's
row holds (its columns, cleaned and bounded) is event_rows.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from services.aggregator.ingest.event_rows import (
    evaluation_row,
    event_meta,
    feedback_row,
    request_row,
    response_row,
)
from services.aggregator.ingest.rows import (
    EVALUATIONS,
    FEEDBACK,
    REJUDGES,
    REQUESTS,
    RESPONSES,
    SPANS,
    DeadLetter,
    RawTable,
    RejudgeRow,
)
from services.aggregator.ingest.spans import SpanDecodeError, decode_spans
from services.aggregator.ingest.values import (
    EPOCH,
    InvalidValue,
    clean_text,
    identifier,
    json_text,
)
from shared.events.codec import decode
from shared.events.errors import EventDecodeError
from shared.events.messages import (
    Alert,
    Evaluation,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    TokenChunk,
)
from shared.plausibility import Implausible, Plausibility
from shared.sampling import is_sampled

log = logging.getLogger(__name__)

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
        meta = event_meta(event.meta)
        if table is REQUESTS:
            return request_row(event, meta, self._sampling.sampled(meta.request_id, meta.deployment))
        if table is RESPONSES:
            return response_row(event, meta, self._sampling.sampled(meta.request_id, meta.deployment))
        if table is EVALUATIONS:
            return evaluation_row(event, meta)
        if table is REJUDGES:
            row = evaluation_row(event, meta)
            return RejudgeRow(*row, rejudge_id=identifier(event.rejudge_id, "rejudge_id"))
        return feedback_row(event, meta)


_NOT_STORED = (TokenChunk, Alert)  # a tuple: ``A | B`` would build a union type on every call
# By exact type: a dict lookup, where a chain of isinstance calls on protobuf classes costs a
# metaclass __instancecheck__ per miss.
_TABLES: dict[type, RawTable] = {
    InferenceRequest: REQUESTS,
    InferenceResponse: RESPONSES,
    Evaluation: EVALUATIONS,
    Feedback: FEEDBACK,
}
