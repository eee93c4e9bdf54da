"""The SQL behind ``/v1/deployments/{d}/requests``: requests with their payloads, answers,
judge verdicts and feedback, newest first, one keyset page at a time.

Feedback shows on a request only when its event names the request's deployment: a key for one
deployment cannot attach feedback to another's requests (request ids are no secret).

The page key is (request start time, request id), both in the raw tables' primary key, so the
next page starts where the last one ended whatever was inserted meanwhile, and a deep page
costs what the first one does (no OFFSET).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.aggregator.db.pool import DbConnection

_SELECT = """
SELECT q.request_start_time, q.request_id, q.deployment, q.variant, q.run_id, q.trace_id, q.client_request_id,
       q.streaming, q.sampled, q.inputs::text AS inputs,
       r.status, r.error_type, r.error_message, r.latency_ms, r.time_to_first_token_ms,
       r.prompt_tokens, r.completion_tokens, r.total_tokens, r.usage::text AS usage, r.outputs::text AS outputs,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'metric', e.metric, 'outcome', e.outcome, 'score', e.score, 'reason', e.reason,
                   'error_type', e.error_type, 'judge_model', e.judge_model,
                   'judge_prompt_version', e.judge_prompt_version, 'evaluator', e.evaluator,
                   'evaluator_version', e.evaluator_version, 'value', e.value, 'label', e.label)
                   ORDER BY e.metric, e.evaluator_version), '[]'::jsonb)::text
          FROM evaluations e
         WHERE e.request_id = q.request_id AND e.request_start_time = q.request_start_time) AS evaluations,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'rating', f.rating, 'comment', f.comment, 'time', f.event_time) ORDER BY f.event_time), '[]'::jsonb)::text
          FROM feedback f
         WHERE f.request_id = q.request_id AND f.deployment = q.deployment) AS feedback
FROM inference_requests q
LEFT JOIN inference_responses r
       ON r.request_id = q.request_id AND r.request_start_time = q.request_start_time
"""

_PAGE_SQL = _SELECT + """
WHERE q.deployment = $1 AND q.run_id = $2
  AND (NOT $3 OR q.sampled OR q.run_id <> '')
  AND ($4::text IS NULL OR q.variant = $4)
  AND ($5::timestamptz IS NULL OR q.request_start_time >= $5)
  AND ($6::timestamptz IS NULL OR q.request_start_time < $6)
  AND ($7::timestamptz IS NULL OR (q.request_start_time, q.request_id) < ($7, $8::text))
ORDER BY q.request_start_time DESC, q.request_id DESC
LIMIT $9
"""

# One request by id. The primary key of every partition leads with request_id, so this is one
# index probe per day kept, whatever the day; a request id may (in theory) repeat across days,
# so the newest wins.
_ONE_SQL = _SELECT + """
WHERE q.request_id = $1
ORDER BY q.request_start_time DESC
LIMIT 1
"""


@dataclass(frozen=True)
class RequestFilter:
    deployment: str
    run_id: str = ""
    sampled_only: bool = True
    variant: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _row(row: asyncpg.Record) -> dict[str, Any]:
    response = None
    if row["status"] is not None:
        response = {
            "status": row["status"],
            "error_type": row["error_type"],
            "error_message": row["error_message"],
            "latency_ms": row["latency_ms"],
            "time_to_first_token_ms": row["time_to_first_token_ms"],
            "tokens": {"prompt": row["prompt_tokens"], "completion": row["completion_tokens"],
                       "total": row["total_tokens"]},
            "usage": _json(row["usage"]),
        }
    return {
        "request_id": row["request_id"],
        "deployment": row["deployment"],
        "start_time": row["request_start_time"].isoformat(),
        "variant": row["variant"],
        "run_id": row["run_id"] or None,
        "trace_id": row["trace_id"],
        "client_request_id": row["client_request_id"] or None,
        "streaming": row["streaming"],
        "sampled": row["sampled"],
        "inputs": _json(row["inputs"]),
        "outputs": _json(row["outputs"]),
        "response": response,
        "evaluations": _json(row["evaluations"]),
        "feedback": _json(row["feedback"]),
    }


async def read_requests(
    conn: DbConnection, where: RequestFilter, limit: int, after: tuple[datetime, str] | None
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """One page (newest first) and the key to continue after it (None on the last page)."""
    rows = await conn.fetch(
        _PAGE_SQL, where.deployment, where.run_id, where.sampled_only, where.variant, where.start, where.end,
        after[0] if after else None, after[1] if after else None, limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    last = (rows[-1]["request_start_time"], rows[-1]["request_id"]) if more and rows else None
    return [_row(r) for r in rows], last


async def read_request(conn: DbConnection, request_id: str) -> dict[str, Any] | None:
    """One request as a page lists it, whatever its deployment, or None if none is stored."""
    row = await conn.fetchrow(_ONE_SQL, request_id)
    return None if row is None else _row(row)
