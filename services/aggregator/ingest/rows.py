"""Raw rows as they enter Postgres, one NamedTuple per raw table, fields in column order.

Each :class:`RawTable` names its natural key: the unique key the table deduplicates on
(``ON CONFLICT DO NOTHING``), which always includes the partition key (the request's start
time; a span's own start time for spans, which carry no request). JSON columns hold JSON text,
which asyncpg's jsonb codec sends as it is. Column types live in the migrations (0002).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import attrgetter
from typing import Any, NamedTuple


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


@dataclass(frozen=True)
class RawTable:
    name: str
    row: type
    key: tuple[str, ...]
    # Only tables that feed rollups need to know which rows were new.
    feeds_rollups: bool = True

    @property
    def columns(self) -> tuple[str, ...]:
        return self.row._fields

    @property
    def stage(self) -> str:
        """The session's temporary table the batch's rows are copied into first."""
        return f"stage_{self.name}"

    def key_of(self, row: Any) -> tuple:
        return _key_getter(self)(row)

    def insert_sql(self) -> str:
        """Move the staged rows in, skipping known keys; returns the new keys when they feed rollups."""
        cols = ", ".join(self.columns)
        key = ", ".join(self.key)
        sql = (
            f"INSERT INTO {self.name} ({cols}) SELECT {cols} FROM {self.stage} ORDER BY {key} "
            "ON CONFLICT DO NOTHING"
        )
        return f"{sql} RETURNING {key}" if self.feeds_rollups else sql


@cache
def _key_getter(table: RawTable):
    getter = attrgetter(*table.key)
    return getter if len(table.key) > 1 else lambda row: (getter(row),)


REQUESTS = RawTable("inference_requests", RequestRow, ("request_id", "request_start_time"))
RESPONSES = RawTable("inference_responses", ResponseRow, ("request_id", "request_start_time"))
EVALUATIONS = RawTable("evaluations", EvaluationRow, ("request_id", "metric", "request_start_time"))
FEEDBACK = RawTable("feedback", FeedbackRow, ("event_id", "request_start_time"))
SPANS = RawTable("spans", SpanRow, ("trace_id", "span_id", "start_time"), feeds_rollups=False)

# Insert order inside a batch transaction; fixed, so concurrent aggregators lock in one order.
RAW_TABLES: tuple[RawTable, ...] = (REQUESTS, RESPONSES, EVALUATIONS, FEEDBACK, SPANS)

# Staging tables, one set per Postgres session: a batch's rows are copied in (binary COPY is
# far cheaper to encode than one array parameter per column), then moved with one INSERT.
# ON COMMIT DELETE ROWS empties them at every commit; a rollback takes the copy back too.
STAGING_SQL = (
    "DO $$ BEGIN IF to_regclass('pg_temp.stage_spans') IS NULL THEN "
    + " ".join(
        f"CREATE TEMP TABLE {t.stage} (LIKE {t.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
        for t in RAW_TABLES
    )
    + " END IF; END $$"
)
