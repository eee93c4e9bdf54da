"""Spans received over OTLP, assembled into the requests they describe.

The gateway stores what applications send as spans (stamped ``promptpulse.ingest``), one
export at a time, in whatever gateway process the export reached. Whether a span is a request
needs the spans above it, which may come in a later export; here, over the stored spans, the
whole trace is at hand. One pass, every ``interval`` seconds, by one replica at a time
(advisory lock):

1. traces with OTLP spans stored since the last pass (looking 30 s further back for late
   commits) join ``otlp_pending``, unless assembled already with as many spans
   (``otlp_assembled``); once per deployment whose key sent spans of the trace, each assembled
   from its own spans under its own deployment;
2. each pending trace's spans are read and its root GenAI operations found
   (shared/otlp_ingest/genai.py). A root whose chain of parents is not known yet waits until
   the trace has been quiet for ``settle_seconds``, then is decided with what is known;
3. each new root becomes a request: in one transaction, its row in ``otlp_requests`` (keyed by
   the root span, so it is derived once), its request and response events in ``otlp_outbox``,
   and its spans tied to it (``spans.request_id``) so the trace shows under the request;
4. the outbox goes to the inference topic, where the processor samples and judges the request
   and the ingest counts it like a gateway's.

A call the application made through PromptPulse's proxy is a request already: the gateway's
server span of it is stored in the same trace, its parent the application's span that made the
call. A root ``chat`` with such a call below it becomes no request; its spans are tied to the
proxy's request instead (the last one: retries are calls of their own). An agent root is a
request whose usage leaves those calls out (shared/otlp_ingest/genai.py).

The events' ids are derived from the root span, so a crash between Kafka's acknowledgement and
the outbox's mark sends an event again that consumers drop by id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.aggregator.ingest.spans import KIND_NAMES, STATUS_NAMES
from services.aggregator.otlp.events import request_events
from shared.events.codec import encode, event_key
from shared.kafka import make_producer
from shared.otlp_ingest import conventions
from shared.otlp_ingest.decode import IngestedSpan, SpanEvent
from shared.otlp_ingest.genai import CountedCall, derive, find_roots
from shared.topics import Topics

log = logging.getLogger(__name__)

LOCK = 0x6F746C70  # "otlp": one assembler at a time across replicas
# A stored span's kind and status back to OTLP's numbers (the ingest's names, inverted).
_STATUS = {name: value for value, name in STATUS_NAMES.items()}
_KINDS = {name: value for value, name in KIND_NAMES.items()}
# Stored spans are looked at again this far back: a slow ingest transaction commits spans whose
# ingested_at (its start time) is older than a pass that already ran.
_LOOKBACK = timedelta(seconds=30)
_PENDING_BATCH = 200
_OUTBOX_BATCH = 200

# Each (trace, deployment) is assembled on its own: a trace exported with two deployments' keys
# holds the calls of both. One already assembled (otlp_assembled) comes back only with more
# received spans than were read then: the lookback finds it again every pass for 30 s, and most
# often nothing is new. The count looks only between the first and last start time of the spans
# read then and of the recent ones, so only the day partitions of spans in that range are probed
# (not every day's, for every trace, every pass). It holds every span read and every span found
# by the lookback, so it misses only a span the lookback cannot see either (one stored after the
# read by an ingest transaction that began before the lookback's start); rows written before
# migration 0018 have no range and count every partition.
_NEW_TRACES = """
INSERT INTO otlp_pending (trace_id, deployment, last_ingested)
SELECT recent.trace_id, recent.deployment, recent.last_ingested
FROM (SELECT trace_id, deployment, max(ingested_at) AS last_ingested,
             min(start_time) AS first_start, max(start_time) AS last_start
      FROM spans
      WHERE attributes ? 'promptpulse.ingest' AND ingested_at > $1 AND deployment IS NOT NULL
      GROUP BY trace_id, deployment) AS recent
LEFT JOIN otlp_assembled AS done ON done.trace_id = recent.trace_id AND done.deployment = recent.deployment
WHERE done.trace_id IS NULL
   OR done.received < (SELECT count(*) FROM spans
                       WHERE trace_id = recent.trace_id AND deployment = recent.deployment
                         AND attributes ? 'promptpulse.ingest'
                         AND start_time >= least(coalesce(done.first_start, '-infinity'), recent.first_start)
                         AND start_time <= greatest(coalesce(done.last_start, 'infinity'), recent.last_start))
