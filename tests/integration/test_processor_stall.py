"""Stall detection against the real broker: a partition whose intake stops while records wait turns
/healthz 503 (naming it) and recovers when intake resumes; a caught-up idle worker and a worker
held back by judging (back-pressure) stay healthy.

The stall is made genuinely, not mocked: faust's own consumer is told to stop handing one
partition's records to the stream (``Consumer.pause_partitions``, the switch faust itself flips
during rebalances and when a stream buffer is full), so the records sit in the fetcher while the
end offset grows, exactly what "assigned but consuming nothing" looks like from outside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from faust.types import TP

from services.processor.app import ProcessorService
from services.processor.evaluation.pipeline import WORKERS_PER_PLACE
from shared.events.codec import encode, event_key
from shared.kafka import make_producer
from shared.settings import KafkaSettings
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    read_evaluations,
    request_event,
    response_event,
    stage,
    wait_for,
)
from tests.support.prometheus_text import value


class PartitionProducer:
    """Sends request/response pairs of one deployment to one chosen partition."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._producer = make_producer(kafka, client_id="it-stall")

    async def __aenter__(self) -> PartitionProducer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def pairs(self, topic: str, partition: int, prefix: str, count: int) -> None:
        for i in range(count):
            request = request_event(f"{prefix}-{i}", "shop", QA)
            for event in (request, response_event(request, {"answer": ANSWER})):
                record = encode(event)
                await self._producer.send_and_wait(
                    topic, value=record.value, key=event_key(event), headers=record.headers,
                    partition=partition,
                )


async def healthz(service: ProcessorService) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{service.ops.port}/healthz") as response:
            return response.status, await response.json()


async def metrics(service: ProcessorService) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{service.ops.port}/metrics") as response:
            assert response.status == 200
            return await response.text()


def sample(text: str, name: str, **labels: Any) -> float | None:
    """The value of one sample of /metrics (None if absent)."""
    return value(text, f"promptpulse_processor_{name}", **labels)


async def wait_for_health(service: ProcessorService, status: int, within: float) -> dict[str, Any]:
    last: list[Any] = [None]

    async def poll() -> bool:
        last[0] = await healthz(service)
        return last[0][0] == status

    deadline = time.monotonic() + within
    while not await poll():
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz never answered {status}; last answer {last[0]}")
        await asyncio.sleep(0.1)
    return last[0][1]


async def checks_pass(service: ProcessorService, count: int, within: float = 60.0) -> None:
    """Wait until the stall watch has looked ``count`` more times."""
    assert service.stalls is not None
    target = service.stalls.checks + count
    await wait_for(lambda: service.stalls.checks >= target, within, f"{count} stall checks")


def inference_assignment(service: ProcessorService) -> list[int]:
    topic = service.topics.inference
    return sorted(tp.partition for tp in service.faust_app.consumer.assignment() if tp.topic == topic)


