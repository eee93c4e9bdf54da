"""Test support for the aggregator: realistic events, Kafka helpers, an in-process aggregator,
and the offline recomputation of every rollup from the raw rows in plain SQL.

The recomputation is deliberately independent of services/aggregator: it is written here in
SQL (with the histogram's bucket formula spelled out) so a bug in the aggregator's own delta
code cannot hide itself by being used to check itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiokafka import TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from services.aggregator.app import INGESTOR, create_app
from services.aggregator.settings import AggregatorSection, AggregatorSettings
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import encode, event_key
from shared.events.messages import (
    Evaluation,
    EvaluationErrorType,
    Feedback,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
    JudgeCall,
    LlmUsage,
)
from shared.kafka import make_consumer, make_producer
from shared.settings import KafkaSettings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.support.alertmanager import serving

METRICS = ("groundedness", "relevance", "coherence", "fluency")
CONSUMED = ("inference", "evaluations", "feedback", "spans")


@dataclass(frozen=True)
class Message:
    role: str  # inference | evaluations | feedback | spans
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def uuid7_at(moment: datetime, rng: random.Random) -> str:
    """A UUIDv7 created at ``moment``, as the gateway's request ids are at the request's start."""
    unix_ms = int(moment.timestamp() * 1000)
    value = unix_ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def _encoded(role: str, event: Any) -> Message:
    record = encode(event)
    return Message(role, event_key(event), record.value, record.headers)


def _attr(key: str, value: Any) -> KeyValue:
    any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=str(value))
    return KeyValue(key=key, value=any_value)


def spans_message(trace_id: str, start: datetime, count: int, request_id: str, deployment: str) -> Message:
    export = ExportTraceServiceRequest()
    resource_spans = export.resource_spans.add()
    resource_spans.resource.attributes.append(_attr("service.name", "gateway"))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "promptpulse.gateway.flow"
    start_ns = int(start.timestamp() * 1e9)
    root = bytes.fromhex(trace_id[:16])
    for index in range(count):
        span = scope.spans.add()
        span.trace_id = bytes.fromhex(trace_id)
        span.span_id = root if index == 0 else bytes.fromhex(f"{index:016x}")
        if index:
            span.parent_span_id = root
        span.name = "invoke_workflow demo" if index == 0 else f"chat node{index}"
        span.kind = Span.SPAN_KIND_SERVER if index == 0 else Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = start_ns + index * 1000
        span.end_time_unix_nano = start_ns + 5_000_000
        span.attributes.append(_attr("promptpulse.request_id", request_id))
        span.attributes.append(_attr("promptpulse.deployment", deployment))
        span.attributes.append(_attr("gen_ai.usage.input_tokens", 10 + index))
    return Message("spans", trace_id.encode(), export.SerializeToString(), [("pp-event-type", b"otlp.traces")])


class EventFactory:
    """The realistic mix: per request 1 request, 1 response, 5 spans, sometimes evaluations and
    feedback. Seeded, so a test is reproducible."""

    def __init__(self, seed: int = 7, deployment: str = "demo", variants=("a", "b"), judged_share: float = 0.1):
        self.rng = random.Random(seed)
        self.deployment = deployment
        self.variants = variants
        self.judged_share = judged_share

    def request(self, start: datetime, *, run_id: str = "", judged: bool | None = None, feedback: bool = False,
                deployment: str | None = None) -> list[Message]:
        rng = self.rng
        request_id = uuid7_at(start, rng)
        trace_id = f"{rng.getrandbits(128):032x}"
        variant = rng.choice(self.variants)
        meta = new_meta(
            request_id=request_id,
            deployment=deployment or self.deployment,
            request_start_time=start,
            variant=variant,
            run_id=run_id,
            traceparent=f"00-{trace_id}-{rng.getrandbits(64):016x}-01",
        )
        streaming = rng.random() < 0.5
        messages = [
            _encoded("inference", InferenceRequest(meta=meta, inputs=dict_to_struct({"question": "q?"}), streaming=streaming))
        ]
        error = rng.random() < 0.1
        response = InferenceResponse(
            meta=next_meta(meta),
            status=InferenceStatus.INFERENCE_STATUS_ERROR if error else InferenceStatus.INFERENCE_STATUS_OK,
            error_type=rng.choice(["llm_rate_limited", "llm_timeout"]) if error else "",
            latency_ms=math.exp(rng.gauss(6.0, 1.0)),
            usage=[
                LlmUsage(node="answer", model=rng.choice(["gpt-4o", "gpt-4o-mini"]), prompt_tokens=rng.randint(50, 500),
                         completion_tokens=rng.randint(10, 200), total_tokens=0),
                LlmUsage(node="refine", model="gpt-4o-mini", prompt_tokens=30, completion_tokens=5, total_tokens=35),
            ],
        )
        response.usage[0].total_tokens = response.usage[0].prompt_tokens + response.usage[0].completion_tokens
        if streaming:
            response.time_to_first_token_ms = math.exp(rng.gauss(5.0, 0.7))
        if not error:
            response.outputs.CopyFrom(dict_to_struct({"answer": "a."}))
        messages.append(_encoded("inference", response))
        messages.append(spans_message(trace_id, start, 5, request_id, meta.deployment))
        if judged if judged is not None else rng.random() < self.judged_share:
            messages.extend(self.evaluations(meta))
        if feedback:
            fb_meta = new_meta(request_id=request_id, deployment=meta.deployment, request_start_time=None)
            messages.append(_encoded("feedback", Feedback(meta=fb_meta, rating=rng.choice([1, 5]), comment="ok")))
        return messages

    def evaluations(self, meta: Any) -> list[Message]:
        out = []
        for metric in METRICS:
            event = Evaluation(meta=next_meta(meta), metric=metric)
            draw = self.rng.random()
            if draw < 0.8:
                event.judge.CopyFrom(JudgeCall(model="judge-1", prompt_version="v1", prompt_tokens=300,
                                               completion_tokens=20, latency_ms=self.rng.uniform(100, 900)))
                event.scored.score = self.rng.randint(1, 5)
                event.scored.reason = "because"
            elif draw < 0.9:
                event.not_applicable.reason = "no context"
            else:
                event.judge.CopyFrom(JudgeCall(model="judge-1", prompt_version="v1", prompt_tokens=300,
                                               completion_tokens=7, latency_ms=50.0))
                event.error.type = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
                event.error.message = "no JSON"
            out.append(_encoded("evaluations", event))
        return out


def aggregator_settings(dsn: str, prefix: str, group: str, **section: Any) -> AggregatorSettings:
    section.setdefault("batch_max_wait_ms", 50)
    return AggregatorSettings(
        database_url=dsn,
        kafka=KafkaSettings(topic_prefix=prefix, partitions=3),
        deployments_dir=Path("/nonexistent/promptpulse-deployments"),
        aggregator=AggregatorSection(group_id=group, port=0, **section),
    )


async def create_topics(settings: AggregatorSettings) -> Topics:
    topics = Topics.from_settings(settings)
    await ensure_topics(settings, [getattr(topics, role) for role in CONSUMED])
    return topics


@asynccontextmanager
async def topics_with_alerts(settings: AggregatorSettings) -> AsyncIterator[Topics]:
    """The consumed topics and the alerts topic of ``settings``' prefix, deleted afterwards."""
    topics = await create_topics(settings)
    await ensure_topics(settings, [topics.alerts])
    try:
        yield topics
    finally:
        await delete_topics(settings, [*(getattr(topics, role) for role in CONSUMED), topics.alerts])


