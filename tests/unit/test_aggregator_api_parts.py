"""Query API building blocks: parameters, keys and sessions, figures, trace trees (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import make_mocked_request
from pydantic import SecretStr

from services.aggregator.api.auth import (
    ADMIN,
    READ,
    Session,
    new_session_id,
    role_of_key,
    session_token,
    signed_session,
)
from services.aggregator.api.errors import ApiError
from services.aggregator.api.figures import Breakdown
from services.aggregator.api.metrics_query import Scope
from services.aggregator.api.openapi import document
from services.aggregator.api.params import (
    Query,
    cursor_time,
    decode_cursor,
    encode_cursor,
    parse_time,
)
from services.aggregator.api.routes import metrics_scope
from services.aggregator.rollups.histogram import bucket_of
from services.aggregator.traces import build_tree

READ_KEY, ADMIN_KEY = SecretStr("r" * 32), SecretStr("a" * 32)
NOW = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


def _query(url: str, allowed) -> Query:
    return Query(make_mocked_request("GET", url), allowed)


def _bad(url: str, allowed, call=lambda q: None) -> str:
    with pytest.raises(ApiError) as caught:
        call(_query(url, allowed))
    assert caught.value.status == 400
    return caught.value.field


def test_unknown_and_repeated_parameters_are_refused() -> None:
    assert _bad("/x?stpe=5m", ("step",)) == "stpe"
    assert _bad("/x?step=1m&step=5m", ("step",)) == "step"


def test_typed_parameters() -> None:
    assert _query("/x?limit=7", ("limit",)).integer("limit", 50, 1, 500) == 7
    assert _bad("/x?limit=0", ("limit",), lambda q: q.integer("limit", 50, 1, 500)) == "limit"
    assert _bad("/x?limit=ten", ("limit",), lambda q: q.integer("limit", 50, 1, 500)) == "limit"
    assert _query("/x?sampled=false", ("sampled",)).boolean("sampled", True) is False
    assert _bad("/x?sampled=maybe", ("sampled",), lambda q: q.boolean("sampled", True)) == "sampled"
    assert _query("/x?step=5m", ("step",)).duration("step", 60) == 300
    assert _query("/x?step=3600", ("step",)).duration("step", 60) == 3600
    assert _bad("/x?step=90s", ("step",), lambda q: q.duration("step", 60)) == "step"
    assert _bad("/x?variant=no%20spaces", ("variant",), lambda q: q.pattern("variant", "variant")) == "variant"
    assert _bad("/x?state=open", ("state",), lambda q: q.choice("state", ("firing",), None)) == "state"


def test_times() -> None:
    assert parse_time("from", "2030-01-01T12:00:00Z") == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert parse_time("from", "2030-01-01T13:00:00+01:00") == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert parse_time("from", "1893499200") == datetime(2030, 1, 1, 12, tzinfo=UTC)
    for text in ("2030-01-01T12:00:00", "yesterday", "1e9", "9999999999999",
                 "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"):  # no datetime holds their UTC time
        with pytest.raises(ApiError) as caught:
            parse_time("from", text)
        assert caught.value.field == "from"


def test_metrics_scope_defaults_and_limits() -> None:
    scope = metrics_scope(_query("/x", ("from", "to", "step", "variant")), "demo", 1440, 400, NOW)
    assert scope.end == datetime(2030, 1, 1, 12, 1, tzinfo=UTC) and scope.end - scope.start == timedelta(hours=1)
    assert scope.step == timedelta(minutes=1) and len(scope.steps()) == 60
    allowed = ("from", "to", "step", "variant")
    inverted = "/x?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z"
    assert _bad(inverted, allowed, lambda q: metrics_scope(q, "d", 1440, 400, NOW)) == "from"
    too_many = "/x?from=2029-01-01T00:00:00Z&to=2030-01-01T00:00:00Z&step=1m"
    assert _bad(too_many, allowed, lambda q: metrics_scope(q, "d", 1440, 400, NOW)) == "step"
    ragged = metrics_scope(_query("/x?from=2030-01-01T00:00:00Z&to=2030-01-01T00:10:00Z&step=3m", allowed),
                           "d", 1440, 400, NOW)
    assert [s.minute for s in ragged.steps()] == [0, 3, 6, 9]  # the last step is partial, still shown


def test_cursors_round_trip_and_reject_forgeries() -> None:
    cursor = encode_cursor(["2030-01-01T00:00:00+00:00", "req-1"])
    assert decode_cursor("cursor", cursor, (str, str)) == ["2030-01-01T00:00:00+00:00", "req-1"]
    for forged in ("!!!", encode_cursor([1, 2]), encode_cursor(["a"]), "x" * 2000, encode_cursor(["t", "a\x00"])):
        with pytest.raises(ApiError) as caught:
            decode_cursor("cursor", forged, (str, str))
        assert caught.value.field == "cursor"
    with pytest.raises(ApiError):
        decode_cursor("cursor", encode_cursor([2**63]), (int,))  # beyond bigint
    assert cursor_time("cursor", "2030-01-01T01:00:00+01:00") == datetime(2030, 1, 1, tzinfo=UTC)
    for text in ("2030-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "soon"):
        with pytest.raises(ApiError) as caught:
            cursor_time("cursor", text)
        assert caught.value.field == "cursor"


def test_keys_and_roles() -> None:
    assert role_of_key("r" * 32, READ_KEY, ADMIN_KEY) == READ
    assert role_of_key("a" * 32, READ_KEY, ADMIN_KEY) == ADMIN
    assert role_of_key("r" * 31, READ_KEY, ADMIN_KEY) is None
    assert role_of_key(None, READ_KEY, ADMIN_KEY) is None
    assert role_of_key("a" * 32, READ_KEY, None) is None


def test_session_tokens_expire_and_cannot_be_forged() -> None:
    session = Session(new_session_id(), 2_000)
    token = session_token(READ_KEY, session)
    assert signed_session(token, READ_KEY, 1_999) == session
    assert signed_session(token, READ_KEY, 2_000) is None
    assert signed_session(token.replace("2000", "9000", 1), READ_KEY, 1_999) is None
    other_id = token.replace(session.id, new_session_id())  # another session's id under this signature
    assert signed_session(other_id, READ_KEY, 1_999) is None
    assert signed_session(token, SecretStr("another read key!"), 1_999) is None  # a new read key ends sessions
    assert signed_session("garbage", READ_KEY, 0) is None and signed_session(None, READ_KEY, 0) is None
    assert signed_session("2000." + token.split(".")[2], READ_KEY, 0) is None  # the old format, without an id
    assert new_session_id() != new_session_id()


def _ops(t, variant, requests, errors, latency_sum):
    return {"t": t, "variant": variant, "requests": requests, "responses": requests, "ok": requests - errors,
            "errors": errors, "cancelled": 0, "latency_sum_ms": latency_sum, "ttft_count": 0, "ttft_sum_ms": 0.0}


def _quality(breakdown, t, variant, counts):
    """Rows of rollup_evaluator_quality and rollup_evaluator_values for scores 1..5 counted ``counts``."""
    scored = sum(counts)
    total = sum((i + 1) * c for i, c in enumerate(counts))
    squares = sum((i + 1) ** 2 * c for i, c in enumerate(counts))
    key = {"t": t, "variant": variant, "metric": "relevance", "evaluator_version": "relevance-v1"}
    breakdown.add_quality({**key, "evaluations": scored + 1, "scored": scored, "value_sum": float(total),
                           "value_sum_squares": float(squares), "not_applicable": 1, "errors": 0})
    for i, count in enumerate(counts):
        if count:
            breakdown.add_values({**key, "value_milli": (i + 1) * 1000, "label": "", "count": count})


def test_breakdown_sums_steps_variants_and_the_whole_range() -> None:
    t0, t1 = NOW, NOW + timedelta(minutes=1)
    breakdown = Breakdown()
    breakdown.add_operations(_ops(t0, "a", 10, 1, 1000.0))
    breakdown.add_operations(_ops(t0, "b", 10, 3, 3000.0))
    breakdown.add_operations(_ops(t1, "a", 20, 0, 2000.0))
    for value, count in ((100.0, 30), (1000.0, 10)):
        breakdown.add_histogram({"t": t0, "variant": "a", "measure": "latency_ms", "bucket": bucket_of(value),
                                 "count": count})
    _quality(breakdown, t0, "a", [0, 0, 2, 2, 0])
    _quality(breakdown, t1, "b", [2, 0, 0, 0, 2])
    breakdown.add_tokens({"t": t0, "variant": "a", "model": "m1", "requests": 10, "calls": 10, "prompt_tokens": 100,
                          "completion_tokens": 50, "total_tokens": 150, "cost": 0.5, "currency": "USD",
                          "unpriced": False})
    breakdown.add_tokens({"t": t1, "variant": "a", "model": "m2", "requests": 5, "calls": 5, "prompt_tokens": 10,
                          "completion_tokens": 5, "total_tokens": 15, "cost": None, "currency": None,
                          "unpriced": True})
    overview = breakdown.overview(3, 0.95)
    assert overview["requests"] == 40 and overview["errors"] == 4 and overview["error_rate"] == 0.1
    assert overview["latency_ms"]["mean"] == 150.0
    assert overview["latency_ms"]["p50"] == pytest.approx(100.0, rel=0.01)
    assert overview["latency_ms"]["p95"] == pytest.approx(1000.0, rel=0.01)
    relevance = overview["quality"]["relevance"]
    assert relevance["samples"] == 8 and relevance["average"] == (14 + 12) / 8 and relevance["pass_rate"] == 6 / 8
    assert relevance["evaluations"] == 10 and relevance["not_applicable"] == 2
    assert overview["tokens"]["total"] == 165 and overview["tokens"]["cost"] == 0.5
    assert overview["tokens"]["cost_complete"] is False  # m2 has no price
    assert set(overview["by_model"]) == {"m1", "m2"}
    assert breakdown.overview(4, 0.95)["quality"]["relevance"]["pass_rate"] == 4 / 8  # threshold at query time
    variants = breakdown.by_variant(3, 0.95)
    assert variants["a"]["requests"] == 30 and variants["b"]["error_rate"] == 0.3
    scope = Scope("demo", t0, t0 + timedelta(minutes=3), timedelta(minutes=1))
    series = breakdown.series(scope.steps(), 3, 0.95)
    assert [p["requests"] for p in series] == [20, 20, 0]
    assert series[0]["by_variant"]["b"]["errors"] == 3 and series[2]["by_variant"]["a"]["requests"] == 0
    assert series[1]["by_model"]["m2"]["total"] == 15 and series[1]["quality"]["relevance"]["average"] == 3.0


def _span(span_id, parent, start):
    base = datetime(2030, 1, 1, tzinfo=UTC)
    return {"span_id": span_id, "parent_span_id": parent, "name": span_id, "kind": "internal",
            "service_name": "gateway", "scope_name": "s", "start_time": base + timedelta(milliseconds=start),
            "end_time": base + timedelta(milliseconds=start + 5), "duration_ms": 5.0, "status_code": "ok",
            "status_message": "", "attributes": "{}", "events": "[]", "resource": "{}", "request_id": None,
            "deployment": None}


def test_trace_tree_keeps_orphans_and_breaks_loops() -> None:
    rows = [_span("root", None, 0), _span("child", "root", 1), _span("grandchild", "child", 2),
            _span("lost", "missing", 3), _span("x", "y", 4), _span("y", "x", 5), _span("z", "x", 6)]
    roots = build_tree(rows)
    by_id = {r["span_id"]: r for r in roots}
    assert set(by_id) == {"root", "lost", "x", "y"}
    assert by_id["root"]["children"][0]["children"][0]["span_id"] == "grandchild"
    assert by_id["root"]["orphan"] is False and by_id["lost"]["orphan"] is True
    assert [c["span_id"] for c in by_id["x"]["children"]] == ["z"]  # z hangs off x, which the loop cut loose


def test_openapi_lists_every_route() -> None:
    paths = document()["paths"]
    assert {"/v1/deployments", "/v1/deployments/{deployment}/metrics", "/v1/deployments/{deployment}/requests",
            "/v1/deployments/{deployment}/monitors", "/v1/traces/{trace_id}", "/v1/alerts", "/v1/runs/{run_id}",
            "/v1/stream/metrics", "/v1/session", "/metrics", "/healthz", "/readyz"} <= set(paths)
    assert paths["/v1/deployments/{deployment}/monitors"]["put"]["security"] == [{"adminKey": []}]
