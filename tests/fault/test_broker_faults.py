"""The broker goes away under steady load (stopped cleanly, or SIGKILLed) and comes back.

The whole stack runs against a private broker (tests/support/private_kafka.py): the shared one
serves every other test and is never stopped. While the broker is away the gateway keeps
acknowledging requests (their events wait in its on-disk spool), the processor and aggregator
wait; after the restart everything drains. The ledger must balance: every acknowledged request
on the topic and counted once, rollups equal to their recomputation, sampled requests judged.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.fault.ledger import MB, Ledger, RssSampler, prometheus_total, report, steady_load, verify
from tests.support.live_stack import StackOptions, live_stack
from tests.support.private_kafka import PrivateKafka

pytestmark = pytest.mark.integration

RATE = 12  # requests/s: modest, the machine has two cores for everything
OUTAGE_SECONDS = 12
RSS_LIMIT = 600 * MB


def _broker_pid(broker: PrivateKafka):
    pid_file = broker.log_file.parents[1] / "run" / "kafka.pid"

    def pid() -> int | None:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    return pid


async def _outage(tmp_path: Path, broker: PrivateKafka, take_down, fault: str) -> None:
    options = StackOptions(sampling_rate=0.2, kafka_bootstrap=broker.bootstrap)
    async with live_stack(tmp_path, options) as stack:
        ledger = Ledger()
        async with RssSampler(stack, extra={"kafka (private)": _broker_pid(broker)}) as rss:
            async with steady_load(stack, ledger, rate=RATE):
                await ledger.until_acknowledged(80, within=60)
                phases = {"load": time.monotonic()}
                await asyncio.to_thread(take_down)  # blocking script: keep the load running meanwhile
                down_at = time.time()
                phases["down"] = time.monotonic()
                await asyncio.sleep(OUTAGE_SECONDS)
                acknowledged_while_down = ledger.acknowledged_since(down_at)
                phases["restart"] = time.monotonic()
                await asyncio.to_thread(broker.start)
                up_at = time.time()
                phases["up"] = time.monotonic()
                await ledger.until_acknowledged(len(ledger.acknowledged) + 80, within=90)
                phases["load stopped"] = time.monotonic()
            verdict = await verify(stack, ledger, within=150)
            phases["verified"] = time.monotonic()
        start = phases.pop("load")
        print("phases (s):", {name: round(at - start, 1) for name, at in phases.items()})
        report(fault, "spooled while down, drained after; lost 0, duplicated 0, rollups = recomputation",
               verdict, rss)
        verdict.assert_clean()
        assert verdict.counts["not_running"] == [], verdict.counts
        # The gateway never makes a user wait for Kafka: it kept acknowledging through the outage.
        assert acknowledged_while_down >= OUTAGE_SECONDS * RATE // 3, (acknowledged_while_down, ledger.summary())
        assert ledger.acknowledged_since(up_at) >= 80
        assert verdict.counts["judged"] == verdict.counts["sampled"] > 0
        # The fault was felt: the gateway spooled events while the broker was away.
        assert await prometheus_total(stack.gateway, "promptpulse_gateway_events_spooled_total") > 0
        assert await prometheus_total(stack.gateway, "promptpulse_gateway_events_lost_total") == 0
        rss.assert_below(RSS_LIMIT)


@pytest.mark.timeout(360)
async def test_broker_stopped_and_started_mid_load(tmp_path: Path, private_kafka: PrivateKafka) -> None:
    await _outage(tmp_path, private_kafka, private_kafka.stop, "broker stopped and started mid-load")


@pytest.mark.timeout(360)
async def test_broker_sigkill_mid_load(tmp_path: Path, private_kafka: PrivateKafka) -> None:
    await _outage(tmp_path, private_kafka, private_kafka.kill, "broker SIGKILL mid-load, restarted")
