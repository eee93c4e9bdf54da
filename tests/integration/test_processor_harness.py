"""What the processor's integration tests share, and the tests of the harness itself.

Every test gets its own topics (``it-<hex>.`` prefix) and consumer group, a real broker
(127.0.0.1:9092) and llmsim on a free loopback port as the judge. Events are produced directly
with aiokafka, as the gateway would publish them.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.llmsim.app import create_app as create_llmsim_app
from services.llmsim.settings import LatencyModel, LlmsimSection
from services.processor.app import ProcessorService
from services.processor.settings import ProcessorSection, ProcessorSettings
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import decode, encode, event_key
from shared.events.messages import (
    Evaluation,
    InferenceRequest,
    InferenceResponse,
    InferenceStatus,
)
from shared.kafka import make_admin, make_producer
from shared.settings import KafkaSettings, load_settings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.support.prometheus_text import assert_promtool_clean
from tests.support.prometheus_text import value as metric_value

INSTANT = LatencyModel(ttft_ms=0, tokens_per_second=1_000_000, jitter=0)
DEFAULT_MAPPING = {
    "question": "inputs.question",
    "context": "inputs.context",
    "ground_truth": "inputs.truth",
    "answer": "outputs.answer",
}


# -- llmsim -----------------------------------------------------------------------------------


@dataclass
class Sim:
    url: str

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"{self.url}{path}", json=body) as response:
                assert response.status == 200, await response.text()
                return await response.json()


@asynccontextmanager
async def llmsim(**overrides: Any) -> AsyncIterator[Sim]:
    overrides.setdefault("latency", INSTANT)
    runner = web.AppRunner(create_llmsim_app(LlmsimSection(port=0, seed=7, **overrides)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Sim(url=f"http://{host}:{port}")
    finally:
        await runner.cleanup()


# -- deployments and settings -----------------------------------------------------------------


def write_deployments(
    folder: Path, sim_url: str, deployments: dict[str, dict[str, Any]]
) -> Path:
    """A deployments folder: ``deployments`` maps name -> evaluation overrides (metrics,
    evaluators, sampling_rate, model, budget, combined, column_mapping)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connections.yaml").write_text(
        yaml.safe_dump(
            {"connections": {"llmsim": {"type": "openai_compatible", "base_url": f"{sim_url}/v1", "api_key": "none"}}}
        )
    )
    for name, spec in deployments.items():
        document = {
            "name": name,
            "flow": "flows/unused",  # the processor never reads flows (check_flow=False)
            "column_mapping": spec.get("column_mapping", DEFAULT_MAPPING),
            "evaluation": {
                "metrics": spec.get("metrics", ["relevance"]),
                "sampling_rate": spec.get("sampling_rate", 1.0),
                "judge": {
                    "connection": "llmsim",
                    "model": spec.get("model", "llmsim-judge"),
                    "token_budget_per_hour": spec.get("budget", 10_000_000),
                    "combined_call": spec.get("combined", False),
                },
            },
        }
        if "evaluators" in spec:
            document["evaluation"]["evaluators"] = spec["evaluators"]
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processor_settings(prefix: str, deployments_dir: Path, partitions: int = 3, **section: Any) -> ProcessorSettings:
    section.setdefault("port", 0)
    section.setdefault("commit_interval_seconds", 0.2)
    section.setdefault("retry_base_seconds", 0.01)
    section.setdefault("retry_max_seconds", 0.05)
    section.setdefault("shutdown_drain_seconds", 5.0)
    return load_settings(
        ProcessorSettings,
        kafka=KafkaSettings(topic_prefix=prefix, partitions=partitions),
        deployments_dir=deployments_dir,
        processor=ProcessorSection(**section),
    )


# -- events -------------------------------------------------------------------------------------


def request_event(
    request_id: str,
    deployment: str,
    inputs: dict[str, Any],
    *,
    run_id: str = "",
    traceparent: str = "",
    variant: str = "",
) -> InferenceRequest:
    meta = new_meta(
        request_id=request_id, deployment=deployment, request_start_time=datetime.now(UTC),
        run_id=run_id, traceparent=traceparent, variant=variant,
    )
    return InferenceRequest(meta=meta, inputs=dict_to_struct(inputs))


def response_event(
    request: InferenceRequest,
    outputs: dict[str, Any],
    status: int = InferenceStatus.INFERENCE_STATUS_OK,
    error_type: str = "",
) -> InferenceResponse:
    response = InferenceResponse(meta=next_meta(request.meta), status=status, latency_ms=12.5)
    if status == InferenceStatus.INFERENCE_STATUS_OK:
        response.outputs.CopyFrom(dict_to_struct(outputs))
    response.error_type = error_type
    return response


class Producer:
    """The project's producer, sending events as the gateway does."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._producer = make_producer(kafka, client_id="it-gateway")

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, events: Iterable[Any]) -> list[Any]:
        deliveries = []
        for event in events:
            record = encode(event)
            deliveries.append(
                await self._producer.send(topic, value=record.value, key=event_key(event), headers=record.headers)
            )
        return list(await asyncio.gather(*deliveries))

    async def send_raw(self, topic: str, *, key: bytes | None, value: bytes | None, headers: list | None = None) -> Any:
        delivery = await self._producer.send(topic, key=key, value=value, headers=headers or [])
        return await delivery


# -- reading results ---------------------------------------------------------------------------


async def read_topic(
    kafka: KafkaSettings,
    topic: str,
    until: Callable[[list[Any]], bool],
    within: float = 30.0,
    linger: float = 0.0,
) -> list[Any]:
    """Every record of ``topic`` from the start, read until ``until(records)`` or ``within`` s,
    then for ``linger`` more seconds (so a late duplicate would be seen)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 10
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        records: list[Any] = []
        deadline = time.monotonic() + within
        while not until(records) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rows in batch.values():
                records.extend(rows)
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for rows in batch.values():
                records.extend(rows)
        return records
    finally:
        await consumer.stop()


