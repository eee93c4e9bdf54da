"""Two processors and two aggregators under load; one of each is SIGKILLed and later restarted,
so both consumer groups rebalance twice (the dead member leaves after its session timeout, the
restarted one joins): nothing lost, nothing counted or judged twice, rollups equal the
recomputation.

The groups' membership is read from the broker (DescribeGroups), so the test knows each
rebalance really happened: the survivor alone in its group after the kill, two members again
after the restart.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from shared.kafka import make_admin
from tests.fault.ledger import MB, Ledger, RssSampler, report, steady_load, verify
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

RATE = 12.0


async def group_members(stack: LiveStack, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, as its coordinator reports it."""
    admin = make_admin(stack.kafka, client_id="fault-rebalance-admin")
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    # DescribeGroups v0+: (error_code, group_id, state, protocol_type, protocol, members, ...)
    return described[2], len(described[5])


async def processor_partitions(stack: LiveStack, name: str) -> set[int]:
    """The inference partitions a processor holds watermarks for (those it owns and has read)."""
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        f"{stack[name].url}/healthz"
    ) as resp:
        health = await resp.json(content_type=None)
    return {p["partition"] for p in health["partitions"] if p["topic"] == stack.topics.inference}


def owning(stack: LiveStack, name: str, count: int):
    async def check() -> bool:
        return len(await processor_partitions(stack, name)) == count

    return check


def stable_with(stack: LiveStack, group: str, members: int):
    async def check() -> bool:
        state, count = await group_members(stack, group)
        return state == "Stable" and count == members

    return check


@pytest.mark.timeout(300)
async def test_killing_one_processor_and_one_aggregator_rebalances_and_loses_nothing(tmp_path: Path) -> None:
    options = StackOptions(sampling_rate=0.3, processors=2, aggregators=2, partitions=4)
    async with live_stack(tmp_path, options) as stack:
        processors = stack.processor.env["PROMPTPULSE_PROCESSOR__GROUP_ID"]
        aggregators = stack.aggregator.env["PROMPTPULSE_AGGREGATOR__GROUP_ID"]
        ledger = Ledger()
        async with RssSampler(stack) as rss, steady_load(stack, ledger, rate=RATE):
            await stack.wait_for(stable_with(stack, processors, 2), 60, "two processors in their group")
            await stack.wait_for(stable_with(stack, aggregators, 2), 60, "two aggregators in their group")
            await ledger.until_acknowledged(60, within=60)
            await stack.wait_for(owning(stack, "processor", 2), 30, "processor owning two partitions")
            await stack.wait_for(owning(stack, "processor-1", 2), 30, "processor-1 owning two partitions")

            assert await stack["processor-1"].kill() == -9
            await ledger.until_acknowledged(len(ledger.acknowledged) + 24, within=30)
            assert await stack["aggregator-1"].kill() == -9
            killed_at = len(ledger.acknowledged)
            # The survivors take every partition over once the dead members' sessions expire.
            await stack.wait_for(stable_with(stack, processors, 1), 60, "the processor group without processor-1")
            await stack.wait_for(stable_with(stack, aggregators, 1), 60, "the aggregator group without aggregator-1")
            await stack.wait_for(owning(stack, "processor", 4), 30, "the surviving processor owning all four")
            await ledger.until_acknowledged(killed_at + 36, within=30)

            await stack["processor-1"].start()
            await stack["aggregator-1"].start()
            await stack.wait_for(stable_with(stack, processors, 2), 60, "processor-1 back in its group")
            await stack.wait_for(stable_with(stack, aggregators, 2), 60, "aggregator-1 back in its group")
            await stack.wait_for(owning(stack, "processor-1", 2), 30, "processor-1 owning two partitions again")
            await ledger.until_acknowledged(len(ledger.acknowledged) + 60, within=60)

        verdict = await verify(stack, ledger, within=120)

    report("two processors and two aggregators, one of each SIGKILLed and restarted under load "
           "(`test_rebalance.py`)",
           "both groups rebalanced to the survivor and back (broker's DescribeGroups); lost 0, "
           "duplicated 0, rollups = recomputation", verdict, rss)
    verdict.assert_clean()
    assert verdict.counts["not_running"] == [], verdict.counts
    assert verdict.counts["acknowledged"] >= killed_at + 96 and verdict.counts["judged"] > 0
    rss.assert_below(600 * MB)
