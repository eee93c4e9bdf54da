"""The aggregator's two Kafka links for re-judges, run while the query API serves.

- Outbox: ``POST /v1/deployments/{d}/rejudges`` only stores a row; this loop publishes each row
  without ``published_at`` as a RejudgeCommand (keyed by re-judge id) and marks it once the
  broker acknowledged it. A crash between the two publishes the command again; the processor
  reads a repeat of a re-judge it knows as a resume, never as a second re-judge. Rows are
  claimed with SKIP LOCKED, so replicas share the work.
- Progress: the processor's RejudgeProgress records (a compacted topic, the latest record per
  re-judge) are read from the beginning by every replica, without a group, into the rows; a
  record older than the one stored is ignored.
- Retention: the inference topic's ``retention.ms``, read from the broker for the API's window
  check (cached for a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import asyncpg
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from shared.events.errors import EventDecodeError
from shared.events.rejudge import RejudgeCommand, RejudgeProgress, decode_rejudge, encode_rejudge
from shared.kafka import SettingsLike, make_admin, make_consumer, make_producer
from shared.topics import REJUDGE_PROGRESS_CONFIGS, Topics, ensure_topics

log = logging.getLogger(__name__)

_RETRY_SECONDS = 2.0
_RETENTION_CACHE_SECONDS = 60.0


def command_of(row: asyncpg.Record) -> RejudgeCommand:
    command = RejudgeCommand(
        rejudge_id=row["id"], deployment=row["deployment"], evaluator=row["evaluator"],
        evaluator_version=row["evaluator_version"], sample=row["sample"] or 0,
    )
    command.requested_at.FromDatetime(row["requested_at"])
    command.window_start.FromDatetime(row["window_start"])
    command.window_end.FromDatetime(row["window_end"])
    return command


class RejudgeLinks:
    def __init__(self, settings: SettingsLike, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool
        self.topics = Topics.from_settings(settings)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retention: tuple[float, int | None] | None = None  # (read at, retention ms)
        self.published = 0
        self.progress_records = 0

    def kick(self) -> None:
        """A row was added: publish it now rather than on the next pass."""
        self._wake.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="rejudge-outbox"),
            asyncio.create_task(self._progress_loop(), name="rejudge-progress"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- retention -------------------------------------------------------------------------------

    async def inference_retention_ms(self) -> int | None:
        """The inference topic's retention.ms (None: unlimited). Raises when the broker cannot say."""
        cached = self._retention
        if cached is not None and time.monotonic() - cached[0] < _RETENTION_CACHE_SECONDS:
            return cached[1]
        admin = make_admin(self._settings, client_id="promptpulse-aggregator-rejudge")
        await admin.start()
        try:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, self.topics.inference, None)]
            )
        finally:
            await admin.close()
        resource = responses[0].to_object()["resources"][0]
        if resource["error_code"] != 0:
            raise RuntimeError(f"the broker cannot describe {self.topics.inference}: error {resource['error_code']}")
        value = next((int(entry["config_value"]) for entry in resource["config_entries"]
                      if entry["config_names"] == "retention.ms"), -1)
        retention = None if value < 0 else value
        self._retention = (time.monotonic(), retention)
        return retention

    # -- outbox ----------------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        producer = None
        try:
            while True:
                try:
                    if producer is None:
                        producer = make_producer(self._settings, "promptpulse-aggregator-rejudge")
                        await producer.start()
                    await self._publish_pending(producer)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker or database away: the rows wait, retried
                    log.warning("cannot publish re-judge commands yet: %r", exc)
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _RETRY_SECONDS)
                self._wake.clear()
        finally:
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def _publish_pending(self, producer: object) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT * FROM rejudges WHERE published_at IS NULL ORDER BY requested_at LIMIT 50 "
                "FOR UPDATE SKIP LOCKED"
            )
            for row in rows:
                record = encode_rejudge(command_of(row))
                await producer.send_and_wait(  # type: ignore[attr-defined]
                    self.topics.rejudge_commands, value=record.value, key=row["id"].encode(), headers=record.headers,
                )
                await conn.execute("UPDATE rejudges SET published_at = now() WHERE id = $1", row["id"])
                self.published += 1

    # -- progress --------------------------------------------------------------------------------

    async def _progress_loop(self) -> None:
        while True:
            consumer = None
            try:
                await ensure_topics(self._settings, [self.topics.rejudge_progress], 1,
                                    configs=REJUDGE_PROGRESS_CONFIGS)
                consumer = make_consumer(self._settings, group_id=None, client_id="promptpulse-aggregator-rejudge",
                                         enable_auto_commit=False, auto_offset_reset="earliest")
                await consumer.start()
                partitions = consumer.partitions_for_topic(self.topics.rejudge_progress)
                while not partitions:  # a group-less consumer knows no topic until metadata is refreshed
                    await consumer._client.force_metadata_update()  # aiokafka has no public call for this
                    partitions = consumer.partitions_for_topic(self.topics.rejudge_progress)
                    if not partitions:
                        await asyncio.sleep(0.2)
                consumer.assign([TopicPartition(self.topics.rejudge_progress, p) for p in sorted(partitions)])
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for records in batches.values():
                        for record in records:
                            await self._store_progress(record.value, record.headers)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read re-judge progress yet: %r", exc)
                await asyncio.sleep(_RETRY_SECONDS)
            finally:
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()

    async def _store_progress(self, value: bytes | None, headers: object) -> None:
        try:
            progress = decode_rejudge(value, headers, RejudgeProgress)  # type: ignore[arg-type]
        except EventDecodeError as exc:
            log.warning("skipping an unreadable re-judge progress record: %s", exc)
            return
        updated = progress.updated_at.ToDatetime(tzinfo=UTC) if progress.HasField("updated_at") else datetime.now(UTC)
        await self._pool.execute(
            """UPDATE rejudges SET status = $2, total = $3, judged = $4, published = $5, message = $6,
                                   progress_at = $7
               WHERE id = $1 AND (progress_at IS NULL OR progress_at <= $7)""",
            progress.rejudge_id, progress.status or "running", progress.total if progress.total or
            progress.status != "running" else None, progress.judged, progress.published,
            progress.message or None, updated,
        )
        self.progress_records += 1
