"""Offsets: the committed offset never passes an event whose judging is unfinished, and why the
processor commits its own watermarks rather than faust's acks (faust-streaming #606)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

import faust

from shared.kafka import make_producer
from shared.settings import KafkaSettings
from shared.topics import delete_topics, ensure_topics
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    Producer,
    committed_offsets,
    committed_to_end,
    end_offsets,
    read_evaluations,
    request_event,
    response_event,
    stage,
    wait_for,
)


def _pairs(prefix: str, deployment: str, count: int) -> list:
    events = []
    for i in range(count):
        request = request_event(f"{prefix}-{i}", deployment, QA)
        events += [request, response_event(request, {"answer": ANSWER})]
    return events


async def test_commit_stops_at_the_lowest_unfinished_offset_and_moves_on_when_judged(tmp_path: Path) -> None:
    deployments = {"judged": {"sampling_rate": 1.0}, "quiet": {"sampling_rate": 0.0}}
    async with stage(tmp_path, deployments) as st:
        # Every judge call hangs until the latency is put back.
        await st.sim.control("POST", "/control/latency", {"ttft_ms": 600_000})
        settings = dict(judge_timeout_seconds=2.0, judge_max_attempts=20, breaker_failure_threshold=10_000)
        async with st.processor(**settings) as service, Producer(st.kafka) as producer:
            await producer.send(st.topics.inference, _pairs("before", "quiet", 50))
            await producer.send(st.topics.inference, _pairs("slow", "judged", 8))
            await producer.send(st.topics.inference, _pairs("after", "quiet", 300))
            runner = service.runner
            await wait_for(lambda: service.stats.events == 716, 30, "every event read")
            await wait_for(lambda: runner.calls_in_flight == 8, 30, "8 judge calls in flight")
            lowest = {tp.partition: offset for tp, offset in service.intake.watermarks.lowest_open().items()}
            assert lowest  # judging holds some partitions back
            ends = await end_offsets(st.kafka, st.topics.inference)
            # What the commit should reach: the lowest unfinished offset, else the end.
            target = {p: lowest.get(p, end) for p, end in ends.items() if end}
            committed: dict[int, int] = {}
            for _ in range(100):  # commits run every 0.2 s; allow a loaded machine 10 s
                committed = await committed_offsets(st.kafka, service.settings.group_id(), st.topics.inference)
                if all(committed.get(p) == offset for p, offset in target.items()):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # and it stays there: nothing is committed past the held events
            committed = await committed_offsets(st.kafka, service.settings.group_id(), st.topics.inference)
            for partition, end in ends.items():
                if partition in lowest:
                    # Up to the first unfinished event, and not one further.
                    assert committed[partition] == lowest[partition], (partition, committed, lowest)
                    assert lowest[partition] > 0  # ...past the finished events before it
                elif end:
                    assert committed[partition] == end
            # The judge recovers: every held event finishes, and the commit reaches the end.
            await st.sim.control("POST", "/control/latency", {"ttft_ms": 0})
            found = await read_evaluations(st.kafka, st.topics, 8)
            await committed_to_end(st.kafka, service.settings.group_id(), st.topics.inference)
    assert sorted(e.meta.request_id for e in found) == sorted(f"slow-{i}" for i in range(8))


async def test_faust_acks_would_commit_past_an_event_still_in_progress() -> None:
    """The measurement behind docs/processor.md: faust's ack-based commit with one event held
    unacked (as a judge call in progress would be) commits past it. This is why the processor
    consumes with acks=False and commits its own watermarks."""
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    kafka = KafkaSettings(topic_prefix=prefix)
    topic_name = prefix + "faust-acks"
    group = prefix + "faust-acks"
    await ensure_topics(kafka, [topic_name], 1)
    datadir = tempfile.mkdtemp(prefix="it-faust-")
    try:
        producer = make_producer(kafka, client_id="it")
        await producer.start()
        for i in range(100):
            await producer.send(topic_name, key=str(i).encode(), value=b"x")
        await producer.stop()
        app = faust.App(
            group, broker="kafka://127.0.0.1:9092", web_enabled=False, datadir=datadir,
            topic_replication_factor=1, consumer_auto_offset_reset="earliest",
            broker_commit_interval=0.1, stream_wait_empty=False,
        )
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        held = []
        seen = asyncio.Event()

        async def agent(stream):  # noqa: ANN001
            async for event in stream.noack().events():
                if event.message.offset == 50:
                    held.append(event)  # "being judged": never acked
                else:
                    await stream.ack(event)
                if event.message.offset == 99:
                    seen.set()

        app.agent(topic, name=f"{group}.agent")(agent)
        await app.start()
        try:
            await asyncio.wait_for(seen.wait(), 30)
            committed: dict[int, int] = {}
            for _ in range(50):
                committed = await committed_offsets(kafka, group, topic_name)
                if committed.get(0, 0) > 50:
                    break
                await asyncio.sleep(0.1)
        finally:
            await app.stop()
    finally:
        await delete_topics(kafka, [topic_name, f"{group}-__assignor-__leader"])
        shutil.rmtree(datadir, ignore_errors=True)
    assert held and held[0].message.offset == 50
    assert committed[0] == 100  # past offset 50, which was never acked
