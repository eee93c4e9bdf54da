"""Rollup deltas from the raw rows a batch really inserted (pure: no I/O).

Only rows that ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` reported as new come here, so a
redelivered event adds nothing: at-least-once delivery, exactly-once effect. Within the batch,
deltas are summed per rollup key, so each rollup row is written once per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from services.aggregator.ingest.rows import (
    EVALUATIONS,
    FEEDBACK,
    REQUESTS,
    RESPONSES,
    EvaluationRow,
    FeedbackRow,
    RawTable,
    RequestRow,
    ResponseRow,
)
from services.aggregator.ingest.values import minute_of
from services.aggregator.rollups import tables as t
from services.aggregator.rollups.histogram import bucket_of
from shared.deployments import DEFAULT_SCORE_THRESHOLD

# pass_count in rollup_quality uses the default threshold; another threshold is read from the
# score_1..score_5 histogram at query time.
PASS_SCORE = DEFAULT_SCORE_THRESHOLD


class _Accumulator:
    def __init__(self) -> None:
        self.deltas: t.Deltas = {}

    def add(self, table: t.RollupTable, key: tuple, **values: float) -> None:
        rows = self.deltas.setdefault(table, {})
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0] * len(table.values)
        for index, column in enumerate(table.value_columns):
            if column in values:
                row[index] += values[column]


def _base(row: Any) -> tuple[str, datetime, str, str]:
    return (row.deployment, minute_of(row.request_start_time), row.variant, row.run_id)


def _request(acc: _Accumulator, row: RequestRow) -> None:
    acc.add(t.OPERATIONS, _base(row), requests=1)


def _response(acc: _Accumulator, row: ResponseRow) -> None:
    base = _base(row)
    ttft = row.time_to_first_token_ms
    acc.add(
        t.OPERATIONS,
        base,
        responses=1,
        ok=int(row.status == "ok"),
        errors=int(row.status == "error"),
        cancelled=int(row.status == "cancelled"),
        latency_sum_ms=row.latency_ms,
        ttft_count=int(ttft is not None),
        ttft_sum_ms=ttft or 0.0,
    )
    if row.status == "error":
        acc.add(t.OPERATION_ERRORS, (*base, row.error_type), count=1)
    acc.add(t.HISTOGRAMS, (*base, t.LATENCY, bucket_of(row.latency_ms)), count=1)
    if ttft is not None:
        acc.add(t.HISTOGRAMS, (*base, t.TTFT, bucket_of(ttft)), count=1)
    models: dict[str, list[int]] = {}
    for call in json.loads(row.usage):
        sums = models.setdefault(call["model"], [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += call["prompt_tokens"]
        sums[2] += call["completion_tokens"]
        sums[3] += call["total_tokens"]
    for model, (calls, prompt, completion, total) in models.items():
        acc.add(
            t.TOKENS,
            (*base, model),
            requests=1,
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
        )


def _evaluation(acc: _Accumulator, row: EvaluationRow) -> None:
    base = _base(row)
    key = (*base, row.metric)
    if row.outcome == "scored":
        score = row.score
        acc.add(
            t.QUALITY,
            key,
            evaluations=1,
            scored=1,
            score_sum=score,
            score_sum_squares=score * score,
            pass_count=int(score >= PASS_SCORE),
            **{f"score_{score}": 1},
        )
    elif row.outcome == "not_applicable":
        acc.add(t.QUALITY, key, evaluations=1, not_applicable=1)
    else:
        acc.add(t.QUALITY, key, evaluations=1, errors=1)
        acc.add(t.QUALITY_ERRORS, (*key, row.error_type), count=1)
    if row.judge_model is not None:
        acc.add(
            t.JUDGE_TOKENS,
            (*key, row.judge_model),
            calls=1,
            prompt_tokens=row.judge_prompt_tokens,
            completion_tokens=row.judge_completion_tokens,
            latency_sum_ms=row.judge_latency_ms,
        )


def _feedback(acc: _Accumulator, row: FeedbackRow) -> None:
    acc.add(
        t.FEEDBACK,
        _base(row),
        feedback=1,
        rated=int(row.rating is not None),
        rating_sum=row.rating or 0,
        comments=int(bool(row.comment)),
    )


_HANDLERS = {REQUESTS: _request, RESPONSES: _response, EVALUATIONS: _evaluation, FEEDBACK: _feedback}


def rollup_deltas(inserted: Mapping[RawTable, Iterable[Any]]) -> t.Deltas:
    """Summed deltas per rollup table and key for the newly inserted rows (spans add none)."""
    acc = _Accumulator()
    for table, rows in inserted.items():
        handler = _HANDLERS.get(table)
        if handler is None:
            continue
        for row in rows:
            handler(acc, row)
    return acc.deltas


def seen_ranges(inserted: Mapping[RawTable, Iterable[Any]]) -> dict[tuple[str, str], list[datetime]]:
    """(deployment, variant) or ("run", run_id, deployment) -> [first minute, last minute]."""
    ranges: dict[tuple, list[datetime]] = {}

    def widen(key: tuple, minute: datetime) -> None:
        span = ranges.get(key)
        if span is None:
            ranges[key] = [minute, minute]
        else:
            span[0] = min(span[0], minute)
            span[1] = max(span[1], minute)

    for table, rows in inserted.items():
        if table not in _HANDLERS:
            continue
        for row in rows:
            minute = minute_of(row.request_start_time)
            widen(("variant", row.deployment, row.variant), minute)
            if row.run_id:
                widen(("run", row.deployment, row.run_id), minute)
    return ranges
