"""The gateway's small HTTP parts: key extraction, rate limits, redaction, SSE framing, metrics
text, error kinds and feedback validation. Pure functions and objects, no I/O."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from services.gateway.auth import authenticate, presented_key
from services.gateway.events.metrics import PREFIX
from services.gateway.ratelimit import RateLimiter, retry_after_header
from services.gateway.redaction import REDACTED, redact_fields
from services.gateway.routes.errors import ApiError
from services.gateway.routes.feedback import parse_feedback
from services.gateway.routes.metrics import GatewayMetrics, Histogram
from services.gateway.routes.outcomes import llm_error_kind
from services.gateway.routes.score import wants_stream
from services.gateway.routes.stream import sse_event
from shared.apikeys import ApiKeyRecord, generate_api_key, hash_api_key
from shared.flow import LlmCallError
from shared.prometheus import ServiceMetrics
from tests.support.prometheus_text import value as sample_value


def record(key_id: str, key: str) -> ApiKeyRecord:
    return ApiKeyRecord(id=key_id, hash=hash_api_key(key), created=datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Authorization": "Bearer pp_abc"}, "pp_abc"),
    ({"Authorization": "bearer   pp_abc  "}, "pp_abc"),
    ({"api-key": "pp_abc"}, "pp_abc"),
    ({"Authorization": "Bearer pp_abc", "api-key": "other"}, "pp_abc"),
    ({"Authorization": "Basic cHA6YWJj", "api-key": "pp_abc"}, None),  # a wrong scheme is not rescued
    ({"Authorization": "Bearer"}, None),
    ({"api-key": "   "}, None),
    ({"api-key": "x" * 600}, None),
    ({}, None),
])
def test_presented_key(headers: dict[str, str], expected: str | None) -> None:
    assert presented_key(headers) == expected


def test_authenticate_finds_the_matching_record_and_nothing_else() -> None:
    first, second = generate_api_key(), generate_api_key()
    records = [record("a", first), record("b", second)]
    assert authenticate({"api-key": second}, records).id == "b"
    assert authenticate({"Authorization": f"Bearer {first}"}, records).id == "a"
    assert authenticate({"api-key": first + "x"}, records) is None
    assert authenticate({}, records) is None
    assert authenticate({"api-key": first}, []) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_a_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert [limiter.check("demo", "k", 3) for _ in range(3)] == [None, None, None]
    wait = limiter.check("demo", "k", 3)
    assert wait == pytest.approx(20.0)  # 3 per minute: one every 20 s
    assert limiter.check("demo", "other-key", 3) is None  # buckets are per key
    assert limiter.check("shop", "k", 3) is None  # and per deployment
    clock.now += 19.0
    assert limiter.check("demo", "k", 3) == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.check("demo", "k", 3) is None
    assert limiter.check("demo", "k", None) is None  # no limit configured
    clock.now += 3600
    assert [limiter.check("demo", "k", 3) is None for _ in range(4)] == [True, True, True, False]  # capped at 3


def test_rate_limiter_restarts_a_bucket_whose_limit_changed_and_forgets_revoked_keys() -> None:
    limiter = RateLimiter(FakeClock())
    for _ in range(2):
        limiter.check("demo", "k", 2)
    assert limiter.check("demo", "k", 2) is not None
    assert limiter.check("demo", "k", 10) is None  # raised on reload: a fresh bucket
    limiter.forget_except(set())
    assert limiter._buckets == {}
    with pytest.raises(ValueError):
        limiter.check("demo", "k", 0)


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (59.9, "60")])
def test_retry_after_rounds_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_redaction_replaces_only_named_fields_and_copies() -> None:
    values = {"question": "q", "context": "secret", "n": 3}
    assert redact_fields(values, {"context", "absent"}) == {"question": "q", "context": REDACTED, "n": 3}
    assert values["context"] == "secret"
    assert redact_fields(values, ()) == values and redact_fields(values, ()) is not values


def test_sse_event_is_one_line_of_json_whatever_the_text() -> None:
    raw = sse_event("delta", {"delta": "line one\nsystem:\n\ndata: fake"})
    text = raw.decode()
    assert text.endswith("\n\n") and text.count("\n") == 3
    name, data = text.strip().split("\n")
    assert name == "event: delta"
    assert json.loads(data.removeprefix("data: ")) == {"delta": "line one\nsystem:\n\ndata: fake"}
    with pytest.raises(ValueError):
        sse_event("done", {"x": float("nan")})


def test_histogram_buckets_are_cumulative_with_le_semantics() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(0.1, 2), (1.0, 3), (math.inf, 4)]
    assert histogram.total == pytest.approx(2.65)


def test_metrics_text_escapes_labels_and_types_each_family_once() -> None:
    metrics = GatewayMetrics()
    metrics.flow_runs[("demo", 'va"r', "ok")] += 2
    metrics.observe_run("demo", 0.2)
    metrics.observe_run("demo", 0.3)
    text = ServiceMetrics(PREFIX, metrics.collect).text().decode()
    assert 'variant="va\\"r"' in text
    assert sample_value(text, "promptpulse_gateway_flow_runs_total", deployment="demo", variant='va"r', status="ok") == 2
    assert text.count("# TYPE promptpulse_gateway_flow_run_duration_seconds histogram") == 1
    assert sample_value(text, "promptpulse_gateway_flow_run_duration_seconds_count", deployment="demo") == 2
    assert sample_value(text, "promptpulse_gateway_flow_run_duration_seconds_bucket", deployment="demo",
                        le="0.25") == 1
    assert sample_value(text, "promptpulse_gateway_flow_run_duration_seconds_sum",
                        deployment="demo") == pytest.approx(0.5)


@pytest.mark.parametrize(("error_type", "status", "kind"), [
    ("RateLimitError", 429, "llm_rate_limited"),
    ("APITimeoutError", None, "llm_timeout"),
    ("APIConnectionError", None, "llm_unreachable"),
    ("InternalServerError", 500, "llm_server_error"),
    ("APIStatusError", 503, "llm_server_error"),
    ("BadRequestError", 400, "llm_request_rejected"),
    ("AuthenticationError", 401, "llm_request_rejected"),
    ("EmptyResponse", None, "llm_bad_response"),
    ("APIResponseValidationError", 200, "llm_bad_response"),
])
def test_llm_error_kinds(error_type: str, status: int | None, kind: str) -> None:
    assert llm_error_kind(LlmCallError("answer", error_type, "boom", status_code=status)) == kind


RID = "0192b3c4-0000-7000-8000-000000000000"


def test_feedback_parsing_accepts_rating_comment_or_both() -> None:
    assert parse_feedback({"request_id": RID, "rating": -1}) == (RID, -1, "")
    assert parse_feedback({"request_id": RID.upper(), "comment": "ok"}) == (RID, None, "ok")
    assert parse_feedback({"request_id": RID, "rating": 5.0, "comment": "great"}) == (RID, 5, "great")


@pytest.mark.parametrize(("body", "field"), [
    ([], None),
    ({"rating": 1}, "request_id"),
    ({"request_id": 5, "rating": 1}, "request_id"),
    ({"request_id": RID, "rating": 1.5}, "rating"),
    ({"request_id": RID, "rating": 101}, "rating"),
    ({"request_id": RID, "comment": ""}, "rating"),
    ({"request_id": RID, "comment": "x" * 4001}, "comment"),
    ({"request_id": RID, "rating": 1, "extra": 1}, "extra"),
])
def test_feedback_parsing_refuses_naming_the_field(body: object, field: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        parse_feedback(body)
    assert caught.value.status == 400 and caught.value.field == field


@pytest.mark.parametrize(("accept", "expected"), [
    ([("Accept", "text/event-stream")], True),
    ([("Accept", "application/json, text/event-stream;q=0.9")], True),
    ([("Accept", "Text/Event-Stream")], True),  # media types are case-insensitive
    ([("Accept", "application/json"), ("Accept", "text/event-stream")], True),  # every Accept header counts
    ([("Accept", "text/event-streams")], False),  # another media type, not a substring match
    ([("Accept", "application/json")], False),
    ([], False),
])
def test_wants_stream_parses_accept_as_the_pf_route_does(accept: list[tuple[str, str]], expected: bool) -> None:
    request = make_mocked_request("POST", "/v1/deployments/d/score", headers=CIMultiDict(accept))
    assert wants_stream(request) is expected
