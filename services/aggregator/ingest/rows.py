"""Raw rows as they enter Postgres, one NamedTuple per raw table, fields in column order.

Each :class:`RawTable` names its natural key: the unique key the table deduplicates on
(``ON CONFLICT DO NOTHING``), which always includes the partition key (the request's start
time; a span's own start time for spans, which carry no request). JSON columns hold JSON text,
which asyncpg's jsonb codec sends as it is. Column types live in the migrations (0002).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from services.aggregator.ingest import staging


class RequestRow(NamedTuple):
    request_start_time: datetime
    request_id: str
    event_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None
    client_request_id: str
    streaming: bool
    sampled: bool
    inputs: str | None  # JSON text, only when sampled or part of a batch run


class ResponseRow(NamedTuple):
    request_start_time: datetime
    request_id: str
    event_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None
    status: str  # ok | error | cancelled | unspecified
    error_type: str | None
    error_message: str | None
    latency_ms: float
    time_to_first_token_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage: str  # JSON text: [{"node", "model", "prompt_tokens", "completion_tokens", "total_tokens"}]
    sampled: bool
    outputs: str | None


class EvaluationRow(NamedTuple):
    request_start_time: datetime
    request_id: str
    metric: str
    event_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None
    outcome: str  # scored | not_applicable | error
    score: int | None
    reason: str | None
    error_type: str | None
    error_message: str | None
    judge_model: str | None
    judge_prompt_version: str | None
    judge_prompt_tokens: int | None
    judge_completion_tokens: int | None
    judge_latency_ms: float | None
    # Defaults: what an event written before evaluators had names and scales stands for (the
    # decoder fills them in; the defaults keep rows built by hand short).
    evaluator: str = ""
    evaluator_version: str = ""
    value: float | None = None  # on the evaluator's scale, when scored
    label: str = ""


class RejudgeRow(NamedTuple):
    """An outcome of re-judging past traffic: an EvaluationRow and the re-judge's id."""

    request_start_time: datetime
    request_id: str
    metric: str
    event_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None
    outcome: str
    score: int | None
    reason: str | None
    error_type: str | None
    error_message: str | None
    judge_model: str | None
    judge_prompt_version: str | None
    judge_prompt_tokens: int | None
    judge_completion_tokens: int | None
    judge_latency_ms: float | None
    evaluator: str
    evaluator_version: str
    value: float | None
    label: str
    rejudge_id: str


class FeedbackRow(NamedTuple):
    request_start_time: datetime
    event_id: str
    request_id: str
    event_time: datetime
    deployment: str
    variant: str
    run_id: str
    trace_id: str | None
    rating: int | None
    comment: str
    start_time_source: str  # event | request_id | event_time
    labels: str  # JSON object: metric -> a person's score on its scale


class SpanRow(NamedTuple):
    start_time: datetime
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    end_time: datetime
    duration_ms: float
    status_code: str  # unset | ok | error
    status_message: str
    service_name: str
    scope_name: str
    attributes: str  # JSON object
    events: str  # JSON list
    resource: str  # JSON object
    request_id: str | None
    deployment: str | None


class DeadLetter(NamedTuple):
    topic: str
    kafka_partition: int
    kafka_offset: int
    kafka_timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: str  # JSON list of {"name", "value"}
    reason: str
    detail: str