ON CONFLICT (trace_id, deployment) DO UPDATE SET last_ingested = greatest(otlp_pending.last_ingested, EXCLUDED.last_ingested)
"""

# The trace's spans received over OTLP for the deployment (``received``), and, in the same read
# of the trace, the requests PromptPulse's gateway counted itself in it: the server span of each
# (our own span, not one received over OTLP) and the application's span it hangs below.
_TRACE_SPANS = """
SELECT span_id, parent_span_id, name, kind, start_time, end_time, status_code, status_message,
       attributes::text AS attributes, events::text AS events, resource::text AS resource, request_id,
       attributes ? 'promptpulse.ingest' AS received
FROM spans
WHERE trace_id = $1
  AND ((attributes ? 'promptpulse.ingest' AND deployment = $2)
       OR (kind = 'server' AND request_id IS NOT NULL AND parent_span_id IS NOT NULL
           AND NOT attributes ? 'promptpulse.ingest'))
"""


def _nanos(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def span_from_row(trace_id: str, row: asyncpg.Record) -> IngestedSpan:
    events = tuple(
        SpanEvent(str(item.get("name", "")), 0, item.get("attributes") or {})
        for item in json.loads(row["events"])
        if isinstance(item, dict)
    )
    return IngestedSpan(
        trace_id=trace_id,
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"] or "",
        parent_is_remote=None,  # not stored: a missing parent waits for the trace to settle
        name=row["name"],
        kind=_KINDS.get(row["kind"], 0),
        start_ns=_nanos(row["start_time"]),
        end_ns=_nanos(row["end_time"]),
        status_code=_STATUS.get(row["status_code"], 0),
        status_message=row["status_message"],
        attributes=json.loads(row["attributes"]),
        events=events,
        resource=json.loads(row["resource"]),
    )


@dataclass
class AssemblerStats:
    passes: int = 0
    derived: int = 0
    linked: int = 0  # root calls that went through the proxy: its request, no new one
    traces: int = 0  # traces read and assembled (a trace waiting to settle: once a pass)
    published: int = 0


class Assembler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer | None,
        topics: Topics,
        rate_of: Callable[[str], float],
        *,
        settle_seconds: float,
        keep_days: int,
        make_producer: Callable[[], AIOKafkaProducer] | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._make_producer = make_producer
        self._topics = topics
        self._rate_of = rate_of
        self._settle = timedelta(seconds=settle_seconds)
        self._keep = timedelta(days=keep_days)
        self._cursor = datetime.now(UTC) - timedelta(hours=1)
        self._producer_started = False
        self.stats = AssemblerStats()

    async def start_producer(self) -> bool:
        """Start the producer if it is not yet; False while Kafka is away (the outbox waits)."""
        if self._producer is None or self._producer_started:
            return True
        try:
            await self._producer.start()
        except (KafkaError, OSError) as exc:
            log.warning("OTLP assembly: Kafka unreachable, derived events wait in the outbox: %s", exc)
            with contextlib.suppress(Exception):
                await self._producer.stop()  # a failed start leaves a half-open client
            self._producer = self._make_producer() if self._make_producer is not None else None
            return False
        self._producer_started = True
        return True

    async def stop_producer(self) -> None:
        if self._producer is not None and self._producer_started:
            await self._producer.stop()

    async def run_pass(self) -> None:
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK):
                return  # another replica assembles
            try:
                await self._assemble(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK)
        await self.publish()
        self.stats.passes += 1

    async def _assemble(self, conn: Any) -> None:
        now = await conn.fetchval("SELECT now()")
        since = self._cursor - _LOOKBACK
        await conn.execute(_NEW_TRACES, since)
        self._cursor = now
        # Spans stored before the lookback's start are never found again: neither are these rows' traces.
        await conn.execute("DELETE FROM otlp_assembled WHERE assembled_at < $1", since)
        pending = await conn.fetch(
            "SELECT trace_id, deployment, last_ingested FROM otlp_pending ORDER BY last_ingested LIMIT $1",
            _PENDING_BATCH,
        )
        for row in pending:
            settled = now - row["last_ingested"] >= self._settle
            await self._assemble_trace(conn, row["trace_id"], row["deployment"], settled=settled,
                                       seen_until=row["last_ingested"])
        await conn.execute("DELETE FROM otlp_requests WHERE derived_at < $1", now - self._keep)

    async def _assemble_trace(
        self, conn: Any, trace_id: str, deployment: str, *, settled: bool, seen_until: datetime
    ) -> None:
        rows = await conn.fetch(_TRACE_SPANS, trace_id, deployment)
        self.stats.traces += 1
        spans = [span_from_row(trace_id, row) for row in rows if row["received"]]
        counted = [
            CountedCall(row["request_id"], row["parent_span_id"], _nanos(row["start_time"]))
            for row in rows
            if not row["received"]
        ]
        roots = find_roots(spans, settled=settled, counted=counted)
        rate = self._rate_of(deployment)
        for root in roots.decided:
            request = derive(root, spans, sampling_rate=rate, counted=counted)
            variant = str(root.attributes.get("promptpulse.variant", ""))
            async with conn.transaction():
                known = await conn.fetchval(
                    "SELECT request_id FROM otlp_requests WHERE trace_id = $1 AND root_span_id = $2",
                    trace_id,
                    root.span_id,
                )
                is_call = request.operation in conventions.CALL_OPERATIONS
                linking = known is None and is_call and bool(request.proxied_request_ids)
                if linking:
                    # The call itself went through the proxy: the proxy's request is its count.
                    known = request.proxied_request_ids[-1]
                elif known is None:
                    for event in request_events(request, deployment, variant):
                        encoded = encode(event)
                        await conn.execute(
                            "INSERT INTO otlp_outbox (key, value, headers) VALUES ($1, $2, $3::jsonb)",
                            event_key(event),
                            encoded.value,
                            json.dumps([[k, base64.b64encode(v).decode()] for k, v in encoded.headers]),
                        )
                    await conn.execute(
                        "INSERT INTO otlp_requests (trace_id, root_span_id, request_id, deployment, span_ids)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        trace_id,
                        root.span_id,
                        request.request_id,
                        deployment,
                        list(request.span_ids),
                    )
                    self.stats.derived += 1
                # Spans that arrived after the request was derived join it too.
                tied = await conn.fetch(
                    "UPDATE spans SET request_id = $3 WHERE trace_id = $1 AND span_id = ANY($2::text[])"
                    " AND request_id IS NULL RETURNING span_id",
                    trace_id,
                    list(request.span_ids),
                    known or request.request_id,
                )
                # A link is made once, when its root is tied: a trace read again (another root
                # still waits, or a span came later) finds the root tied and counts nothing.
                if linking and any(row["span_id"] == root.span_id for row in tied):
                    self.stats.linked += 1
        if not roots.undecided:
            # Every root decided: nothing to wait for, so the trace is not read again each pass.
            # A span stored later brings it back (step 1 of a later pass looks back 30 s and
            # compares the trace's received spans with the count read here).
            await conn.execute(
                "DELETE FROM otlp_pending WHERE trace_id = $1 AND deployment = $2 AND last_ingested <= $3",
                trace_id,
                deployment,
                seen_until,
            )
            starts = [row["start_time"] for row in rows if row["received"]]
            await conn.execute(
                "INSERT INTO otlp_assembled (trace_id, deployment, received, first_start, last_start)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (trace_id, deployment) DO UPDATE SET received = EXCLUDED.received,"
                " first_start = EXCLUDED.first_start, last_start = EXCLUDED.last_start, assembled_at = now()",
                trace_id,
                deployment,
                len(spans),
                min(starts, default=None),
                max(starts, default=None),
            )

    async def publish(self) -> None:
        if self._producer is None or not self._producer_started:
            return
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, key, value, headers::text AS headers FROM otlp_outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT $1",
                _OUTBOX_BATCH,
            )
            if not rows:
                return
            sends = [
                await self._producer.send(
                    self._topics.inference,
                    value=row["value"],
                    key=row["key"],
                    headers=[(k, base64.b64decode(v)) for k, v in json.loads(row["headers"])],
                )
                for row in rows
            ]
            await asyncio.gather(*sends)
            await conn.execute(
                "UPDATE otlp_outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
            await conn.execute("DELETE FROM otlp_outbox WHERE published_at < now() - interval '1 day'")
            self.stats.published += len(rows)


@contextlib.asynccontextmanager
async def running(
    settings: Any, pool: asyncpg.Pool, rate_of: Callable[[str], float], *, interval: float, settle_seconds: float
) -> AsyncIterator[Assembler]:
    """The assembler's loop for the aggregator's lifetime; the producer flushed on leaving."""
    # Started by the loop, not here: the aggregator comes up without Kafka (the outbox waits).
    def new_producer() -> AIOKafkaProducer:
        return make_producer(settings, client_id="promptpulse-aggregator-otlp")

    assembler = Assembler(
        pool,
        new_producer(),
        Topics.from_settings(settings),
        rate_of,
        settle_seconds=settle_seconds,
        keep_days=settings.aggregator.retention_days,
        make_producer=new_producer,
    )
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await assembler.start_producer()
                await assembler.run_pass()
            except (asyncpg.PostgresError, KafkaError, OSError) as exc:
                log.warning("OTLP assembly pass failed (retried next pass): %s", exc)
            except Exception:  # a bug must cost one pass, never the aggregator
                log.exception("OTLP assembly pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    task = asyncio.create_task(loop(), name="aggregator-otlp-assembler")
    try:
        yield assembler
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await assembler.stop_producer()
