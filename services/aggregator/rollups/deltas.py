"""Rollup deltas from the raw rows a batch really inserted (pure: no I/O).

Only rows that ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` reported as new come here, so a
redelivered event adds nothing: at-least-once delivery, exactly-once effect. Within the batch,
deltas are summed per rollup key, so each rollup row is written once per batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from services.aggregator.ingest.rows import (
    EVALUATIONS,
    FEEDBACK,
    REQUESTS,
    RESPONSES,
    EvaluationRow,
    RawTable,
    RequestRow,
    ResponseRow,
)
from services.aggregator.ingest.values import minute_of
from services.aggregator.rollups import tables as t
from services.aggregator.rollups.histogram import bucket_of
from services.aggregator.rollups.scales import value_milli
from shared.deployments import DEFAULT_SCORE_THRESHOLD

# rollup_quality keeps the 1-5 score every event carries, all evaluator versions together, for
# replicas of the previous version during a rollout; the query API and the monitors read the
# per-version rollup_evaluator_* tables (migration 0011). Its pass_count uses the default
# threshold.
PASS_SCORE = DEFAULT_SCORE_THRESHOLD


class _Accumulator:
    """Summed deltas per rollup table and key. ``values`` hands out a key's list of sums, in
    the table's value-column order, for the handlers to add into (by position: this runs for
    every new row, and keyword arguments or name lookups per value cost more than the sums)."""

    def __init__(self) -> None:
        self.deltas: t.Deltas = {}

    def values(self, table: t.RollupTable, key: tuple) -> list:
        rows = self.deltas.get(table)
        if rows is None:
            rows = self.deltas[table] = {}
        sums = rows.get(key)
        if sums is None:
            sums = rows[key] = [0] * len(table.values)
        return sums


def _positions(table: t.RollupTable, *columns: str) -> tuple[int, ...]:
    """Where each named value column sits in the table's sums (checked at import)."""
    return tuple(table.value_columns.index(column) for column in columns)


(_REQUESTS,) = _positions(t.OPERATIONS, "requests")
_RESPONSES, _OK, _ERRORS, _CANCELLED, _LATENCY_SUM, _TTFT_COUNT, _TTFT_SUM = _positions(
    t.OPERATIONS, "responses", "ok", "errors", "cancelled", "latency_sum_ms", "ttft_count", "ttft_sum_ms"
)
_STATUS_COUNT = {"ok": _OK, "error": _ERRORS, "cancelled": _CANCELLED}
_TOKEN_SUMS = _positions(t.TOKENS, "requests", "calls", "prompt_tokens", "completion_tokens", "total_tokens")
_EVALUATIONS, _SCORED, _SCORE_SUM, _SCORE_SQUARES, _PASS_COUNT, _NOT_APPLICABLE, _EVAL_ERRORS = _positions(
    t.QUALITY, "evaluations", "scored", "score_sum", "score_sum_squares", "pass_count", "not_applicable", "errors"
)
_SCORE_COUNT = dict(zip(range(1, 6), _positions(t.QUALITY, *(f"score_{s}" for s in range(1, 6))), strict=True))
_E_EVALUATIONS, _E_SCORED, _E_SUM, _E_SQUARES, _E_NOT_APPLICABLE, _E_ERRORS = _positions(
    t.EVALUATOR_QUALITY, "evaluations", "scored", "value_sum", "value_sum_squares", "not_applicable", "errors"
)
_JUDGE_SUMS = _positions(t.JUDGE_TOKENS, "calls", "prompt_tokens", "completion_tokens", "latency_sum_ms")


def _base(row: Any) -> tuple[str, datetime, str, str]:
    return (row.deployment, minute_of(row.request_start_time), row.variant, row.run_id)


def _request(acc: _Accumulator, row: RequestRow) -> None:
    acc.values(t.OPERATIONS, _base(row))[_REQUESTS] += 1


def _response(acc: _Accumulator, row: ResponseRow) -> None:
    base = _base(row)
    ops = acc.values(t.OPERATIONS, base)
    ops[_RESPONSES] += 1
    status = row.status
    if status in _STATUS_COUNT:  # "unspecified" counts as a response only
        ops[_STATUS_COUNT[status]] += 1
    ops[_LATENCY_SUM] += row.latency_ms
    ttft = row.time_to_first_token_ms
    if status == "error":
        acc.values(t.OPERATION_ERRORS, (*base, row.error_type))[0] += 1
    acc.values(t.HISTOGRAMS, (*base, t.LATENCY, bucket_of(row.latency_ms)))[0] += 1
    if ttft is not None:
        ops[_TTFT_COUNT] += 1
        ops[_TTFT_SUM] += ttft
        acc.values(t.HISTOGRAMS, (*base, t.TTFT, bucket_of(ttft)))[0] += 1
    models: dict[str, list[int]] = {}
    for call in json.loads(row.usage):
        sums = models.get(call["model"])
        if sums is None:
            sums = models[call["model"]] = [1, 0, 0, 0, 0]  # requests: once per model
        sums[1] += 1
        sums[2] += call["prompt_tokens"]
        sums[3] += call["completion_tokens"]
        sums[4] += call["total_tokens"]
    for model, sums in models.items():
        tokens = acc.values(t.TOKENS, (*base, model))
        for position, value in zip(_TOKEN_SUMS, sums, strict=True):
            tokens[position] += value