# eq=False: hashed and compared by identity. Each table is one module-level constant, and it
# keys a dict once per row, where a generated field-by-field __hash__ costs more than the row.
@dataclass(frozen=True, eq=False)
class RawTable:
    name: str
    row: type[tuple[Any, ...]]  # a NamedTuple class, fields in column order
    key: tuple[str, ...]
    times: tuple[str, ...]  # timestamptz columns: staged as microseconds (staging.py)
    # Only tables that feed rollups need to know which rows were new.
    feeds_rollups: bool = True

    def __post_init__(self) -> None:
        unknown = (set(self.key) | set(self.times)) - set(self.columns)
        if unknown:
            raise ValueError(f"{self.name}: {sorted(unknown)} are not columns")

    @property
    def columns(self) -> tuple[str, ...]:
        # typing has no type for "some NamedTuple class" (mypy takes _fields for an instance
        # attribute, so no Protocol matches the class either).
        return self.row._fields  # type: ignore[attr-defined]

    @property
    def stage(self) -> str:
        """The session's temporary table the batch's rows are copied into first."""
        return f"stage_{self.name}"

    def key_of(self, row: Any) -> tuple:
        return _key_getter(self)(row)

    @property
    def numbered(self) -> bool:
        """Whether staged rows carry their batch number (see ``insert_sql``)."""
        return not self.feeds_rollups

    @property
    def staged_columns(self) -> tuple[str, ...]:
        return (*self.columns, staging.ORDINAL) if self.numbered else self.columns

    def staging_sql(self) -> str:
        return staging.create_sql(self.stage, self.name, self.columns, self.times, numbered=self.numbered)

    def wire(self, rows: list[Any]) -> list[list]:
        """The rows as they are copied into the stage (staging.py)."""
        return staging.wire_rows(rows, _time_positions(self), numbered=self.numbered)

    def wire_key(self, values: list) -> tuple:
        """A staged row's natural key, times as microseconds: strings and integers, cheap to hash
        (a key with an aware datetime costs two tzinfo calls to hash)."""
        return _wire_key_getter(self)(values)

    def insert_sql(self) -> str:
        """Move the staged rows in, in natural-key order (so concurrent aggregators lock keys in
        one order), skipping known keys.

        A table that feeds rollups is staged one row per key (the writer keeps the first) and
        the statement returns the keys really inserted, as ``wire_key`` gives them. A table that
        feeds none is staged as it came, numbered: equal keys go in by batch number, so the
        first wins and every later copy conflicts with it."""
        cols = ", ".join(self.columns)
        order = ", ".join((*self.key, staging.ORDINAL) if self.numbered else self.key)  # staged times sort like the times
        insert = (
            f"INSERT INTO {self.name} ({cols}) SELECT {staging.select_list(self.columns, self.times)} "
            f"FROM {self.stage} ORDER BY {order} ON CONFLICT DO NOTHING"
        )
        if not self.feeds_rollups:
            return insert
        returning = ", ".join(staging.micros_sql(k) if k in self.times else k for k in self.key)
        return f"{insert} RETURNING {returning}"


@cache
def _key_getter(table: RawTable) -> Callable[[Any], tuple[Any, ...]]:
    getter = attrgetter(*table.key)
    return getter if len(table.key) > 1 else lambda row: (getter(row),)


@cache
def _time_positions(table: RawTable) -> tuple[int, ...]:
    return tuple(table.columns.index(column) for column in table.times)


@cache
def _wire_key_getter(table: RawTable) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    getter = itemgetter(*(table.columns.index(column) for column in table.key))
    return getter if len(table.key) > 1 else lambda values: (getter(values),)


_START_AND_EVENT = ("request_start_time", "event_time")
REQUESTS = RawTable("inference_requests", RequestRow, ("request_id", "request_start_time"), _START_AND_EVENT)
RESPONSES = RawTable("inference_responses", ResponseRow, ("request_id", "request_start_time"), _START_AND_EVENT)
_OUTCOME_KEY = ("request_id", "metric", "evaluator_version", "request_start_time")
EVALUATIONS = RawTable("evaluations", EvaluationRow, _OUTCOME_KEY, _START_AND_EVENT)
# Re-judged outcomes feed no rollup: stored once per key, first in batch order wins.
REJUDGES = RawTable("rejudge_evaluations", RejudgeRow, _OUTCOME_KEY, _START_AND_EVENT, feeds_rollups=False)
FEEDBACK = RawTable("feedback", FeedbackRow, ("event_id", "request_start_time"), _START_AND_EVENT)
SPANS = RawTable(
    "spans", SpanRow, ("trace_id", "span_id", "start_time"), ("start_time", "end_time"), feeds_rollups=False
)

# Insert order inside a batch transaction: alphabetical, the order in which day-partition
# creation locks the tables (writer.py, "Lock order"); fixed, so concurrent aggregators lock in
# one order too.
RAW_TABLES: tuple[RawTable, ...] = (EVALUATIONS, FEEDBACK, REQUESTS, RESPONSES, REJUDGES, SPANS)