@pytest.mark.timeout(150)
async def test_a_partition_whose_intake_stops_turns_healthz_503_and_recovers_when_it_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.processor.stall")
    async with stage(tmp_path, {"shop": {"metrics": ["relevance"]}}, partitions=2) as st:
        topic = st.topics.inference
        async with st.processor(stall_seconds=2) as service, PartitionProducer(st.kafka) as producer:
            await wait_for(lambda: inference_assignment(service) == [0, 1], 30, "both partitions")
            await producer.pairs(topic, 0, "warm-0", 1)
            await producer.pairs(topic, 1, "warm-1", 1)
            await wait_for(lambda: service.stats.events == 4, 30, "the first events taken in")
            await checks_pass(service, 2)
            status, body = await healthz(service)
            assert (status, body["status"], body["stalled_partitions"]) == (200, "ok", [])

            # Intake of partition 0 stops; records keep arriving on both partitions.
            consumer = service.faust_app.consumer
            consumer.pause_partitions({TP(topic, 0)})
            await producer.pairs(topic, 0, "held", 3)
            await producer.pairs(topic, 1, "flowing", 3)
            await wait_for(lambda: service.stats.events == 10, 30, "partition 1 still taken in")

            body = await wait_for_health(service, 503, within=30)
            assert body["status"] == "stalled"
            assert [(r["topic"], r["partition"], r["lag"]) for r in body["stalled_partitions"]] == [(topic, 0, 6)]
            assert body["stalled_partitions"][0]["seconds_without_intake"] >= 2
            # It stays reported, and is logged once however many checks see it.
            await checks_pass(service, 4)
            status, body = await healthz(service)
            assert status == 503 and [r["partition"] for r in body["stalled_partitions"]] == [0]
            text = await metrics(service)
            assert sample(text, "stalled_partitions") == 1
            assert sample(text, "partition_stalled", topic=topic, partition=0) == 1
            assert sample(text, "partition_stalled", topic=topic, partition=1) == 0
            assert sample(text, "intake_lag", topic=topic, partition=0) == 6
            assert sample(text, "intake_lag", topic=topic, partition=1) == 0
            assert sample(text, "intake_stalls_total") == 1
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "services.processor.stall"]
            assert len(warnings) == 1, warnings
            assert f"{topic}[0]" in warnings[0] and "6 records" in warnings[0]
            assert "'paused': True" in warnings[0]  # faust's own view, for whoever investigates

            # Intake resumes: the records are taken in and judged, and health comes back.
            consumer.resume_partitions({TP(topic, 0)})
            body = await wait_for_health(service, 200, within=30)
            assert body["status"] == "ok" and body["stalled_partitions"] == []
            found = await read_evaluations(st.kafka, st.topics, 8)
            text = await metrics(service)
    assert sorted(e.meta.request_id for e in found) == sorted(
        ["warm-0-0", "warm-1-0"] + [f"held-{i}" for i in range(3)] + [f"flowing-{i}" for i in range(3)]
    )
    assert sample(text, "stalled_partitions") == 0
    assert sample(text, "partition_stalled", topic=topic, partition=0) == 0
    assert any("no longer stalled" in r.getMessage() and f"{topic}[0]" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(120)
async def test_a_caught_up_idle_worker_stays_healthy_past_stall_seconds(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}, partitions=2) as st:
        topic = st.topics.inference
        async with st.processor(stall_seconds=1) as service, PartitionProducer(st.kafka) as producer:
            await wait_for(lambda: inference_assignment(service) == [0, 1], 30, "both partitions")
            # Partition 0 is read up to its end; partition 1 is never written (nor read).
            await producer.pairs(topic, 0, "only", 2)
            await wait_for(lambda: service.stats.events == 4, 30, "the events taken in")
            # At least 3 x stall_seconds of looks (one every 0.25 s), every answer healthy.
            assert service.stalls is not None and service.stalls.interval == 0.25
            target = service.stalls.checks + 12
            answers = []
            while service.stalls.checks < target:
                answers.append(await healthz(service))
                await asyncio.sleep(0.05)
            text = await metrics(service)
    assert answers and all(status == 200 and body["stalled_partitions"] == [] for status, body in answers)
    # The detector did look at both partitions (a detector that looks at nothing is also quiet).
    assert sample(text, "intake_lag", topic=topic, partition=0) == 0
    assert sample(text, "intake_lag", topic=topic, partition=1) == 0
    assert sample(text, "stalled_partitions") == 0 and sample(text, "intake_stalls_total") == 0


@pytest.mark.timeout(120)
async def test_intake_held_back_by_judging_is_not_a_stall(tmp_path: Path) -> None:
    # The judge never answers (llmsim's hang fault): one call in flight, every other worker
    # waiting for its place, one job queued, and the stream waits for room, with records waiting
    # behind it. Back-pressure by design.
    deployments = {"shop": {"model": "llmsim-judge+fault=hang"}}
    async with stage(tmp_path, deployments, partitions=1) as st:
        topic = st.topics.inference
        settings = dict(
            stall_seconds=1, judge_concurrency=1, judge_queue_size=1, judge_max_attempts=1,
            judge_timeout_seconds=60, shutdown_drain_seconds=0.5,
        )
        async with st.processor(**settings) as service, PartitionProducer(st.kafka) as producer:
            # Enough for every worker (one in the call, the rest waiting for the place), the
            # queued job, and some: the stream then waits for room.
            await producer.pairs(topic, 0, "slow", WORKERS_PER_PLACE + 4)
            assert service.runner is not None
            await wait_for(lambda: service.runner.intake_waiting == 1, 30, "the stream waiting for the judge queue")
            target = service.stalls.checks + 12  # 3 x stall_seconds of looks
            answers = []
            while service.stalls.checks < target:
                answers.append(await healthz(service))
                await asyncio.sleep(0.05)
            text = await metrics(service)
            assert service.runner.intake_waiting == 1  # still held throughout
    assert answers and all(status == 200 and body["stalled_partitions"] == [] for status, body in answers)
    assert answers[-1][1]["intake_held_by_judging"] is True
    assert sample(text, "intake_held_by_judging") == 1
    assert sample(text, "intake_lag", topic=topic, partition=0) > 0  # records did wait
    assert sample(text, "stalled_partitions") == 0
