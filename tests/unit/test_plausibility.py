"""shared/plausibility.py: the ranges the gateway and the aggregator both hold events to."""

from __future__ import annotations

import math

import pytest

from services.gateway.routes.errors import ApiError
from services.gateway.routes.feedback import parse_feedback
from shared.events.messages import (
    Evaluation,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    JudgeCall,
    LlmUsage,
    TokenChunk,
)
from shared.plausibility import Implausible, Plausibility, ScoreScale
from shared.settings import PlausibilitySettings, ServiceSettings, load_settings

REQUEST_ID = "0190a7c4-8f3e-7000-8000-000000000001"


def _response(**fields) -> InferenceResponse:
    usage = fields.pop("usage", {})
    return InferenceResponse(latency_ms=fields.pop("latency_ms", 250.0),
                             usage=[LlmUsage(node="answer", model="m", **usage)], **fields)


def _evaluation(score: int = 4, metric: str = "relevance", **judge) -> Evaluation:
    event = Evaluation(metric=metric, judge=JudgeCall(**{"latency_ms": 300.0, **judge}))
    event.meta.deployment = "demo"
    event.scored.score = score
    return event


@pytest.mark.parametrize(("event", "field"), [
    (_response(latency_ms=1e11), "latency_ms"),
    (_response(latency_ms=-1.0), "latency_ms"),
    (_response(latency_ms=math.nan), "latency_ms"),
    (_response(latency_ms=math.inf), "latency_ms"),
    (_response(time_to_first_token_ms=1e11), "time_to_first_token_ms"),
    (_response(usage={"prompt_tokens": 10**12}), "usage[0].prompt_tokens"),
    (_response(usage={"completion_tokens": -5}), "usage[0].completion_tokens"),
    (_response(usage={"total_tokens": 10_000_001}), "usage[0].total_tokens"),
    (_evaluation(score=7), "scored.score"),
    (_evaluation(score=0), "scored.score"),
    (_evaluation(prompt_tokens=10**12), "judge.prompt_tokens"),
    (_evaluation(latency_ms=1e11), "judge.latency_ms"),
    (Feedback(rating=2**31 - 1), "rating"),
    (Feedback(rating=-101), "rating"),
])
def test_a_number_outside_its_range_is_implausible_naming_the_field(event, field: str) -> None:
    with pytest.raises(Implausible) as caught:
        Plausibility().check(event)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field} is ")


@pytest.mark.parametrize("event", [
    _response(latency_ms=7_200_000.0, time_to_first_token_ms=7_200_000.0,
              usage={"prompt_tokens": 10_000_000, "completion_tokens": 0, "total_tokens": 10_000_000}),
    _response(latency_ms=0.0),
    _evaluation(score=1), _evaluation(score=5, prompt_tokens=300, completion_tokens=20),
    Feedback(rating=-100), Feedback(rating=100), Feedback(comment="no rating"),
    InferenceRequest(), TokenChunk(token_count=3),
])
def test_the_plausible_twins_and_the_bounds_themselves_pass(event) -> None:
    Plausibility().check(event)


def test_the_judgement_calls_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTPULSE_PLAUSIBILITY__MAX_LATENCY_MS", "60000")
    monkeypatch.setenv("PROMPTPULSE_PLAUSIBILITY__MAX_TOKENS_PER_CALL", "1000")
    plausibility = Plausibility(load_settings(ServiceSettings).plausibility)
    with pytest.raises(Implausible, match="0..60,000 ms .*PROMPTPULSE_PLAUSIBILITY__MAX_LATENCY_MS"):
        plausibility.check(_response(latency_ms=60_001.0))
    with pytest.raises(Implausible, match="PROMPTPULSE_PLAUSIBILITY__MAX_TOKENS_PER_CALL"):
        plausibility.check(_response(usage={"prompt_tokens": 1001}))
    plausibility.check(_response(latency_ms=60_000.0, usage={"prompt_tokens": 1000}))
    Plausibility().check(_response(latency_ms=60_001.0))  # plausible by default


def test_an_evaluator_brings_its_own_scale() -> None:
    def scale_of(deployment: str, metric: str, version: str) -> ScoreScale:
        return ScoreScale(0, 100) if (deployment, metric) == ("demo", "percent_correct") else ScoreScale(1, 5)

    plausibility = Plausibility(PlausibilitySettings(), scale_of=scale_of)
    plausibility.check(_evaluation(score=87, metric="percent_correct"))
    with pytest.raises(Implausible, match="0..100 .*percent_correct"):
        plausibility.check(_evaluation(score=101, metric="percent_correct"))
    with pytest.raises(Implausible, match="1..5 .*relevance"):
        plausibility.check(_evaluation(score=87, metric="relevance"))


@pytest.mark.parametrize("rating", [-(2**31), -101, -100, -1, 0, 1, 5, 100, 101, 2**31 - 1])
def test_the_gateway_accepts_exactly_the_ratings_the_aggregator_counts(rating: int) -> None:
    try:
        Plausibility().check(Feedback(rating=rating))
        counted = True
    except Implausible:
        counted = False
    try:
        parse_feedback({"request_id": REQUEST_ID, "rating": rating})
        accepted = True
    except ApiError as exc:
        assert exc.status == 400 and exc.field == "rating"
        accepted = False
    assert accepted == counted
