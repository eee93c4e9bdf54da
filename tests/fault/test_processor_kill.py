"""Processor SIGKILL with judge calls in flight, then a restart: every sampled request ends judged
exactly once in the store, nothing lost.

The judge is made slow (llmsim's latency control: every completion takes 3 s) so that at the
kill dozens of judge calls are in flight and more joined requests wait in the judge queue. Their
offsets hold the processor's committed watermark back (docs/processor.md, "Offsets"), so the
restarted worker reads them again and judges them; whatever the first worker published before
dying is read again by the aggregator, which keeps one row per (request, metric). The load runs
throughout, also while no processor runs: the gateway and the aggregator must not notice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition

from shared.kafka import make_consumer
from tests.fault.ledger import MB, Ledger, RssSampler, report, steady_load, verify
from tests.integration.test_processor_harness import committed_offsets
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

RATE = 12.0  # requests/s; half are sampled, four metrics each: 24 judge calls/s
SLOW_JUDGE_MS = 3000  # with 64 calls at most in flight, the judge falls behind: a queue builds up
IN_FLIGHT_AT_KILL = 32


async def processor_health(stack: LiveStack, name: str = "processor") -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        f"{stack[name].url}/healthz"
    ) as resp:
        return await resp.json(content_type=None)


async def end_offsets(stack: LiveStack, topic: str) -> dict[int, int]:
    consumer = make_consumer(stack.kafka, group_id=None, client_id="fault-end-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(stack.kafka.partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


@pytest.mark.timeout(240)
async def test_processor_sigkill_with_judge_calls_in_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    options = StackOptions(sampling_rate=0.5)
    async with live_stack(tmp_path, options) as stack:
        ledger = Ledger()
        # Judge-slowed answers also slow the gateway's own LLM calls for a few seconds: room for
        # the requests that are then in flight, so the rate holds.
        async with RssSampler(stack) as rss, steady_load(stack, ledger, rate=RATE, concurrency=64):
            await ledger.until_acknowledged(60, within=60)
            await stack.llmsim_control("latency", {"ttft_ms": SLOW_JUDGE_MS})

            async def busy() -> dict[str, Any] | None:
                health = await processor_health(stack)
                return health if health["judge_calls_in_flight"] >= IN_FLIGHT_AT_KILL else None

            at_kill = await stack.wait_for(busy, 60, f"{IN_FLIGHT_AT_KILL} judge calls in flight")
            held = {p["partition"]: p["lowest_unfinished"] for p in at_kill["partitions"]
                    if p["lowest_unfinished"] is not None}
            assert await stack.processor.kill() == -9
            acknowledged_at_kill = len(ledger.acknowledged)
            group = stack.processor.env["PROMPTPULSE_PROCESSOR__GROUP_ID"]
            committed = await committed_offsets(stack.kafka, group, stack.topics.inference)
            ends = await end_offsets(stack, stack.topics.inference)
            await stack.llmsim_control("latency", {"ttft_ms": 5})
            await asyncio.sleep(3)  # traffic goes on with no processor at all
            await stack.processor.start()
            # The restarted worker takes the partitions back and the load goes on past the kill.
            await ledger.until_acknowledged(acknowledged_at_kill + 120, within=90)

        verdict = await verify(stack, ledger, within=120)
        restarted = await processor_health(stack)

    behind = {p: end - committed.get(p, 0) for p, end in ends.items()}
    print(f"processor kill: in flight at kill {at_kill['judge_calls_in_flight']}, "
          f"queued {at_kill['judge_queue']}, lowest unfinished {held}, committed {committed}, "
          f"ends {ends}; after restart "
          f"{restarted['judge_calls_in_flight']} in flight; {verdict.summary()}")
    report(f"processor SIGKILL with {at_kill['judge_calls_in_flight']} judge calls in flight (judge slowed "
           f"to {SLOW_JUDGE_MS / 1000:g} s), restarted (`test_processor_kill.py`)",
           "committed offsets stayed at the lowest call in flight; the restarted worker judged what was "
           "left, one evaluation row per (request, metric); rollups = recomputation", verdict, rss)
    # The kill hit judging for real: offsets were held below calls still in flight.
    assert at_kill["judge_calls_in_flight"] >= IN_FLIGHT_AT_KILL and held
    # ... and the commit stayed behind them: the restarted worker had those events to read again.
    assert all(committed.get(p, 0) <= ends[p] for p in ends) and sum(behind.values()) > 0, behind
    verdict.assert_clean()
    assert verdict.counts["not_running"] == [], verdict.counts
    assert verdict.counts["sampled"] > 0 and verdict.counts["judged"] == verdict.counts["sampled"]
    assert verdict.counts["acknowledged"] >= acknowledged_at_kill + 120
    rss.assert_below(600 * MB)