@asynccontextmanager
async def settings_on_own_topics(dsn: str, group: str) -> AsyncIterator[AggregatorSettings]:
    """Settings for one test's aggregator, on consumed topics of its own (deleted afterwards)."""
    made = aggregator_settings(dsn, f"it-{uuid.uuid4().hex[:8]}.", group)
    topics = await create_topics(made)
    try:
        yield made
    finally:
        await delete_topics(made, [getattr(topics, role) for role in CONSUMED])


async def produce(settings: AggregatorSettings, messages: list[Message]) -> None:
    topics = Topics.from_settings(settings)
    producer = make_producer(settings, "it-aggregator-producer")
    await producer.start()
    try:
        for message in messages:
            await producer.send(getattr(topics, message.role), value=message.value, key=message.key,
                                headers=message.headers)
        await producer.flush()
    finally:
        await producer.stop()


async def end_offsets(settings: AggregatorSettings) -> dict[tuple[str, int], int]:
    """The end offset of every consumed partition (topics made by create_topics)."""
    topics = Topics.from_settings(settings)
    partitions = [
        TopicPartition(getattr(topics, role), p) for role in CONSUMED for p in range(settings.kafka.partitions)
    ]
    consumer = make_consumer(settings, group_id=None, client_id="it-end-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def stored_offsets(dsn: str, group: str) -> dict[tuple[str, int], int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT topic, kafka_partition, next_offset FROM consumer_offsets WHERE consumer_group = $1", group
        )
    finally:
        await conn.close()
    return {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in rows}


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_caught_up(settings: AggregatorSettings, seconds: float = 60) -> None:
    """Until the offsets stored in Postgres reach the end of every consumed partition."""
    ends = {tp: o for tp, o in (await end_offsets(settings)).items() if o > 0}
    dsn, group = settings.database_url.get_secret_value(), settings.group_id()

    async def caught_up() -> bool:
        stored = await stored_offsets(dsn, group)
        return all(stored.get(tp, 0) >= offset for tp, offset in ends.items())

    await wait_for(caught_up, seconds, "the aggregator to store every produced record")


@asynccontextmanager
async def running_aggregator(settings: AggregatorSettings) -> AsyncIterator[web.Application]:
    """The aggregator's app started in this process (no HTTP listener needed)."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        yield runner.app
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving_aggregator(settings: AggregatorSettings) -> AsyncIterator[tuple[web.Application, str]]:
    """The aggregator's app, the real wiring (ingest, monitors, query API, dashboard), served on a
    free loopback port: the app and its base URL."""
    app = create_app(settings)
    async with serving(app) as base:
        yield app, base


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """The events of a server-sent event stream (the query API's ``/v1/stream/metrics``), each
    as its name and its JSON data, until the stream ends."""
    name, data = None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name is not None:
            yield name, json.loads("".join(data))
            name, data = None, []


def ingestor_of(app: web.Application):
    return app[INGESTOR]


def minutes_ago(now: datetime, minutes: float) -> datetime:
    return now - timedelta(minutes=minutes)
