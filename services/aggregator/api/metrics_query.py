"""The SQL behind ``/v1/deployments/{d}/metrics`` and ``/v1/runs/{run_id}``.

Every query sums rollup minutes in ``[start, end)`` for one deployment and one run id ('' for
production), grouped by step (``date_bin`` from ``start``) and variant, so a range of any
length costs one pass over its minutes, and the figures are finished in Python (figures.py).
Feedback is the exception: it is counted from its raw rows joined to their requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.aggregator.api.figures import Breakdown
from services.aggregator.db.pool import DbConnection
from services.aggregator.rollups.scales import ScaleBook
from services.aggregator.rollups.version_scales import read_versions

# Every query takes the same six parameters ($4 is the step); asyncpg wants each one used, so
# the queries without a step say "$4::interval IS NOT NULL".
_WHERE = "deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = $5 AND ($6::text IS NULL OR variant = $6)"
_STEP = "date_bin($4::interval, minute, $2) AS t"

_OPERATIONS = f"""
SELECT {_STEP}, variant, sum(requests)::bigint AS requests, sum(responses)::bigint AS responses,
       sum(ok)::bigint AS ok, sum(errors)::bigint AS errors, sum(cancelled)::bigint AS cancelled,
       sum(latency_sum_ms)::float8 AS latency_sum_ms, sum(ttft_count)::bigint AS ttft_count,
       sum(ttft_sum_ms)::float8 AS ttft_sum_ms
FROM rollup_operations WHERE {_WHERE} GROUP BY 1, 2"""

_HISTOGRAMS = f"""
SELECT {_STEP}, variant, measure, bucket, sum(count)::bigint AS count
FROM rollup_histograms WHERE {_WHERE} GROUP BY 1, 2, 3, 4"""

_TOKENS = f"""
SELECT {_STEP}, variant, model, sum(requests)::bigint AS requests, sum(calls)::bigint AS calls,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(total_tokens)::bigint AS total_tokens, sum(cost)::float8 AS cost, max(currency) AS currency,
       bool_or(cost IS NULL AND total_tokens > 0) AS unpriced
FROM rollup_token_costs WHERE {_WHERE} GROUP BY 1, 2, 3"""

# Per evaluator version (migration 0011); Breakdown keeps the version chosen for each metric.
EVALUATOR_SUMS = """sum(evaluations)::bigint AS evaluations, sum(scored)::bigint AS scored,
       sum(value_sum)::float8 AS value_sum, sum(value_sum_squares)::float8 AS value_sum_squares,
       sum(not_applicable)::bigint AS not_applicable, sum(errors)::bigint AS errors"""

_QUALITY = f"""
SELECT {_STEP}, variant, metric, evaluator_version, {EVALUATOR_SUMS}
FROM rollup_evaluator_quality WHERE {_WHERE} GROUP BY 1, 2, 3, 4"""

_VALUES = f"""
SELECT {_STEP}, variant, metric, evaluator_version, value_milli, label, sum(count)::bigint AS count
FROM rollup_evaluator_values WHERE {_WHERE} GROUP BY 1, 2, 3, 4, 5, 6"""

# The versions of each metric in the range, for choose_versions.
_VERSIONS = f"""
SELECT metric, evaluator_version, min(minute) AS first_minute, max(minute) AS last_minute,
       sum(evaluations)::bigint AS evaluations, sum(scored)::bigint AS scored
FROM rollup_evaluator_quality WHERE {_WHERE} AND $4::interval IS NOT NULL GROUP BY 1, 2"""

# Feedback from the raw rows, joined to its request at query time: the feedback event names no
# variant (the gateway's feedback route cannot know it) and may be stored before its request, so
# only here are both known. It counts under its request's minute, variant and run, and only when
# its event names the request's deployment. The bound on f.request_start_time (the request's
# start, taken from its UUIDv7 id) prunes feedback partitions before the range.
_FEEDBACK = """
SELECT date_bin($4::interval, date_trunc('minute', q.request_start_time), $2) AS t, q.variant,
       count(*)::bigint AS feedback, count(f.rating)::bigint AS rated,
       coalesce(sum(f.rating), 0)::bigint AS rating_sum, count(*) FILTER (WHERE f.comment <> '')::bigint AS comments
