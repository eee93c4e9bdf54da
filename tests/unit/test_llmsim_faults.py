"""llmsim fault choice and the per-request latency header."""

from __future__ import annotations

import random

import pytest

from services.llmsim.faults import Fault, FaultBoard, FaultHeaderError, Target
from services.llmsim.latency import LatencyHeaderError, first_token_delay, token_delay, with_header
from services.llmsim.settings import FaultRates, LatencyModel


def faults(**rates: float) -> FaultBoard:
    return FaultBoard(configured=FaultRates(**rates), rng=random.Random(1))


def test_no_fault_by_default() -> None:
    board = faults()
    assert [board.choose(None, "m", Target.CHAT) for _ in range(100)] == [None] * 100


def test_header_then_model_marker_then_queue() -> None:
    board = faults()
    board.enqueue(Fault.SERVER_ERROR, 1, Target.ANY)
    assert board.choose("429", "m+fault=hang", Target.CHAT) is Fault.RATE_LIMIT
    assert board.choose("none", "m+fault=hang", Target.CHAT) is None
    assert board.choose(None, "m+fault=hang", Target.CHAT) is Fault.HANG
    assert board.queue  # neither the header nor the marker used the queued fault up
    assert board.choose(None, "m", Target.CHAT) is Fault.SERVER_ERROR
    assert board.choose(None, "m", Target.CHAT) is None


def test_queued_faults_respect_their_target_and_count() -> None:
    board = faults()
    board.enqueue(Fault.MALFORMED, 2, Target.JUDGE)
    assert board.choose(None, "m", Target.CHAT) is None
    assert board.choose(None, "m", Target.JUDGE) is Fault.MALFORMED
    assert board.choose(None, "m", Target.JUDGE) is Fault.MALFORMED
    assert board.choose(None, "m", Target.JUDGE) is None


def test_unknown_header_is_a_typed_error() -> None:
    with pytest.raises(FaultHeaderError, match="x-llmsim-fault"):
        faults().choose("418", "m", Target.CHAT)


def test_rates_are_drawn_and_can_be_overridden() -> None:
    board = faults(rate_500=0.5)
    drawn = [board.choose(None, "m", Target.CHAT) for _ in range(400)]
    assert set(drawn) == {None, Fault.SERVER_ERROR}
    assert 100 < drawn.count(Fault.SERVER_ERROR) < 300
    board.rate_override = {fault: 0.0 for fault in Fault} | {Fault.RATE_LIMIT: 1.0}
    assert board.choose(None, "m", Target.CHAT) is Fault.RATE_LIMIT
    board.clear()
    assert board.rates()[Fault.SERVER_ERROR] == 0.5


def test_latency_header_overrides_named_fields() -> None:
    base = LatencyModel(ttft_ms=100, tokens_per_second=10, jitter=0.5)
    assert with_header(base, None) is base
    changed = with_header(base, "ttft=0, tps=1000")
    assert (changed.ttft_ms, changed.tokens_per_second, changed.jitter) == (0, 1000, 0.5)


@pytest.mark.parametrize("header", ["fast", "speed=3", "tps=0", "jitter=2", "ttft=soon"])
def test_bad_latency_header_is_a_typed_error(header: str) -> None:
    with pytest.raises(LatencyHeaderError, match="x-llmsim-latency"):
        with_header(LatencyModel(), header)


def test_jitter_stays_within_its_fraction() -> None:
    model = LatencyModel(ttft_ms=1000, tokens_per_second=10, jitter=0.2)
    rng = random.Random(3)
    assert all(0.8 <= first_token_delay(model, rng) <= 1.2 for _ in range(200))
    assert all(0.08 <= token_delay(model, rng) <= 0.12 for _ in range(200))
    steady = LatencyModel(ttft_ms=1000, tokens_per_second=10, jitter=0)
    assert first_token_delay(steady, rng) == 1.0
