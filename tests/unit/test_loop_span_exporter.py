"""LoopKafkaSpanExporter's shutdown (a drain stopped mid-publish loses no span), its queue bound,
a chunk that cannot be published, the producer's restart backoff (the broker path is
tests/integration/test_gateway_span_export.py; here publishing or the producer is replaced, a pure unit)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from shared.settings import ServiceSettings
from shared.telemetry import LoopKafkaSpanExporter, loop_exporter


def _spans(count: int) -> list[ReadableSpan]:
    return [ReadableSpan(name=f"s{n}", context=SpanContext(1, n + 1, is_remote=False)) for n in range(count)]


async def test_a_drain_stopped_mid_publish_hands_its_spans_to_the_closing_flush() -> None:
    exporter = LoopKafkaSpanExporter(ServiceSettings(), "spans", asyncio.get_running_loop(), client_id="t",
                                     interval=0.01, chunk_spans=4)
    published: list[str] = []
    blocked = asyncio.Event()

    async def publish(spans: list[ReadableSpan]) -> None:
        if not blocked.is_set():  # the first chunk: hangs until aclose() cancels the drain
            blocked.set()
            await asyncio.Event().wait()
        published.extend(s.name for s in spans)

    exporter._publish = publish  # type: ignore[method-assign]
    spans = _spans(10)
    exporter.export(spans)
    await asyncio.wait_for(blocked.wait(), 5)
    await exporter.aclose()
    assert sorted(published) == sorted(s.name for s in spans)  # every one, the interrupted chunk too
    assert exporter.dropped_spans == 0
    exporter.export(_spans(1))  # closed: counted, not queued
    assert exporter.dropped_spans == 1


async def test_export_never_blocks_and_drops_past_the_bound() -> None:
    exporter = LoopKafkaSpanExporter(ServiceSettings(), "spans", asyncio.get_running_loop(), client_id="t",
                                     max_queue=5, interval=60)
    results: list[Any] = [exporter.export(_spans(3)), exporter.export(_spans(3)), exporter.export(_spans(2))]
    assert [r.name for r in results] == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert exporter.dropped_spans == 3
    exporter._publish = lambda spans: asyncio.sleep(0)  # type: ignore[method-assign,assignment,return-value]
    await exporter.aclose()


async def test_a_chunk_that_cannot_be_published_is_counted_and_the_drain_goes_on() -> None:
    exporter = LoopKafkaSpanExporter(ServiceSettings(), "spans", asyncio.get_running_loop(), client_id="t",
                                     interval=0.01, chunk_spans=4)
    published: list[str] = []
    calls = 0

    async def publish(spans: list[ReadableSpan]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a span redaction cannot handle")
        published.extend(s.name for s in spans)

    exporter._publish = publish  # type: ignore[method-assign]
    exporter.export(_spans(10))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(published) == 6:
            break
    exporter.export(_spans(2))  # later spans: the drain still runs
    await asyncio.sleep(0.1)
    assert exporter.dropped_spans == 4  # the failed chunk, counted
    assert len(published) == 8
    await exporter.aclose()


class _AbsentBroker:
    starts = 0

    async def start(self) -> None:
        _AbsentBroker.starts += 1
        raise ConnectionError("no broker")

    async def stop(self) -> None:
        pass


async def test_the_producer_is_not_restarted_per_chunk_while_the_broker_is_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop_exporter, "make_producer", lambda *args, **kwargs: _AbsentBroker())
    _AbsentBroker.starts = 0
    exporter = LoopKafkaSpanExporter(ServiceSettings(), "spans", asyncio.get_running_loop(), client_id="t",
                                     interval=0.01, chunk_spans=6)
    exporter.export(_spans(600))
    await asyncio.sleep(0.3)  # many drain intervals, well within the backoff
    assert _AbsentBroker.starts == 1
    assert exporter.dropped_spans == 6  # the chunk that met the failure; the rest wait
    await exporter.aclose()  # still backing off: what waits is counted, not lost silently
    assert exporter.dropped_spans == 600


def test_the_loop_span_processor_queues_sampled_spans_only_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    class Queue:
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []
            self.broken = False

        def export(self, spans: Any) -> None:
            if self.broken:
                raise RuntimeError("queue broken")
            self.spans.extend(spans)

        def shutdown(self) -> None:
            pass

    queue = Queue()
    processor = loop_exporter.LoopSpanProcessor(queue)  # type: ignore[arg-type]
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("kept", attributes={"a": 1}):
        pass
    assert [(s.name, dict(s.attributes or {})) for s in queue.spans] == [("kept", {"a": 1})]
    unsampled = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    unsampled.add_span_processor(processor)
    with unsampled.get_tracer("t").start_as_current_span("dropped"):
        pass
    processor.on_end(ReadableSpan(name="not sampled", context=SpanContext(1, 2, is_remote=False)))
    assert len(queue.spans) == 1
    queue.broken = True
    with provider.get_tracer("t").start_as_current_span("lost"):
        pass  # ending it must not raise into the code that ends it
    assert "span not exported" in caplog.text
