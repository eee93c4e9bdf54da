"""Records that cannot be decoded go to the dead-letter topic with their reason; the stream goes on."""

from __future__ import annotations

from pathlib import Path

from services.processor.publisher import DLQ_OFFSET_HEADER, DLQ_REASON_HEADER
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    Producer,
    committed_to_end,
    read_evaluations,
    read_topic,
    request_event,
    response_event,
    stage,
)


async def test_undecodable_records_are_dead_lettered_and_the_stream_goes_on(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {"sampling_rate": 1.0}}, partitions=1) as st:
        async with st.processor() as service, Producer(st.kafka) as producer:
            garbage = await producer.send_raw(
                st.topics.inference, key=b"req-bad", value=b"\xff\x00 not protobuf",
                headers=[("pp-event-type", b"inference.request"), ("pp-schema-version", b"1"),
                         ("pp-deployment", b"shop")],
            )
            headless = await producer.send_raw(st.topics.inference, key=b"req-anon", value=b"hello")
            future = await producer.send_raw(
                st.topics.inference, key=b"req-v9", value=b"\x0a\x00",
                headers=[("pp-event-type", b"inference.request"), ("pp-schema-version", b"9"),
                         ("pp-deployment", b"shop")],
            )
            request = request_event("req-good", "shop", QA)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = await read_evaluations(st.kafka, st.topics, 1)
            letters = await read_topic(st.kafka, st.topics.deadletter_processor, lambda rows: len(rows) >= 3)
            await committed_to_end(st.kafka, service.settings.group_id(), st.topics.inference)
    assert [e.meta.request_id for e in found] == ["req-good"]
    by_offset = {int(dict(r.headers)[DLQ_OFFSET_HEADER]): r for r in letters}
    assert set(by_offset) == {garbage.offset, headless.offset, future.offset}
    reasons = {offset: dict(r.headers)[DLQ_REASON_HEADER].decode() for offset, r in by_offset.items()}
    assert reasons == {
        garbage.offset: "malformed-body",
        headless.offset: "missing-event-type",
        future.offset: "unsupported-schema-version",
    }
    # The record is kept as it was, so it can be replayed once the cause is fixed.
    assert by_offset[garbage.offset].value == b"\xff\x00 not protobuf"
    assert by_offset[garbage.offset].key == b"req-bad"
    assert service.stats.dead_letters == {
        "malformed-body": 1, "missing-event-type": 1, "unsupported-schema-version": 1,
    }
