"""Topic names and idempotent topic creation.

Brokers in production run with ``auto.create.topics.enable=false`` (a typo in a topic name
must fail loudly, not create a one-partition topic nobody reads), so every installation
creates its topics explicitly: ``promptpulse topics`` at deploy time, tests per test.

Creation is idempotent: a topic that already exists is fine. An existing topic with fewer
partitions than configured is reported as a warning, not an error, because partitions can
only be added (and adding them moves keys to other partitions, breaking per-request order
for events in flight), so that is an operator's decision, never a start-up side effect.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka import SettingsLike, kafka_settings, make_admin

log = logging.getLogger(__name__)

# Kafka's own rule for topic names (kafka.common.internals.Topic).
_LEGAL_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_LEADER_NOT_AVAILABLE = 5


class TopicError(Exception):
    """A topic name is illegal, or the broker refused to create a topic."""


def check_topic_name(name: str) -> str:
    if not isinstance(name, str) or not _LEGAL_TOPIC.match(name) or name in (".", ".."):
        raise TopicError(
            f"illegal Kafka topic name {name!r}: use 1-249 of [A-Za-z0-9._-] "
            "(check PROMPTPULSE_KAFKA__TOPIC_PREFIX)"
        )
    return name


@dataclass(frozen=True)
class Topics:
    """Every topic of one installation, named ``<prefix><role>``."""

    inference: str
    tokens: str
    evaluations: str
    evaluations_retry: str
    feedback: str
    spans: str
    alerts: str
    deadletter_processor: str
    deadletter_aggregator: str
    # Re-judging past traffic (docs/evaluation.md): commands from the aggregator's API to the
    # processor, and the processor's progress (compacted: the latest record per re-judge).
    rejudge_commands: str
    rejudge_progress: str

    @classmethod
    def from_prefix(cls, prefix: str) -> Topics:
        names = {
            "inference": "inference",
            "tokens": "tokens",
            "evaluations": "evaluations",
            "evaluations_retry": "evaluations.retry",
            "feedback": "feedback",
            "spans": "spans",
            "alerts": "alerts",
            "deadletter_processor": "deadletter.processor",
            "deadletter_aggregator": "deadletter.aggregator",
            "rejudge_commands": "rejudge.commands",
            "rejudge_progress": "rejudge.progress",
        }
        return cls(**{attr: check_topic_name(prefix + role) for attr, role in names.items()})

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> Topics:
        """Raises TopicError when the configured prefix makes an illegal name."""
        return cls.from_prefix(kafka_settings(settings).topic_prefix)

    def all(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


# The progress topic keeps the latest record per re-judge forever (compaction, never deletion):
# it is the durable state an interrupted re-judge resumes from.
REJUDGE_PROGRESS_CONFIGS = {"cleanup.policy": "compact"}


@dataclass
class EnsureTopicsResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # Human-readable problems that need an operator but do not stop a service.
    warnings: list[str] = field(default_factory=list)


async def ensure_topics(
    settings: SettingsLike,
    names: Iterable[str],
    partitions: int | None = None,
    *,
    configs: Mapping[str, str] | None = None,
    wait_seconds: float = 30.0,
) -> EnsureTopicsResult:
    """Create the topics that do not exist yet, then wait until each has a leader.

    ``partitions`` defaults to the configured partition count, the replication factor is
    always the configured one. Raises TopicError for an illegal name or a refusal other than
    "already exists" (for example a replication factor above the number of brokers).
    """
    kafka = kafka_settings(settings)
    wanted = list(dict.fromkeys(check_topic_name(n) for n in names))
    count = partitions if partitions is not None else kafka.partitions
    if count < 1:
        raise TopicError(f"a topic needs at least one partition, not {count}")
    result = EnsureTopicsResult()
    if not wanted:
        return result
    admin = make_admin(kafka, client_id="promptpulse-topics")
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(n, count, kafka.replication_factor, topic_configs=dict(configs or {})) for n in wanted],
            timeout_ms=int(wait_seconds * 1000),
        )
        for row in response.to_object()["topic_errors"]:
            name, code = row["topic"], row["error_code"]
            if code == 0:
                result.created.append(name)
            elif code == _TOPIC_ALREADY_EXISTS:
                result.existing.append(name)
            else:
                hint = (
                    " (PROMPTPULSE_KAFKA__REPLICATION_FACTOR may exceed the number of brokers)"
                    if "replication" in (row.get("error_message") or "").lower()
                    else ""
                )
                raise TopicError(
                    f"broker refused to create topic {name!r}: error {code} "
                    f"{row.get('error_message') or ''}{hint}".rstrip()
                )
        have = await _wait_for_leaders(admin, wanted, wait_seconds)
    finally:
        await admin.close()
    for name in result.existing:
        if have.get(name, count) < count:
            message = (
                f"topic {name!r} exists with {have[name]} partitions, fewer than the configured "
                f"{count}: at most {have[name]} consumers per group can share its work"
            )
            result.warnings.append(message)
            log.warning(message)
    if result.created:
        log.info("created topics", extra={"topics": result.created, "partitions": count})
    return result


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], wait_seconds: float) -> dict[str, int]:
    """Partition counts once every partition of every topic has a leader.

    A freshly created topic is briefly unknown to the metadata cache; a producer started in
    that window only retries, but a consumer assigned nothing would sit idle until its next
    metadata refresh, which in a test looks like lost messages.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        described = await admin.describe_topics(names)
        counts: dict[str, int] = {}
        ready = True
        for topic in described:
            if topic["error_code"] in (_UNKNOWN_TOPIC, _LEADER_NOT_AVAILABLE) or not topic["partitions"]:
                ready = False
                continue
            counts[topic["topic"]] = len(topic["partitions"])
            if any(p["leader"] < 0 for p in topic["partitions"]):
                ready = False
        if ready and len(counts) == len(names):
            return counts
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(counts))
            raise TopicError(f"topics not ready after {wait_seconds:.0f}s: {missing or names}")
        await asyncio.sleep(0.1)


async def delete_topics(settings: SettingsLike, names: Iterable[str]) -> None:
    """Delete topics (tests and tools only). Topics that do not exist are ignored."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    admin = make_admin(settings, client_id="promptpulse-topics")
    await admin.start()
    try:
        await admin.delete_topics(wanted)
    finally:
        await admin.close()
