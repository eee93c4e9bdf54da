"""How the CLI shows figures, alerts, traces and requests: pure functions, no services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rich.console import Console

from services.cli import formatting as fmt
from services.cli.requests import rows as request_rows
from services.cli.requests import scores_text
from services.cli.trace import build_tree

pytestmark = pytest.mark.timeout(30)


def _render(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_missing_figures_are_a_dash_never_zero() -> None:
    assert fmt.integer(None) == fmt.number(None) == fmt.percent(None) == fmt.millis(None) == fmt.NONE
    assert fmt.integer(0) == "0"
    assert fmt.integer(1234567) == "1,234,567"
    assert fmt.percent(0.1234) == "12.3%"
    assert fmt.millis(2.5) == "2.5 ms"
    assert fmt.millis(850.4) == "850 ms"
    assert fmt.millis(1234) == "1.23 s"


def test_durations() -> None:
    assert fmt.parse_duration("15m") == timedelta(minutes=15)
    assert fmt.parse_duration("1h") == timedelta(hours=1)
    assert fmt.parse_duration("90") == timedelta(seconds=90)
    for bad in ("", "0m", "1w", "-5m", "m"):
        with pytest.raises(ValueError):
            fmt.parse_duration(bad)


def test_clip_keeps_one_line() -> None:
    assert fmt.clip("a\n b   c", 10) == "a b c"
    assert fmt.clip("abcdefghijkl", 5) == "abcd…"
    assert fmt.clip(None, 5) == fmt.NONE


METRICS = {
    "deployment": "demo",
    "pass_score": 3,
    "overview": {
        "requests": 10, "errors": 1, "error_rate": 0.1,
        "tokens": {"prompt": 500, "completion": 200, "total": 700},
        "latency_ms": {"p50": 40.0, "p95": 90.0, "p99": 1500.0},
        "time_to_first_token_ms": {"p50": None},
        "quality": {"relevance": {"average": 4.25, "pass_rate": 0.75, "samples": 4,
                                  "violations": {"windows": 6, "violations": 2, "violation_rate": 1 / 3}}},
    },
    "by_variant": {
        "variant_1": {"requests": 4, "errors": 1, "error_rate": 0.25, "tokens": {"prompt": 200, "completion": 80, "total": 280},
                      "latency_ms": {"p50": 50.0}, "quality": {"relevance": {"average": 3.5, "pass_rate": 0.5, "samples": 2}}},
        "variant_0": {"requests": 6, "errors": 0, "error_rate": 0.0, "tokens": {"prompt": 300, "completion": 120, "total": 420},
                      "latency_ms": {"p50": 30.0}, "quality": {}},
    },
}


def test_metrics_table_has_a_column_for_all_traffic_and_each_variant() -> None:
    headings, rows = fmt.metrics_rows(METRICS)
    assert headings == ["", "all", "variant_0", "variant_1"]
    table = {row[0]: row[1:] for row in rows}
    assert table["requests"] == ["10", "6", "4"]
    assert table["errors"] == ["1 (10.0%)", "0 (0.0%)", "1 (25.0%)"]
    assert table["tokens total"] == ["700", "420", "280"]
    assert table["latency p99"] == ["1.50 s", fmt.NONE, fmt.NONE]
    assert table["relevance average"] == ["4.25 (n=4)", fmt.NONE, "3.50 (n=2)"]
    assert table["relevance pass rate (>= 3)"] == ["75.0%", fmt.NONE, "50.0%"]
    # Violations are counted per monitor: only the overview has them.
    assert table["relevance violations"] == ["2/6 (33.3%)", fmt.NONE, fmt.NONE]


def test_run_table_shows_the_given_variants_in_order_without_violations() -> None:
    headings, rows = fmt.metrics_rows(METRICS, ["variant_1", "variant_0", "variant_9"], violations=False)
    assert headings == ["", "variant_1", "variant_0", "variant_9"]
    labels = [row[0] for row in rows]
    assert "relevance violations" not in labels
    assert rows[0] == ["requests", "4", "6", fmt.NONE]


def _alert(**changes: object) -> dict:
    alert = {
        "eventId": "e1", "eventTime": "2030-01-01T12:03:05Z", "monitorId": "demo-relevance-variant_1",
        "deployment": "demo", "variant": "variant_1", "metric": "relevance", "statistic": "ALERT_STATISTIC_AVERAGE",
        "state": "ALERT_STATE_FIRING", "windowStart": "2030-01-01T11:58:00Z", "windowEnd": "2030-01-01T12:03:00Z",
        "value": 3.1234, "threshold": 3.5, "sampleCount": 14,
    }
    alert.update(changes)
    return alert


def test_alert_line_names_state_monitor_scope_metric_value_threshold_and_window() -> None:
    line = fmt.alert_line(_alert())
    assert "FIRING" in line
    assert "demo-relevance-variant_1" in line
    assert "demo/variant_1" in line
    assert "relevance average 3.123 < 3.5" in line
    assert "14 samples" in line
    assert fmt.short_time("2030-01-01T11:58:00Z") in line


def test_alert_line_comparisons_follow_the_statistic() -> None:
    resolved = fmt.alert_line(_alert(state="ALERT_STATE_RESOLVED", value=4.0))
    assert "RESOLVED" in resolved and "4 >= 3.5" in resolved
    latency = fmt.alert_line(_alert(statistic="ALERT_STATISTIC_LATENCY_P95", metric="latency_p95", variant="",
                                    value=0.044, threshold=0.001))
    assert "latency_p95 0.044 > 0.001" in latency
    assert " demo " in latency  # no variant: the deployment alone
    rate = fmt.alert_line(_alert(statistic="ALERT_STATISTIC_PASS_RATE", passScore=4, value=0.5, threshold=0.8))
    assert "relevance pass rate (score >= 4) 0.5 < 0.8" in rate


def test_an_api_alert_row_prints_like_a_topic_alert() -> None:
    row = {"created_at": "2030-01-01T12:03:05Z", "monitor_id": "demo-relevance-variant_1", "deployment": "demo",
           "variant": "variant_1", "statistic": "average", "metric": "relevance", "state": "firing",
           "window_start": "2030-01-01T11:58:00Z", "window_end": "2030-01-01T12:03:00Z", "value": 3.1234,
           "threshold": 3.5, "sample_count": 14}
    assert fmt.alert_line(fmt.api_alert_as_event(row)) == fmt.alert_line(_alert())


def test_alert_filter_by_deployment() -> None:
    assert fmt.alert_matches(_alert(), None)
    assert fmt.alert_matches(_alert(), "demo")
    assert not fmt.alert_matches(_alert(), "other")


def _span(name: str, service: str, duration: float, children: list | None = None, **extra: object) -> dict:
    return {"name": name, "service": service, "duration_ms": duration, "status": {"code": "UNSET"},
            "attributes": {}, "events": [], "children": children or [], **extra}


def test_trace_tree_shows_spans_nested_with_service_duration_status_and_scores() -> None:
    judge = _span("chat llmsim-judge", "processor", 64.0,
                  attributes={"gen_ai.usage.input_tokens": 392, "promptpulse.request_id": "r1", "secret.thing": "x"},
                  events=[{"name": "gen_ai.evaluation.result", "attributes": {
                      "gen_ai.evaluation.name": "coherence", "gen_ai.evaluation.score.value": 5.0,
                      "gen_ai.evaluation.explanation": "fine"}}])
    failed = _span("chat llmsim-chat", "gateway", 1500.0, status={"code": "ERROR", "message": "llm_timeout"})
    root = _span("POST /v1/deployments/{deployment}/score", "gateway", 75.0, [failed, judge],
                 attributes={"promptpulse.request_id": "r1", "http.response.status_code": 200})
    doc = {"trace_id": "a" * 32, "duration_ms": 228.0, "span_count": 3, "services": ["gateway", "processor"],
           "roots": [root]}
    text = _render(build_tree(doc))
    lines = text.splitlines()
    assert "trace " + "a" * 32 in lines[0] and "3 spans" in lines[0]
    root_line = next(i for i, line in enumerate(lines) if "POST /v1/deployments" in line)
    judge_line = next(i for i, line in enumerate(lines) if "chat llmsim-judge" in line)
    assert judge_line > root_line
    assert lines[root_line].index("POST") < lines[judge_line].index("chat")  # nested deeper
    assert "processor" in lines[judge_line] and "64 ms" in lines[judge_line]
    assert "ERROR llm_timeout" in text and "1.50 s" in text
    assert "score coherence=5" in text
    assert "gen_ai.usage.input_tokens=392" in text
    assert "secret.thing" not in text  # only the key attributes, unless asked
    assert text.count("promptpulse.request_id=r1") == 1  # not repeated under the root
    assert "secret.thing=x" in _render(build_tree(doc, all_attributes=True))


def test_requests_rows_show_question_answer_scores_and_latency() -> None:
    doc = {"requests": [{
        "start_time": "2030-01-01T12:00:00+00:00", "request_id": "r1", "variant": "variant_0",
        "inputs": {"context": "c", "question": "Why is the sky blue?"}, "outputs": {"answer": "Because."},
        "response": {"status": "ok", "latency_ms": 42.0},
        "evaluations": [{"metric": "coherence", "score": 5, "outcome": "scored"},
                        {"metric": "relevance", "score": None, "outcome": "error"}],
    }, {
        "start_time": "2030-01-01T12:00:01+00:00", "request_id": "r2", "variant": "variant_1",
        "inputs": None, "outputs": None, "response": {"status": "error"}, "evaluations": [],
    }]}
    first, second = request_rows(doc)
    assert first[1:] == ["r1", "variant_0", "Why is the sky blue?", "Because.", "coherence 5\nrelevance error", "42 ms"]
    assert second[3:] == [fmt.NONE, fmt.NONE, fmt.NONE, "error"]
    assert scores_text([{"metric": "groundedness", "outcome": "not_applicable"}]) == "groundedness n/a"
