"""The private broker fixture really stops and restarts, keeping its data (fault tests rely on it)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            values += [m.value for records in batch.values() for m in records]
            if len(values) >= expected:
                break
        return values
    finally:
        await consumer.stop()


async def test_broker_survives_kill_and_restart_with_its_data(private_kafka) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=private_kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("private-check", 1, 1)])
    finally:
        await admin.close()
    await _produce(private_kafka.bootstrap, "private-check", b"before")

    private_kafka.kill()
    private_kafka.start()

    await _produce(private_kafka.bootstrap, "private-check", b"after")
    assert await _read_all(private_kafka.bootstrap, "private-check", 2) == [b"before", b"after"]
