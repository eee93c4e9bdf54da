"""Token deltas become tens of token-chunk events, not thousands, without losing or reordering text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.events.coalesce import CoalescedChunk, TokenCoalescer
from services.gateway.events.metrics import PREFIX, PublisherMetrics
from shared.events.builders import new_meta
from shared.events.codec import decode, encode
from shared.prometheus import ServiceMetrics
from tests.support.prometheus_text import value


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_count_rule_makes_a_long_answer_tens_of_events() -> None:
    coalescer = TokenCoalescer(max_tokens=32, max_interval=10.0, clock=FakeClock())
    chunks = [c for n in range(1000) if (c := coalescer.add(f"t{n} "))]
    last = coalescer.flush()
    assert last is not None
    chunks.append(last)
    assert len(chunks) == 32  # 31 full chunks of 32 tokens, then the last 8
    assert [c.sequence for c in chunks] == list(range(32))
    assert all(c.token_count == 32 for c in chunks[:-1]) and chunks[-1].token_count == 8
    assert [c.token_offset for c in chunks] == [32 * n for n in range(32)]
    assert "".join(c.text for c in chunks) == "".join(f"t{n} " for n in range(1000))


def test_time_rule_flushes_a_slow_stream() -> None:
    clock = FakeClock()
    coalescer = TokenCoalescer(max_tokens=32, max_interval=0.05, clock=clock)
    assert coalescer.add("a") is None
    clock.now += 0.02
    assert coalescer.add("b") is None
    clock.now += 0.04  # the first token is now 60 ms old
    assert coalescer.add("c") == CoalescedChunk(0, 0, 3, "abc")
    assert coalescer.buffered_tokens == 0
    clock.now += 1.0
    assert coalescer.add("d") is None  # a new buffer starts its own clock
    assert coalescer.flush() == CoalescedChunk(1, 3, 1, "d")
    assert coalescer.flush() is None


def test_multi_token_deltas_and_empty_deltas() -> None:
    coalescer = TokenCoalescer(max_tokens=4, max_interval=10.0, clock=FakeClock())
    assert coalescer.add("", 0) is None
    assert coalescer.flush() is None
    assert coalescer.add("hello world", 5) == CoalescedChunk(0, 0, 5, "hello world")
    with pytest.raises(ValueError):
        coalescer.add("x", -1)
    with pytest.raises(ValueError):
        TokenCoalescer(max_tokens=0)


def test_chunk_becomes_a_valid_token_chunk_event() -> None:
    meta = new_meta(request_id="r-1", deployment="demo", request_start_time=datetime.now(UTC))
    event = CoalescedChunk(2, 64, 32, "some text").to_event(meta, "answer")
    assert event.meta.request_id == "r-1" and event.meta.event_id != meta.event_id
    assert (event.sequence, event.token_offset, event.token_count, event.text) == (2, 64, 32, "some text")
    record = encode(event)
    assert decode(record.value, record.headers) == event


def test_publisher_counters_reach_the_scrape_known_reasons_as_zero() -> None:
    metrics = PublisherMetrics(events_queued=3)
    metrics.token_chunks_dropped["spool_full"] += 2
    text = ServiceMetrics(PREFIX, lambda out: metrics.collect(
        out, {"event_spool_bytes": ("Spool bytes.", 512)})).text().decode()
    assert "# TYPE promptpulse_gateway_events_queued_total counter\n" in text
    assert value(text, "promptpulse_gateway_events_queued_total") == 3
    assert value(text, "promptpulse_gateway_token_chunks_dropped_total", reason="spool_full") == 2
    assert value(text, "promptpulse_gateway_token_chunks_dropped_total", reason="queue_full") == 0
    assert value(text, "promptpulse_gateway_event_spool_bytes") == 512
    assert text.count("# TYPE promptpulse_gateway_token_chunks_dropped_total") == 1
