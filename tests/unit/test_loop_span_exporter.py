"""LoopKafkaSpanExporter's shutdown: a drain stopped mid-publish loses no span (the broker path
is tests/integration/test_gateway_span_export.py; here publishing is replaced, a pure unit)."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from shared.settings import ServiceSettings
from shared.telemetry import LoopKafkaSpanExporter


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
