"""Rollups recomputed offline from the raw rows, in plain SQL, to check the stored ones against:
what the aggregator's ingest keeps up incrementally, worked out again from scratch."""

from __future__ import annotations

import math
from typing import Any

import asyncpg

_MIN = "date_trunc('minute', {col})"
_BUCKET = "ceil(ln(least(greatest({x}, 0.001::float8), 1e7::float8)) / ln(1.01::float8 / 0.99::float8))::int"

RECOMPUTE: dict[str, str] = {
    "rollup_operations": f"""
        WITH q AS (SELECT deployment, {_MIN.format(col='request_start_time')} AS minute, variant, run_id,
                          count(*) AS requests FROM inference_requests GROUP BY 1, 2, 3, 4),
             r AS (SELECT deployment, {_MIN.format(col='request_start_time')} AS minute, variant, run_id,
                          count(*) AS responses,
                          count(*) FILTER (WHERE status = 'ok') AS ok,
                          count(*) FILTER (WHERE status = 'error') AS errors,
                          count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                          sum(latency_ms) AS latency_sum_ms,
                          count(time_to_first_token_ms) AS ttft_count,
                          coalesce(sum(time_to_first_token_ms), 0) AS ttft_sum_ms
                   FROM inference_responses GROUP BY 1, 2, 3, 4)
        SELECT deployment, minute, variant, run_id, coalesce(q.requests, 0), coalesce(r.responses, 0),
               coalesce(r.ok, 0), coalesce(r.errors, 0), coalesce(r.cancelled, 0),
               coalesce(r.latency_sum_ms, 0), coalesce(r.ttft_count, 0), coalesce(r.ttft_sum_ms, 0)
        FROM q FULL JOIN r USING (deployment, minute, variant, run_id)""",
    "rollup_operation_errors": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, error_type, count(*)
        FROM inference_responses WHERE status = 'error' GROUP BY 1, 2, 3, 4, 5""",
    "rollup_histograms": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, 'latency_ms',
               {_BUCKET.format(x='latency_ms')}, count(*)
        FROM inference_responses GROUP BY 1, 2, 3, 4, 5, 6
        UNION ALL
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, 'ttft_ms',
               {_BUCKET.format(x='time_to_first_token_ms')}, count(*)
        FROM inference_responses WHERE time_to_first_token_ms IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6""",
    "rollup_quality": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, metric,
               count(*), count(*) FILTER (WHERE outcome = 'scored'), coalesce(sum(score), 0),
               coalesce(sum(score * score), 0), count(*) FILTER (WHERE score >= 3),
               count(*) FILTER (WHERE score = 1), count(*) FILTER (WHERE score = 2),
               count(*) FILTER (WHERE score = 3), count(*) FILTER (WHERE score = 4),
               count(*) FILTER (WHERE score = 5), count(*) FILTER (WHERE outcome = 'not_applicable'),
               count(*) FILTER (WHERE outcome = 'error')
        FROM evaluations GROUP BY 1, 2, 3, 4, 5""",
    "rollup_evaluator_quality": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, metric, evaluator_version,
               count(*), count(*) FILTER (WHERE outcome = 'scored'), coalesce(sum(value), 0),
               coalesce(sum(value * value), 0), count(*) FILTER (WHERE outcome = 'not_applicable'),
               count(*) FILTER (WHERE outcome = 'error')
        FROM evaluations GROUP BY 1, 2, 3, 4, 5, 6""",
    "rollup_evaluator_values": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, metric, evaluator_version,
               floor(value * 1000 + 1e-6)::bigint, label, count(*)
        FROM evaluations WHERE outcome = 'scored' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8""",
    "rollup_quality_errors": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, metric, error_type, count(*)
        FROM evaluations WHERE outcome = 'error' GROUP BY 1, 2, 3, 4, 5, 6""",
    "rollup_judge_tokens": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, metric, judge_model,
               count(*), sum(judge_prompt_tokens), sum(judge_completion_tokens), sum(judge_latency_ms)
        FROM evaluations WHERE judge_model IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6""",
    "rollup_tokens": f"""
        SELECT deployment, {_MIN.format(col='request_start_time')}, variant, run_id, u->>'model',
               count(DISTINCT request_id), count(*), sum((u->>'prompt_tokens')::bigint),
               sum((u->>'completion_tokens')::bigint), sum((u->>'total_tokens')::bigint)
        FROM inference_responses CROSS JOIN LATERAL jsonb_array_elements(usage) AS u
        GROUP BY 1, 2, 3, 4, 5""",
}
# Key width of each rollup (the leading columns of RECOMPUTE's select lists and of the table).
KEY_WIDTH = {
    "rollup_operations": 4,
    "rollup_operation_errors": 5,
    "rollup_histograms": 6,
    "rollup_quality": 5,
    "rollup_evaluator_quality": 6,
    "rollup_evaluator_values": 8,
    "rollup_quality_errors": 6,
    "rollup_judge_tokens": 6,
    "rollup_tokens": 5,
}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


async def rollup_mismatches(dsn: str) -> dict[str, list[str]]:
    """Per rollup table, what differs between the stored rollups and their recomputation from
    the raw rows (empty when they agree)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        problems: dict[str, list[str]] = {}
        for table, query in RECOMPUTE.items():
            width = KEY_WIDTH[table]
            expected = {tuple(r[:width]): tuple(r[width:]) for r in await conn.fetch(query)}
            stored_rows = await conn.fetch(f"SELECT * FROM {table}")
            stored = {tuple(r[:width]): tuple(r[width:]) for r in stored_rows}
            found = []
            for key in sorted(set(expected) | set(stored), key=repr):
                want, have = expected.get(key), stored.get(key)
                if want is None or have is None or not all(_close(a, b) for a, b in zip(want, have, strict=True)):
                    found.append(f"{key}: recomputed {want} stored {have}")
            if found:
                problems[table] = found
        return problems
    finally:
        await conn.close()


async def rollup_snapshot(dsn: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: sorted((tuple(r) for r in await conn.fetch(f"SELECT * FROM {table}")), key=repr)
            for table in RECOMPUTE
        }
    finally:
        await conn.close()