FROM feedback f
JOIN inference_requests q ON q.request_id = f.request_id AND q.deployment = f.deployment
WHERE f.deployment = $1 AND f.request_start_time >= $2 - interval '1 minute'
  AND q.request_start_time >= $2 AND q.request_start_time < $3 AND q.run_id = $5
  AND ($6::text IS NULL OR q.variant = $6)
GROUP BY 1, 2"""

_ERROR_TYPES = f"""
SELECT error_type, sum(count)::bigint AS count FROM rollup_operation_errors
WHERE {_WHERE} AND $4::interval IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1"""

_QUALITY_ERRORS = f"""
SELECT metric, error_type, sum(count)::bigint AS count FROM rollup_quality_errors
WHERE {_WHERE} AND $4::interval IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"""

_JUDGE = f"""
SELECT metric, judge_model, sum(calls)::bigint AS calls, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(latency_sum_ms)::float8 AS latency_sum_ms
FROM rollup_judge_tokens WHERE {_WHERE} AND $4::interval IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"""

_WINDOWS = """
SELECT monitor_id, variant, statistic, metric, count(*)::bigint AS windows,
       count(*) FILTER (WHERE violated)::bigint AS violated,
       count(*) FILTER (WHERE enough_samples)::bigint AS judged
FROM monitor_windows
WHERE deployment = $1 AND window_end > $2 AND window_end <= $3 AND ($4::text IS NULL OR variant = $4)
GROUP BY 1, 2, 3, 4 ORDER BY 1"""


@dataclass(frozen=True)
class Scope:
    deployment: str
    start: datetime
    end: datetime
    step: timedelta
    run_id: str = ""
    variant: str | None = None

    def args(self) -> tuple[Any, ...]:
        return (self.deployment, self.start, self.end, self.step, self.run_id, self.variant)

    def steps(self) -> list[datetime]:
        count = int((self.end - self.start) / self.step)
        count += (self.start + count * self.step) < self.end
        return [self.start + i * self.step for i in range(count)]


class NoSuchVersion(LookupError):
    """No metric has the asked evaluator version in the range."""


def choose_versions(rows: Iterable[Any], asked: str | None = None) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Per metric, the evaluator version its figures count, and every version seen.

    By default the latest: the version with the newest minute in the range (then the most
    outcomes, then the name, so the choice is stable while two versions share a minute during a
    rollout). ``asked`` picks that version for every metric that has it (a version names one
    evaluator's content, so usually one metric, or the outputs of one evaluation flow); the
    others keep their latest. Outcomes that record no version ('') are never chosen: they are
    counted with whichever version is (Breakdown)."""
    seen: dict[str, list[dict]] = {}
    for row in rows:
        if row["evaluator_version"] == "":
            continue
        seen.setdefault(row["metric"], []).append({
            "version": row["evaluator_version"], "first_minute": row["first_minute"].isoformat(),
            "last_minute": row["last_minute"].isoformat(), "evaluations": row["evaluations"],
            "samples": row["scored"],
        })
    chosen: dict[str, str] = {}
    for metric, versions in seen.items():
        versions.sort(key=lambda v: (v["last_minute"], v["evaluations"], v["version"]), reverse=True)
        names: list[str] = [v["version"] for v in versions]
        chosen[metric] = asked if asked is not None and asked in names else names[0]
    if asked is not None and asked not in chosen.values():
        raise NoSuchVersion(asked)
    return chosen, seen


