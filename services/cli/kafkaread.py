"""Reading PromptPulse topics from the CLI: a group-less consumer on every partition.

The CLI only watches (``alerts subscribe``, ``tail``): it joins no consumer group, commits
nothing and so never takes partitions from a service. It reads from the end (what happens from
now on) or, with ``from_beginning``, everything the topic still holds. Kafka settings are the
services' own (``PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS``, ``PROMPTPULSE_KAFKA__TOPIC_PREFIX``, TLS
and SASL). The reader is ready, its positions fixed, when the context manager yields, so anything
published after that is seen.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from services.cli.config import EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, START_HINT, CliError

CLIENT_ID = "promptpulse-cli"


@asynccontextmanager
async def topic_reader(roles: list[str], *, from_beginning: bool = False) -> AsyncIterator[tuple[Any, list[str]]]:
    """(started consumer, topic names) for the topics of these roles (``Topics`` attributes)."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    from shared.kafka import make_consumer
    from shared.settings import ServiceSettings, load_settings
    from shared.topics import TopicError, Topics

    settings = load_settings(ServiceSettings)
    try:
        topics = Topics.from_settings(settings)
    except TopicError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    names = [getattr(topics, role) for role in roles]
    bootstrap = settings.kafka.bootstrap_servers
    # aiokafka logs every failed connection attempt; the CLI says it once, in its own words.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    consumer = make_consumer(settings, group_id=None, client_id=CLIENT_ID)
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise CliError(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}); {START_HINT}",
                       EXIT_UNREACHABLE) from None
    try:
        partitions = []
        for name in names:
            found = await _partitions(consumer, name)
            if not found:
                raise CliError(f"Kafka at {bootstrap} has no topic {name!r}: check "
                               f"PROMPTPULSE_KAFKA__TOPIC_PREFIX, or create the topics with `promptpulse topics`",
                               EXIT_NOT_FOUND)
            partitions += [TopicPartition(name, p) for p in sorted(found)]
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve now: what is published from here on is read
        yield consumer, names
    except KafkaError as exc:
        raise CliError(f"lost Kafka at {bootstrap} ({type(exc).__name__}); {START_HINT}", EXIT_UNREACHABLE) from None
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str, within: float = 5.0) -> set[int]:
    """The topic's partitions. A group-less consumer's metadata need not list a topic yet; the
    client's metadata refresh is private in aiokafka (the repository's tests use it too)."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        found = consumer.partitions_for_topic(topic)
        if found or time.monotonic() > deadline:
            return set(found or ())
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)


async def records(consumer: Any, names: list[str]) -> AsyncIterator[Any]:
    """Records as they arrive, in batches per partition, until a topic is deleted."""
    deleted = DeletedTopics(consumer, names)
    while True:
        batches = await consumer.getmany(timeout_ms=500, max_records=500)
        if not batches:
            deleted.check()
        for batch in batches.values():
            for record in batch:
                yield record


class DeletedTopics:
    """Ends a reader whose topics were deleted under it.

    aiokafka reports nothing then: ``getmany`` keeps returning empty batches while the client
    refreshes its metadata in a tight loop (measured: 60% of a core). A topic missing from the
    metadata for ``grace`` seconds in a row is taken as deleted (a refresh can briefly lack one)."""

    def __init__(self, consumer: Any, names: list[str], grace: float = 2.0) -> None:
        self._consumer = consumer
        self._names = names
        self._grace = grace
        self._missing_since: float | None = None

    def check(self) -> None:
        import time

        gone = [name for name in self._names if not self._consumer.partitions_for_topic(name)]
        if not gone:
            self._missing_since = None
            return
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        elif now - self._missing_since >= self._grace:
            raise CliError(f"topic {gone[0]!r} was deleted while being read", EXIT_NOT_FOUND)