def evaluations(records: Iterable[Any]) -> list[Evaluation]:
    return [decode(record.value, record.headers) for record in records]


async def read_evaluations(
    kafka: KafkaSettings, topics: Topics, count: int, within: float = 30.0, settle: float = 0.5
) -> list[Evaluation]:
    """At least ``count`` evaluations, then whatever else arrives within ``settle`` seconds (so a
    duplicate would be seen)."""
    records = await read_topic(
        kafka, topics.evaluations, lambda rows: len(rows) >= count, within, linger=settle
    )
    return evaluations(records)


async def committed_offsets(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    admin = make_admin(kafka, client_id="it-admin")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    await consumer.start()
    # aiokafka's stop() awaits a background task it cancels; one cancelled before it ever ran
    # re-raises CancelledError, so let it start first.
    await asyncio.sleep(0.01)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def committed_to_end(kafka: KafkaSettings, group: str, topic: str, within: float = 20.0) -> dict[int, int]:
    """Wait until ``group`` has committed the end of every non-empty partition of ``topic``."""
    ends = await end_offsets(kafka, topic)
    deadline = time.monotonic() + within
    while True:
        committed = await committed_offsets(kafka, group, topic)
        if all(committed.get(p, -1) == end for p, end in ends.items() if end):
            return committed
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {committed} never reached the end offsets {ends}")
        await asyncio.sleep(0.1)


async def wait_for(predicate: Callable[[], bool], within: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- one processor under test ------------------------------------------------------------------


@dataclass
class Stage:
    """Topics, a judge and a deployments folder for one test."""

    kafka: KafkaSettings
    topics: Topics
    sim: Sim
    deployments_dir: Path
    prefix: str
    services: list[ProcessorService] = field(default_factory=list)

    def settings(self, **section: Any) -> ProcessorSettings:
        partitions = section.pop("partitions", self.kafka.partitions)
        return processor_settings(self.prefix, self.deployments_dir, partitions, **section)

    @asynccontextmanager
    async def processor(self, **kwargs: Any) -> AsyncIterator[ProcessorService]:
        tracer = kwargs.pop("tracer", None)
        service = ProcessorService(self.settings(**kwargs), tracer=tracer)
        self.services.append(service)
        async with service:
            await wait_for(lambda: bool(service.faust_app.consumer.assignment()), 30, "a partition assignment")
            yield service


@asynccontextmanager
async def stage(
    tmp_path: Path, deployments: dict[str, dict[str, Any]], *, partitions: int = 3, **llmsim_overrides: Any
) -> AsyncIterator[Stage]:
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    kafka = KafkaSettings(topic_prefix=prefix, partitions=partitions)
    topics = Topics.from_prefix(prefix)
    await ensure_topics(kafka, [topics.inference, topics.evaluations, topics.deadletter_processor])
    try:
        async with llmsim(**llmsim_overrides) as sim:
            folder = write_deployments(tmp_path / "deployments", sim.url, deployments)
            yield Stage(kafka=kafka, topics=topics, sim=sim, deployments_dir=folder, prefix=prefix)
    finally:
        leader = f"{prefix}processor-__assignor-__leader"
        await delete_topics(kafka, [*topics.all(), leader])


QA = {
    "question": "How many days after purchase can I ask for a refund?",
    "context": "Refunds are accepted within 30 days of purchase. Shipping takes five business days.",
    "truth": "You can ask for a refund within 30 days of purchase.",
}
ANSWER = "Refunds are accepted within 30 days of purchase."


# -- tests of the harness and of the service's outward shape -------------------------------------


async def test_processor_judges_a_sampled_request_and_serves_ops_on_loopback(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {"metrics": ["relevance"]}}) as st:
        async with st.processor() as service, Producer(st.kafka) as producer:
            request = request_event("req-1", "shop", QA)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = await read_evaluations(st.kafka, st.topics, 1)
            assert [(e.meta.request_id, e.metric, e.WhichOneof("outcome")) for e in found] == [
                ("req-1", "relevance", "scored")
            ]
            port = service.ops.port
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    assert response.status == 200
                    body = await response.json()
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    metrics = await response.text()
            assert body["status"] == "ok" and body["deployments"] == ["shop"]
            assert metric_value(metrics, "promptpulse_processor_evaluations_total", deployment="shop", metric="relevance",
                                outcome="scored") == 1
            assert_promtool_clean(metrics)
            # faust's own web server (0.0.0.0:6066 by default) is off.
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", 6066)) != 0


async def test_ops_listener_is_not_reachable_on_other_interfaces(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}) as st, st.processor() as service:
        sockets = service.ops._runner.addresses
        assert sockets and all(address[0] == "127.0.0.1" for address in sockets)
