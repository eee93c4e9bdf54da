"""Rollup deltas from inserted rows (no I/O)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.aggregator.ingest.rows import (
    EVALUATIONS,
    FEEDBACK,
    REQUESTS,
    RESPONSES,
    SPANS,
    EvaluationRow,
    FeedbackRow,
    RequestRow,
    ResponseRow,
)
from services.aggregator.ingest.writer import first_per_key
from services.aggregator.rollups import tables as t
from services.aggregator.rollups.deltas import rollup_deltas, seen_ranges
from services.aggregator.rollups.histogram import bucket_of

START = datetime(2030, 1, 1, 12, 30, 45, tzinfo=UTC)
MINUTE = START.replace(second=0)
META = dict(event_time=START + timedelta(hours=3), deployment="d", variant="a", run_id="", trace_id=None)


def _request(request_id: str, start: datetime = START, run_id: str = "") -> RequestRow:
    return RequestRow(start, request_id, "e-" + request_id, **{**META, "run_id": run_id},
                      client_request_id="", streaming=False, sampled=False, inputs=None)


def _response(request_id: str, status: str = "ok", usage=(), ttft=None, latency=100.0) -> ResponseRow:
    return ResponseRow(
        START, request_id, "r-" + request_id, **META, status=status,
        error_type="timeout" if status == "error" else None, error_message=None, latency_ms=latency,
        time_to_first_token_ms=ttft, prompt_tokens=0, completion_tokens=0, total_tokens=0,
        usage=json.dumps([{"model": m, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
                          for m, p, c in usage]),
        sampled=False, outputs=None,
    )


def _evaluation(metric: str, outcome: str, score=None, judge=True) -> EvaluationRow:
    return EvaluationRow(
        START, "q1", metric, "v-" + metric, **META, outcome=outcome, score=score, reason=None,
        error_type="unparseable" if outcome == "error" else None, error_message=None,
        judge_model="j" if judge else None, judge_prompt_version="v1" if judge else None,
        judge_prompt_tokens=100 if judge else None, judge_completion_tokens=7 if judge else None,
        judge_latency_ms=10.0 if judge else None,
    )


def test_operations_and_histograms() -> None:
    deltas = rollup_deltas({
        REQUESTS: [_request("q1"), _request("q2")],
        RESPONSES: [_response("q1", ttft=20.0, latency=100.0), _response("q2", status="error", latency=100.0)],
    })
    key = ("d", MINUTE, "a", "")
    ops = dict(zip(t.OPERATIONS.value_columns, deltas[t.OPERATIONS][key], strict=True))
    assert ops == {"requests": 2, "responses": 2, "ok": 1, "errors": 1, "cancelled": 0,
                   "latency_sum_ms": 200.0, "ttft_count": 1, "ttft_sum_ms": 20.0}
    assert deltas[t.OPERATION_ERRORS] == {(*key, "timeout"): [1]}
    assert deltas[t.HISTOGRAMS] == {(*key, "latency_ms", bucket_of(100.0)): [2], (*key, "ttft_ms", bucket_of(20.0)): [1]}


def test_tokens_count_a_request_once_per_model_and_every_call() -> None:
    deltas = rollup_deltas({RESPONSES: [_response("q1", usage=[("m1", 10, 1), ("m1", 5, 2), ("m2", 3, 3)])]})
    by_model = {key[-1]: dict(zip(t.TOKENS.value_columns, v, strict=True)) for key, v in deltas[t.TOKENS].items()}
    assert by_model["m1"] == {"requests": 1, "calls": 2, "prompt_tokens": 15, "completion_tokens": 3, "total_tokens": 18}
    assert by_model["m2"]["calls"] == 1


def test_quality_histogram_pass_count_errors_and_judge_tokens() -> None:
    rows = [_evaluation("rel", "scored", 2), _evaluation("rel", "scored", 5), _evaluation("rel", "not_applicable", judge=False),
            _evaluation("rel", "error")]
    # Evaluations of the same metric share a key; make their natural ids differ only for realism.
    deltas = rollup_deltas({EVALUATIONS: rows})
    key = ("d", MINUTE, "a", "", "rel")
    quality = dict(zip(t.QUALITY.value_columns, deltas[t.QUALITY][key], strict=True))
    assert quality == {"evaluations": 4, "scored": 2, "score_sum": 7, "score_sum_squares": 29, "pass_count": 1,
                       "score_1": 0, "score_2": 1, "score_3": 0, "score_4": 0, "score_5": 1,
                       "not_applicable": 1, "errors": 1}
    assert deltas[t.QUALITY_ERRORS] == {(*key, "unparseable"): [1]}
    assert deltas[t.JUDGE_TOKENS] == {(*key, "j"): [3, 300, 21, 30.0]}


def test_minute_is_the_request_start_and_runs_are_their_own_keys() -> None:
    late = START - timedelta(hours=5)
    deltas = rollup_deltas({REQUESTS: [_request("q1", late), _request("q2", run_id="run-1")], SPANS: [object()]})
    assert set(deltas[t.OPERATIONS]) == {("d", late.replace(second=0), "a", ""), ("d", MINUTE, "a", "run-1")}
    ranges = seen_ranges({REQUESTS: [_request("q1", late), _request("q2", run_id="run-1")]})
    assert ranges[("run", "d", "run-1")] == [MINUTE, MINUTE]
    assert ranges[("variant", "d", "a")] == [late.replace(second=0), MINUTE]


def test_feedback_has_no_rollup_and_names_no_variant() -> None:
    # Its variant is its request's, known only when the two are joined at query time.
    row = FeedbackRow(START, "f1", "q1", **{**META, "variant": ""}, rating=None, comment="meh",
                      start_time_source="event", labels="{}")
    assert rollup_deltas({FEEDBACK: [row]}) == {}
    assert seen_ranges({FEEDBACK: [row]}) == {("feedback", "d", ""): [MINUTE, MINUTE]}  # notified, not recorded


def test_within_a_batch_the_first_row_per_key_wins_and_rows_come_out_sorted() -> None:
    first, again, other = _request("q2"), _request("q2")._replace(event_id="later"), _request("q1")
    assert first_per_key(REQUESTS, [first, again, other]) == [other, first]


def test_upsert_adds_every_value() -> None:
    sql = t.QUALITY.upsert_sql()
    assert "ON CONFLICT (deployment, minute, variant, run_id, metric)" in sql
    assert sql.count("EXCLUDED.") == len(t.QUALITY.values)