async def read_breakdown(conn: DbConnection, scope: Scope, scales: ScaleBook | None = None,
                         version: str | None = None) -> Breakdown:
    """Every figure of the scope. Raises NoSuchVersion when ``version`` is not in the range."""
    args = scope.args()
    chosen, seen = choose_versions(await conn.fetch(_VERSIONS, *args), version)
    # Each metric's figures on the scale of the version they count (version_scales.py).
    scales = (scales or ScaleBook()).reading(await read_versions(conn, scope.deployment), chosen)
    breakdown = Breakdown(scales, chosen)
    breakdown.versions_seen = seen
    for sql, add in (
        (_OPERATIONS, breakdown.add_operations),
        (_HISTOGRAMS, breakdown.add_histogram),
        (_TOKENS, breakdown.add_tokens),
        (_QUALITY, breakdown.add_quality),
        (_VALUES, breakdown.add_values),
        (_FEEDBACK, breakdown.add_feedback),
    ):
        for row in await conn.fetch(sql, *args):
            add(row)
    return breakdown


async def extras(conn: DbConnection, scope: Scope) -> dict[str, Any]:
    """Error types, judge usage: for the whole range only."""
    args = scope.args()
    quality_errors: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(_QUALITY_ERRORS, *args):
        quality_errors.setdefault(row["metric"], {})[row["error_type"]] = row["count"]
    return {
        "errors_by_type": {r["error_type"]: r["count"] for r in await conn.fetch(_ERROR_TYPES, *args)},
        "evaluation_errors_by_type": quality_errors,
        "judge": [
            {"metric": r["metric"], "model": r["judge_model"], "calls": r["calls"],
             "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
             "mean_latency_ms": r["latency_sum_ms"] / r["calls"] if r["calls"] else None}
            for r in await conn.fetch(_JUDGE, *args)
        ],
    }


def _rate(violated: int, windows: int) -> float | None:
    return violated / windows if windows else None


async def violations(conn: DbConnection, scope: Scope) -> tuple[list[dict[str, Any]], dict[str, dict]]:
    """Per monitor, and per quality metric: windows ending in ``(start, end]``, how many were
    violated, and the violation rate (violated / evaluated)."""
    monitors = []
    per_metric: dict[str, dict[str, Any]] = {}
    for row in await conn.fetch(_WINDOWS, scope.deployment, scope.start, scope.end, scope.variant):
        monitors.append({
            "monitor_id": row["monitor_id"], "variant": row["variant"] or None, "statistic": row["statistic"],
            "metric": row["metric"] or None, "windows": row["windows"], "violations": row["violated"],
            "violation_rate": _rate(row["violated"], row["windows"]),
            "windows_with_enough_samples": row["judged"],
        })
        if row["metric"]:
            entry = per_metric.setdefault(row["metric"], {"windows": 0, "violations": 0})
            entry["windows"] += row["windows"]
            entry["violations"] += row["violated"]
    for entry in per_metric.values():
        entry["violation_rate"] = _rate(entry["violations"], entry["windows"])
    return monitors, per_metric


async def run_progress(conn: DbConnection, run_id: str, deployment: str, start: datetime,
                       end: datetime) -> dict[str, int]:
    """A batch run's requests, responses and judged requests, from the raw rows of its range."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM inference_requests WHERE run_id = $1 AND deployment = $2
                     AND request_start_time >= $3 AND request_start_time < $4) AS requests,
                  (SELECT count(*) FROM inference_responses WHERE run_id = $1 AND deployment = $2
                     AND request_start_time >= $3 AND request_start_time < $4) AS responses,
                  (SELECT count(DISTINCT request_id) FROM evaluations WHERE run_id = $1 AND deployment = $2
                     AND request_start_time >= $3 AND request_start_time < $4) AS judged,
                  (SELECT count(*) FROM evaluations WHERE run_id = $1 AND deployment = $2
                     AND request_start_time >= $3 AND request_start_time < $4) AS evaluations""",
        run_id, deployment, start, end,
    )
    assert row is not None  # a SELECT of aggregates without FROM always returns one row
    return dict(row)
