"""The gateway's event publisher against real Kafka: order, outages, restarts and a full spool.

Ordinary tests use the shared broker with a topic prefix of their own. The outage test stops and
restarts a private broker (tests/support/private_kafka.py), never the shared one. "Kafka away" in
the other tests is a bootstrap address nothing listens on: the same refused connections a
stopped broker gives, without the cost of starting one.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from aiokafka.errors import KafkaConnectionError

from services.gateway.events import (
    EventPublisher,
    EventTooLarge,
    PublisherClosed,
    PublisherFull,
    PublisherSection,
    TokenCoalescer,
)
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import decode, type_name
from shared.events.messages import (
    EventMeta,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    TokenChunk,
)
from shared.kafka import make_consumer
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import Topics, delete_topics, ensure_topics

from ..conftest import STACK_HINT

pytestmark = pytest.mark.integration

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _kafka_for(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"it-{uuid4().hex[:8]}.", partitions=3)


async def _create_topics(kafka: KafkaSettings) -> Topics:
    topics = Topics.from_settings(kafka)
    try:
        await ensure_topics(kafka, [topics.inference, topics.tokens, topics.feedback])
    except KafkaConnectionError as exc:
        pytest.fail(f"Kafka unreachable ({exc}); {STACK_HINT}")
    return topics


@pytest.fixture
async def kafka(settings: ServiceSettings) -> AsyncIterator[KafkaSettings]:
    kafka = _kafka_for(settings.kafka.bootstrap_servers)
    topics = await _create_topics(kafka)
    yield kafka
    await delete_topics(kafka, [topics.inference, topics.tokens, topics.feedback])


def _section(spool_dir: Path, **overrides: object) -> PublisherSection:
    options: dict[str, object] = {
        "spool_dir": spool_dir,
        "send_timeout_seconds": 2.0,
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 1.0,
        "close_timeout_seconds": 10.0,
    }
    options.update(overrides)
    return PublisherSection(**options)


def _meta(request_id: str) -> EventMeta:
    return new_meta(
        request_id=request_id,
        deployment="demo",
        variant="a",
        request_start_time=datetime.now(UTC),
        traceparent=TRACEPARENT,
    )


def _request(meta: EventMeta, text: str = "hello") -> InferenceRequest:
    return InferenceRequest(meta=meta, inputs=dict_to_struct({"question": text}))


def _response(meta: EventMeta) -> InferenceResponse:
    return InferenceResponse(meta=next_meta(meta), status=InferenceStatus.INFERENCE_STATUS_OK, latency_ms=12.5)


def _publish_request(publisher: EventPublisher, request_id: str, *, chunks: int = 2) -> None:
    """What the endpoint does for one request: admit, request event, chunks, response event."""
    meta = _meta(request_id)
    coalescer = TokenCoalescer(max_tokens=4, max_interval=60.0)
    with publisher.reserve(expected_bytes=64) as reservation:
        publisher.publish(_request(meta), reservation=reservation)
        for n in range(chunks * 4):
            chunk = coalescer.add(f"w{n} ")
            if chunk is not None:
                publisher.publish(chunk.to_event(meta, "answer"))
        publisher.publish(_response(meta), reservation=reservation)


async def _read_topic(kafka: KafkaSettings, topic: str, expected: int, *, within: float = 60.0) -> list:
    """Every record on ``topic``: at least ``expected``, plus any that follow within a moment."""
    consumer = make_consumer(kafka, topic, group_id=None, client_id="it-reader")
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(within):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                records += [r for part in batch.values() for r in part]
        # Duplicates would arrive with the rest; give stragglers one more poll.
        batch = await consumer.getmany(timeout_ms=1000)
        records += [r for part in batch.values() for r in part]
    finally:
        await consumer.stop()
    return records


def _by_request(records: list) -> dict[str, list]:
    grouped: dict[str, list] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped[record.key.decode()].append(decode(record.value, record.headers))
    return grouped


def _missing_and_duplicated(records: list, request_ids: list[str]) -> tuple[list[str], list[str]]:
    kinds = Counter((r.key.decode(), dict(r.headers)["pp-event-type"].decode()) for r in records)
    missing = [rid for rid in request_ids
               if not kinds[(rid, "inference.request")] or not kinds[(rid, "inference.response")]]
    duplicated = [rid for rid in request_ids
                  if kinds[(rid, "inference.request")] > 1 or kinds[(rid, "inference.response")] > 1]
    return missing, duplicated


async def test_events_arrive_in_order_per_request_and_close_flushes(kafka: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka)
    request_ids = [f"req-{n:03d}" for n in range(40)]
    publisher = EventPublisher(kafka, topics, _section(tmp_path / "spool"))
    await publisher.start()
    metas = {rid: _meta(rid) for rid in request_ids}
    coalescers = {rid: TokenCoalescer(max_tokens=2, max_interval=60.0) for rid in request_ids}
    # Requests interleave, as concurrent requests do: everyone's request, then chunks, then responses.
    for rid in request_ids:
        assert publisher.publish(_request(metas[rid]))
    for n in range(6):
        for rid in request_ids:
            chunk = coalescers[rid].add(f"{n} ")
            if chunk is not None:
                assert publisher.publish(chunk.to_event(metas[rid], "answer"))
    for rid in request_ids:
        assert publisher.publish(_response(metas[rid]))
    await publisher.close()  # no wait before it: close itself must deliver the queue

    inference = await _read_topic(kafka, topics.inference, 2 * len(request_ids))
    tokens = await _read_topic(kafka, topics.tokens, 3 * len(request_ids))
    by_request = _by_request(inference)
    assert sorted(by_request) == request_ids
    for rid, events in by_request.items():
        assert [type(e) for e in events] == [InferenceRequest, InferenceResponse], rid
        assert events[0].meta.event_id == metas[rid].event_id
    for rid, chunks in _by_request(tokens).items():
        assert [c.sequence for c in chunks] == [0, 1, 2], rid
        assert "".join(c.text for c in chunks) == "0 1 2 3 4 5 "
    assert {dict(r.headers)["traceparent"] for r in inference + tokens} == {TRACEPARENT.encode()}
    assert publisher.metrics.events_sent_direct == 5 * len(request_ids)
    assert publisher.metrics.events_spooled == 0


async def test_feedback_and_refusals_of_bad_events(kafka: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics.from_settings(kafka)
    async with EventPublisher(kafka, topics, _section(tmp_path / "spool", max_event_bytes=4096)) as publisher:
        meta = new_meta(request_id="req-fb", deployment="demo", request_start_time=None)
        assert publisher.publish(Feedback(meta=meta, rating=1, comment="good"))
        with pytest.raises(EventTooLarge, match="max_event_bytes"):
            publisher.publish(_request(_meta("req-big"), "x" * 5000), reservation=publisher.reserve())
        too_long = TokenChunk(meta=next_meta(_meta("req-big")), text="y" * 5000)
        assert publisher.publish(too_long) is False  # a chunk is dropped, never raised
        assert publisher.metrics.token_chunks_dropped["too_large"] == 1
        await publisher.wait_delivered()
    [record] = await _read_topic(kafka, topics.feedback, 1)
    assert type_name(decode(record.value, record.headers)) == "feedback"
    with pytest.raises(PublisherClosed):
        publisher.publish(_request(_meta("req-late")))
    with pytest.raises(PublisherFull, match="closed"):
        publisher.reserve()


async def test_kafka_away_events_spool_and_the_next_start_delivers_them(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """The gateway runs through an outage, shuts down, and a restart pointed at a live broker
    sends everything the first run accepted, in order."""
    topics = Topics.from_settings(kafka)
    spool_dir = tmp_path / "spool"
    away = kafka.model_copy(update={"bootstrap_servers": _unused_address()})
    request_ids = [f"away-{n:03d}" for n in range(30)]
    publisher = EventPublisher(away, topics, _section(spool_dir))
    await publisher.start()
    for rid in request_ids[:10]:
        _publish_request(publisher, rid)
    await publisher.flush()
    assert publisher.spooling
    for rid in request_ids[10:]:  # once spooling, every event goes through the spool
        _publish_request(publisher, rid)
    assert publisher.accepting()
    await publisher.close()
    assert publisher.metrics.events_spooled == 4 * len(request_ids)
    assert publisher.metrics.events_sent_direct == publisher.metrics.events_sent_from_spool == 0
    assert publisher.metrics.send_errors  # the failed attempts are counted
    assert any(spool_dir.glob("*.seg"))

    restarted = EventPublisher(kafka, topics, _section(spool_dir))
    await restarted.start()
    assert restarted.spooling  # what the first run left is sent before anything new
    _publish_request(restarted, "after-restart")
    await asyncio.wait_for(restarted.wait_delivered(), 60)
    assert not restarted.spooling
    await restarted.close()
    assert not any(spool_dir.glob("*.seg"))

    inference = await _read_topic(kafka, topics.inference, 2 * (len(request_ids) + 1))
    missing, duplicated = _missing_and_duplicated(inference, request_ids + ["after-restart"])
    assert (missing, duplicated) == ([], [])
    by_request = _by_request(inference)
    for rid in request_ids:
        assert [type(e) for e in by_request[rid]] == [InferenceRequest, InferenceResponse]
    # All 31 requests share 3 partitions, so "after-restart" can only be behind the spooled ones
    # on its own partition: its request event came after every spooled event there.
    after = next(r for r in inference if r.key == b"after-restart")
    earlier_same_partition = [r for r in inference if r.partition == after.partition and r.key != b"after-restart"]
    assert all(r.offset < after.offset for r in earlier_same_partition)
    tokens = await _read_topic(kafka, topics.tokens, 2 * (len(request_ids) + 1))
    assert all([c.sequence for c in chunks] == [0, 1] for chunks in _by_request(tokens).values())


async def test_full_spool_drops_token_chunks_first_then_refuses_requests(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics.from_settings(kafka)
    spool_dir = tmp_path / "spool"
    away = kafka.model_copy(update={"bootstrap_servers": _unused_address()})
    section = _section(
        spool_dir,
        spool_max_bytes=1 << 20,
        spool_segment_bytes=64 << 10,
        queue_max_bytes=8 << 20,
        token_chunk_share=0.5,
        request_reserve_bytes=4 << 10,
        max_event_bytes=64 << 10,
    )
    publisher = EventPublisher(away, topics, section)
    await publisher.start()
    admitted: list[str] = []
    text = "z" * 2000

    # Phase 1: chunks fill their share of the spool, then are dropped; requests are still admitted.
    n = 0
    while publisher.metrics.token_chunks_dropped["spool_full"] == 0:
        meta = _meta(f"chunky-{n}")
        publisher.publish(TokenChunk(meta=next_meta(meta), output="answer", sequence=0, text=text))
        n += 1
        assert n < 10_000
    assert publisher.accepting()
    _publish_request(publisher, "admitted-while-chunks-drop", chunks=0)
    admitted.append("admitted-while-chunks-drop")
    assert publisher.metrics.token_chunks_dropped["spool_full"] >= 1

    # Phase 2: requests take the rest of the room, then are refused: the endpoint's 503.
    refused = None
    for m in range(10_000):
        rid = f"big-{m}"
        try:
            reservation = publisher.reserve(expected_bytes=len(text))
        except PublisherFull as exc:
            refused = exc
            break
        with reservation:
            meta = _meta(rid)
            publisher.publish(_request(meta, text), reservation=reservation)
            publisher.publish(TokenChunk(meta=next_meta(meta), output="answer", text=text))  # dropped
            publisher.publish(_response(meta), reservation=reservation)
        admitted.append(rid)
    assert refused is not None and refused.reason == "spool_full"
    while publisher.accepting():  # smaller requests may still fit; fill the last crumbs
        with publisher.reserve() as reservation:
            publisher.publish(_request(_meta(f"small-{len(admitted)}")), reservation=reservation)
            publisher.publish(_response(_meta(f"small-{len(admitted)}")), reservation=reservation)
        admitted.append(f"small-{len(admitted)}")
    with pytest.raises(PublisherFull, match="spool_full"):
        publisher.reserve()
    assert publisher.metrics.reservations_refused["spool_full"] >= 1
    await publisher.flush()
    assert publisher.metrics.events_lost == {}  # every admitted request's events were kept
    await publisher.close()
    assert sum(p.stat().st_size for p in spool_dir.glob("*.seg")) <= section.spool_max_bytes

    # The broker "returns": everything admitted is delivered, nothing is missing or doubled.
    restarted = EventPublisher(kafka, topics, section)
    await restarted.start()
    assert restarted.accepting() is False or restarted.spooling
    await asyncio.wait_for(restarted.wait_delivered(), 60)
    assert restarted.accepting()
    await restarted.close()
    inference = await _read_topic(kafka, topics.inference, 2 * len(admitted))
    assert _missing_and_duplicated(inference, admitted) == ([], [])


async def test_close_with_a_hung_broker_keeps_the_queue_on_disk(kafka: KafkaSettings, tmp_path: Path) -> None:
    """A broker that accepts connections but never answers holds the sender past the close
    budget: close must still return, with every queued event in the spool for the next start."""
    topics = Topics.from_settings(kafka)
    spool_dir = tmp_path / "spool"

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    hung = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    request_ids = [f"hung-{n:02d}" for n in range(20)]
    try:
        publisher = EventPublisher(
            kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"}),
            topics,
            _section(spool_dir, send_timeout_seconds=30.0, close_timeout_seconds=0.5),
        )
        await publisher.start()
        for rid in request_ids:
            _publish_request(publisher, rid)
        await publisher.close()
    finally:
        hung.close()
    assert publisher.metrics.events_spooled == 4 * len(request_ids)

    async with EventPublisher(kafka, topics, _section(spool_dir)) as restarted:
        await asyncio.wait_for(restarted.wait_delivered(), 60)
    inference = await _read_topic(kafka, topics.inference, 2 * len(request_ids))
    assert _missing_and_duplicated(inference, request_ids) == ([], [])
    for rid, events in _by_request(inference).items():
        assert [type(e) for e in events] == [InferenceRequest, InferenceResponse], rid


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_broker_stopped_during_traffic_every_acknowledged_request_arrives_once(
    private_kafka, tmp_path: Path, outage: str
) -> None:
    """A graceful stop, and a SIGKILL (in-flight writes unacknowledged), under steady traffic."""
    kafka = _kafka_for(private_kafka.bootstrap)
    topics = await _create_topics(kafka)
    publisher = EventPublisher(kafka, topics, _section(tmp_path / "spool"))
    await publisher.start()
    acknowledged: list[str] = []
    phase = "before"
    per_phase: Counter[str] = Counter()
    traffic_stop = asyncio.Event()

    async def traffic() -> None:
        n = 0
        while not traffic_stop.is_set():
            rid = f"req-{n:05d}"
            _publish_request(publisher, rid)  # synchronous: cannot wait for the broker
            acknowledged.append(rid)
            per_phase[phase] += 1
            n += 1
            await asyncio.sleep(0.01)

    async def until(condition, within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - polls counters of the traffic task
                await asyncio.sleep(0.05)

    task = asyncio.create_task(traffic())
    await until(lambda: publisher.metrics.events_sent_direct >= 100)
    phase = "stopping"
    await asyncio.to_thread(getattr(private_kafka, outage))  # the loop keeps serving meanwhile
    phase = "down"
    await until(lambda: publisher.spooling)
    await until(lambda: per_phase["down"] >= 50)
    phase = "starting"
    await asyncio.to_thread(private_kafka.start)
    phase = "after"
    await until(lambda: per_phase["after"] >= 50)
    traffic_stop.set()
    await task
    await asyncio.wait_for(publisher.wait_delivered(), 120)
    await publisher.close()

    # Requests kept being accepted while the broker was stopping, away and starting.
    assert per_phase["down"] >= 50 and per_phase["starting"] > 0
    metrics = publisher.metrics
    assert metrics.events_spooled > 0 and metrics.events_sent_from_spool > 0
    # Each event acknowledged once: either straight from the queue (including events the kept
    # producer delivered after the timeout, whose spooled copies were then skipped) or from
    # the spool.
    assert metrics.events_sent_direct + metrics.events_sent_from_spool == metrics.events_queued
    # And each spooled event sent from the spool once or skipped there (delivered directly).
    assert metrics.events_spooled == metrics.events_sent_from_spool + metrics.events_spool_skipped
    assert metrics.events_lost == {} and metrics.token_chunks_dropped == {}
    assert metrics.reservations_refused == {}

    inference = await _read_topic(kafka, topics.inference, 2 * len(acknowledged), within=120)
    missing, duplicated = _missing_and_duplicated(inference, acknowledged)
    assert missing == [], f"{len(missing)} acknowledged requests lost events"
    assert duplicated == [], f"{len(duplicated)} requests have duplicated events"
    for rid, events in _by_request(inference).items():
        assert [type(e) for e in events] == [InferenceRequest, InferenceResponse], rid
