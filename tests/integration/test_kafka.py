"""The project's Kafka plumbing against the real broker: topics, producer, manual commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from shared.kafka import (
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    KafkaSettingsError,
    make_admin,
    make_consumer,
    make_producer,
)
from shared.settings import KafkaSettings, ServiceSettings
from shared.topics import TopicError, Topics, delete_topics, ensure_topics

from ..conftest import STACK_HINT

pytestmark = pytest.mark.integration


@pytest.fixture
def kafka(settings: ServiceSettings) -> KafkaSettings:
    return settings.kafka.model_copy(update={"partitions": 3})


@pytest.fixture
async def topic(kafka: KafkaSettings, unique_name: str) -> AsyncIterator[str]:
    try:
        await ensure_topics(kafka, [unique_name])
    except KafkaConnectionError as exc:
        pytest.fail(f"Kafka unreachable ({exc}); {STACK_HINT}")
    yield unique_name
    await delete_topics(kafka, [unique_name])


async def _partition_counts(kafka: KafkaSettings, names: list[str]) -> dict[str, int]:
    admin = make_admin(kafka, client_id="it-describe")
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def _committed(kafka: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    admin = make_admin(kafka, client_id="it-offsets")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def _consume(consumer, count: int, *, within: float = 20.0) -> list:
    """Read exactly ``count`` records (fails if they do not all come)."""
    records: list = []
    async with asyncio.timeout(within):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    return records


async def _nothing_more(consumer, wait_ms: int = 1500) -> list:
    batch = await consumer.getmany(timeout_ms=wait_ms)
    return [r for part in batch.values() for r in part]


async def test_ensure_topics_creates_the_configured_partitions_once(
    kafka: KafkaSettings, unique_name: str
) -> None:
    names = [f"{unique_name}.a", f"{unique_name}.b"]
    try:
        first = await ensure_topics(kafka, names)
        assert sorted(first.created) == sorted(names) and first.existing == []
        assert await _partition_counts(kafka, names) == {n: 3 for n in names}

        again = await ensure_topics(kafka, names)
        assert again.created == [] and sorted(again.existing) == sorted(names)
        assert again.warnings == []

        # Asking for more partitions than a topic has is a warning, never an error or a change.
        more = await ensure_topics(kafka, names[:1], partitions=5)
        assert more.existing == names[:1]
        assert len(more.warnings) == 1 and "3 partitions" in more.warnings[0]
        assert (await _partition_counts(kafka, names[:1]))[names[0]] == 3
    finally:
        await delete_topics(kafka, names)


async def test_ensure_topics_reports_a_refusal_naming_the_setting(
    kafka: KafkaSettings, unique_name: str
) -> None:
    # One broker cannot hold three replicas; the single-replica twin above succeeds.
    impossible = kafka.model_copy(update={"replication_factor": 3})
    with pytest.raises(TopicError, match="REPLICATION_FACTOR"):
        await ensure_topics(impossible, [unique_name])
    assert (await _partition_counts(kafka, [unique_name])).get(unique_name, 0) == 0


def test_topics_follow_the_prefix_and_reject_illegal_names() -> None:
    topics = Topics.from_prefix("acme.")
    assert topics.inference == "acme.inference"
    assert topics.evaluations_retry == "acme.evaluations.retry"
    assert topics.deadletter_processor == "acme.deadletter.processor"
    assert topics.deadletter_aggregator == "acme.deadletter.aggregator"
    assert topics.rejudge_progress == "acme.rejudge.progress"
    assert len(set(topics.all())) == 11
    assert Topics.from_settings(ServiceSettings()).spans == "promptpulse.spans"
    with pytest.raises(TopicError, match="TOPIC_PREFIX"):
        Topics.from_prefix("bad prefix/")


def test_factories_pass_the_project_defaults(
    kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: dict[str, tuple] = {}

    def recorder(kind: str):
        return lambda *topics, **options: built.setdefault(kind, (topics, options))

    monkeypatch.setattr("shared.kafka.AIOKafkaProducer", recorder("producer"))
    monkeypatch.setattr("shared.kafka.AIOKafkaConsumer", recorder("consumer"))
    make_producer(kafka, "gateway", linger_ms=0)
    make_consumer(kafka, "t1", "t2", group_id="processor", client_id="processor-1")

    _, producer = built["producer"]
    assert producer["acks"] == "all" and producer["enable_idempotence"] is True
    assert producer["client_id"] == "gateway" and producer["linger_ms"] == 0  # override wins
    assert producer["compression_type"] == PRODUCER_DEFAULTS["compression_type"]
    assert producer["bootstrap_servers"] == kafka.bootstrap_servers
    topics, consumer = built["consumer"]
    assert topics == ("t1", "t2") and consumer["group_id"] == "processor"
    assert consumer["enable_auto_commit"] is False and consumer["auto_offset_reset"] == "earliest"
    assert consumer == {**consumer, **CONSUMER_DEFAULTS}


async def test_sasl_without_credentials_is_a_settings_error(kafka: KafkaSettings) -> None:
    sasl = kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"})
    with pytest.raises(KafkaSettingsError, match="PROMPTPULSE_KAFKA__SASL_USERNAME"):
        make_producer(sasl, "it")
    missing_ca = kafka.model_copy(update={"security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"})
    with pytest.raises(KafkaSettingsError, match="SSL"):
        make_consumer(missing_ca, group_id=None, client_id="it")


async def test_manual_commits_are_what_the_group_resumes_from(kafka: KafkaSettings, topic: str) -> None:
    group = f"{topic}-group"
    producer = make_producer(kafka, "it-producer")
    await producer.start()
    try:
        for i in range(20):
            await producer.send(topic, value=f"event-{i}".encode(), key=f"request-{i % 7}".encode())
        await producer.flush()

        first = make_consumer(kafka, topic, group_id=group, client_id="it-consumer-1")
        await first.start()
        try:
            records = await _consume(first, 20)
            # Only the first 12 are "processed"; the consumer then dies. Per partition the
            # processed ones are a prefix, so committing offset+1 of each is exact.
            processed = records[:12]
            commit = {}
            for r in processed:
                commit[TopicPartition(r.topic, r.partition)] = r.offset + 1
            await first.commit(commit)
        finally:
            await first.stop()

        assert await _committed(kafka, group) == commit

        for i in range(20, 30):
            await producer.send(topic, value=f"event-{i}".encode(), key=f"request-{i % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    second = make_consumer(kafka, topic, group_id=group, client_id="it-consumer-2")
    await second.start()
    try:
        resumed = await _consume(second, 18)
        resumed += await _nothing_more(second)
        await second.commit()
        ends = await second.end_offsets(list(second.assignment()))
    finally:
        await second.stop()

    expected = {f"event-{i}".encode() for i in range(30)} - {r.value for r in processed}
    values = [r.value for r in resumed]
    assert len(values) == len(set(values)), "a record was read twice"
    assert set(values) == expected, "a record was skipped or re-read"
    assert await _committed(kafka, group) == ends