def _evaluation(acc: _Accumulator, row: EvaluationRow) -> None:
    key = (*_base(row), row.metric)
    versioned = (*key, row.evaluator_version)
    quality = acc.values(t.QUALITY, key)
    quality[_EVALUATIONS] += 1
    own = acc.values(t.EVALUATOR_QUALITY, versioned)
    own[_E_EVALUATIONS] += 1
    outcome = row.outcome
    if outcome == "scored":
        score = row.score
        assert score is not None  # event_rows.py gives every scored row its score
        value = row.value if row.value is not None else float(score)  # no value: the score is it
        own[_E_SCORED] += 1
        own[_E_SUM] += value
        own[_E_SQUARES] += value * value
        acc.values(t.EVALUATOR_VALUES, (*versioned, value_milli(value), row.label))[0] += 1
        quality[_SCORED] += 1
        quality[_SCORE_SUM] += score
        quality[_SCORE_SQUARES] += score * score
        quality[_PASS_COUNT] += score >= PASS_SCORE
        if score in _SCORE_COUNT:  # always, for a validated event (scores are 1..5)
            quality[_SCORE_COUNT[score]] += 1
    elif outcome == "not_applicable":
        quality[_NOT_APPLICABLE] += 1
        own[_E_NOT_APPLICABLE] += 1
    else:
        quality[_EVAL_ERRORS] += 1
        own[_E_ERRORS] += 1
        acc.values(t.QUALITY_ERRORS, (*key, row.error_type))[0] += 1
    if row.judge_model is not None:
        judge = acc.values(t.JUDGE_TOKENS, (*key, row.judge_model))
        calls, prompt, completion, latency = _JUDGE_SUMS
        judge[calls] += 1
        # event_rows.py sets these with judge_model (None only without a judge call)
        judge[prompt] += row.judge_prompt_tokens or 0
        judge[completion] += row.judge_completion_tokens or 0
        judge[latency] += row.judge_latency_ms or 0.0


# Feedback has no rollup: its event names no variant and may come before its request, so the
# query API counts it from the raw rows, joined to the request (api/metrics_query.py).
_HANDLERS: dict[RawTable, Callable[[_Accumulator, Any], None]] = {
    REQUESTS: _request, RESPONSES: _response, EVALUATIONS: _evaluation,
}


def rollup_deltas(inserted: Mapping[RawTable, Iterable[Any]]) -> t.Deltas:
    """Summed deltas per rollup table and key for the newly inserted rows (spans and feedback add none)."""
    acc = _Accumulator()
    for table, rows in inserted.items():
        handler = _HANDLERS.get(table)
        if handler is None:
            continue
        for row in rows:
            handler(acc, row)
    return acc.deltas


def seen_ranges(inserted: Mapping[RawTable, Iterable[Any]]) -> dict[tuple[str, str], list[datetime]]:
    """("variant", deployment, variant) and ("run", deployment, run id) -> [first minute, last
    minute], from the rows that name them; ("feedback", deployment, "") for feedback, which names
    no variant of its own (its ranges only tell the live stream which minutes changed)."""
    # First and last start per (deployment, variant, run id); minutes only at the end, since
    # the minute of the earliest start is the earliest minute.
    starts: dict[tuple[str, str | None, str], list[datetime]] = {}
    for table, rows in inserted.items():
        if table not in _HANDLERS and table is not FEEDBACK:
            continue
        for row in rows:
            key = (row.deployment, None if table is FEEDBACK else row.variant, row.run_id)
            start = row.request_start_time
            span = starts.get(key)
            if span is None:
                starts[key] = [start, start]
            elif start < span[0]:
                span[0] = start
            elif start > span[1]:
                span[1] = start
    ranges: dict[tuple, list[datetime]] = {}

    def widen(key: tuple, first: datetime, last: datetime) -> None:
        span = ranges.get(key)
        if span is None:
            ranges[key] = [first, last]
        else:
            span[0] = min(span[0], first)
            span[1] = max(span[1], last)

    for (deployment, variant, run_id), (first, last) in starts.items():
        first, last = minute_of(first), minute_of(last)
        if variant is None:
            widen(("feedback", deployment, ""), first, last)
            continue
        widen(("variant", deployment, variant), first, last)
        if run_id:
            widen(("run", deployment, run_id), first, last)
    return ranges
