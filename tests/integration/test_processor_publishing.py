"""The processor's evaluations producer, on the broker: what one gathered hand-over costs in produce requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.processor.evaluation import outcomes
from shared.events.builders import new_meta
from shared.events.messages import Evaluation, EvaluationErrorType
from shared.kafka_partitioner import partition_of
from tests.integration.test_processor_harness import stage

PARTITIONS = 6


def _evaluations(request_id: str) -> list[Evaluation]:
    meta = new_meta(request_id=request_id, deployment="judged", request_start_time=datetime.now(UTC))
    internal = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    return [outcomes.error(meta, f"metric_{n}", internal, "x") for n in range(2)]


def _request_ids_by_partition(round_: int, per_partition: int) -> list[str]:
    """Request ids for partition 0 first, then 1, ...: the partitions' first records of one
    hand-over are appended a while apart, as when many judged requests are handed over at once."""
    ids: list[str] = []
    for partition in range(PARTITIONS):
        n = 0
        while sum(1 for i in ids if partition_of(i.encode(), list(range(PARTITIONS))) == partition) < per_partition:
            candidate = f"round-{round_}-request-{partition}-{n}"
            n += 1
            if partition_of(candidate.encode(), list(range(PARTITIONS))) == partition:
                ids.append(candidate)
    return ids


async def test_one_gathered_hand_over_goes_to_the_broker_in_one_produce_request_per_node(tmp_path: Path) -> None:
    async with stage(tmp_path, {"judged": {"sampling_rate": 0.0}}, partitions=PARTITIONS) as st:
        async with st.processor() as service:
            runner = service.runner
            assert runner is not None
            sender = service._producer._sender
            requests: list[tuple[int, int]] = []  # (node, partitions' batches) per produce request
            send_produce_request = sender._send_produce_req

            async def counted(node_id: int, batches: dict[Any, Any]) -> Any:
                requests.append((node_id, len(batches)))
                return await send_produce_request(node_id, batches)

            sender._send_produce_req = counted
            await runner.publish(_evaluations("warm-up"))  # metadata and producer id fetched
            for round_ in range(3):
                requests.clear()
                # Started in one loop turn: they gather for publish_linger_ms, then one hand-over.
                publishes = [asyncio.create_task(runner.publish(_evaluations(request_id)))
                             for request_id in _request_ids_by_partition(round_, per_partition=10)]
                await asyncio.wait_for(asyncio.gather(*publishes), 30)
                nodes = [node for node, _ in requests]
                # Every partition's batch in the same request: none left lingering for a second one.
                assert len(nodes) == len(set(nodes)), f"round {round_}: produce requests {requests}"
                assert sum(batches for _, batches in requests) == PARTITIONS
