"""shared/prometheus.py: every service's /metrics, read from its state and written by prometheus_client."""

from __future__ import annotations

import math

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from shared.prometheus import PROMETHEUS, Families, ServiceMetrics, metrics_handler
from tests.support.prometheus_text import samples, types, value


def test_families_render_counters_gauges_with_escaped_labels_and_help() -> None:
    def read(out: Families) -> None:
        out.counter("records_total", "Records.").add(12345678901)
        out.add("counter", "rows_total", "Rows\nby table.", 3, table='we"ird\\')
        out.add("gauge", "up", "Up.", True)
        out.counter("rows_total", "ignored: the family exists", ["table"]).add(4, table="plain")

    text = ServiceMetrics("pp_", read).text().decode()
    assert "# HELP pp_rows_total Rows\\nby table.\n# TYPE pp_rows_total counter\n" in text
    assert text.count("# TYPE pp_rows_total") == 1  # one family, filled from two places
    assert 'pp_rows_total{table="we\\"ird\\\\"} 3.0\n' in text
    assert value(text, "pp_records_total") == 12345678901
    assert value(text, "pp_rows_total", table='we"ird\\') == 3
    assert value(text, "pp_rows_total", table="plain") == 4
    assert value(text, "pp_up") == 1
    assert types(text)["pp_up"] == "gauge" and types(text)["pp_records_total"] == "counter"


def test_histogram_and_summary_families() -> None:
    def read(out: Families) -> None:
        out.histogram("wait_seconds", "Waits.", ["deployment"]).add_buckets(
            [(0.1, 2), (1.0, 3), (math.inf, 4)], 2.65, deployment="d")
        out.summary("judge_seconds", "Judging.", ["deployment"]).add_summary(5, 1.5, deployment="d")

    text = ServiceMetrics("pp_", read).text().decode()
    assert types(text).items() >= {("pp_wait_seconds", "histogram"), ("pp_judge_seconds", "summary")}
    assert value(text, "pp_wait_seconds_bucket", deployment="d", le="0.1") == 2
    assert value(text, "pp_wait_seconds_bucket", deployment="d", le="1.0") == 3
    assert value(text, "pp_wait_seconds_bucket", deployment="d", le="+Inf") == 4
    assert value(text, "pp_wait_seconds_count", deployment="d") == 4
    assert value(text, "pp_wait_seconds_sum", deployment="d") == pytest.approx(2.65)
    assert value(text, "pp_judge_seconds_count", deployment="d") == 5
    assert value(text, "pp_judge_seconds_sum", deployment="d") == 1.5


def test_a_counter_not_named_total_or_a_wrong_label_set_is_refused() -> None:
    out = Families("pp_")
    with pytest.raises(ValueError, match="_total"):
        out.counter("latency_seconds_sum", "Not a counter's name.")
    series = out.gauge("lag", "Lag.", ["topic", "partition"])
    with pytest.raises(ValueError, match="declared"):
        series.add(1, topic="t")


def test_each_registry_is_its_own_and_reads_state_at_scrape_time() -> None:
    counts = {"a": 0}
    first = ServiceMetrics("first_", lambda out: out.counter("hits_total", "Hits.").add(counts["a"]))
    second = ServiceMetrics("second_", lambda out: out.gauge("other", "Other.").add(7))
    counts["a"] = 5
    one, two = first.text().decode(), second.text().decode()
    assert value(one, "first_hits_total") == 5
    assert not any(name.startswith("second_") for name, _ in samples(one))
    assert not any(name.startswith("first_") for name, _ in samples(two))
    # The process's own series come with every registry.
    assert value(one, "process_resident_memory_bytes") and value(two, "process_resident_memory_bytes")


async def test_handler_answers_the_text_format() -> None:
    app = web.Application()
    app[PROMETHEUS] = ServiceMetrics("pp_", lambda out: out.gauge("up", "Up.").add(1))
    response = await metrics_handler(make_mocked_request("GET", "/metrics", app=app))
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert value(response.body.decode(), "pp_up") == 1
