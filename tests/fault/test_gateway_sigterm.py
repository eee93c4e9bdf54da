"""The gateway gets SIGTERM under load: it stops taking new requests, finishes the ones in flight,
flushes their events, exits cleanly; no acknowledged request misses its events.

The LLM answers slowly here (about a second and a half per answer) so that, at the signal, many
requests are in flight, among them streams already answering: a stream whose headers arrived
before the signal was certainly accepted by the gateway, so it must be finished (its ``done``
event), not cut off. After the gateway exits the ledger must balance: the events of every
acknowledged request, including those finished after the signal, reached Kafka and were
counted once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.fault.ledger import MB, Ledger, RssSampler, report, steady_load, verify
from tests.support.live_stack import StackOptions, live_stack

pytestmark = pytest.mark.integration

RATE = 12
RSS_LIMIT = 600 * MB
SLOW_LLM = {"ttft_ms": 100, "tokens_per_second": 15, "jitter": 0}


@pytest.mark.timeout(240)
async def test_gateway_sigterm_under_load_finishes_in_flight_and_flushes(tmp_path: Path) -> None:
    options = StackOptions(sampling_rate=0.2, llm_latency=SLOW_LLM)
    async with live_stack(tmp_path, options) as stack:
        gateway = stack.gateway
        ledger = Ledger()
        async with RssSampler(stack) as rss:
            async with steady_load(stack, ledger, rate=RATE, streaming_share=0.5, concurrency=64):
                await ledger.until_acknowledged(60, within=90)
                term_at = time.time()
                gateway.signal(signal.SIGTERM)
                exit_code = await asyncio.wait_for(gateway.process.wait(), 60)
                exited_at = time.time()
                await asyncio.sleep(1)  # a little load against the stopped gateway
            verdict = await verify(stack, ledger, within=120)
        report("gateway SIGTERM under load (slow LLM: streams in flight)",
               "in-flight requests finished and acknowledged, new ones refused, events flushed; "
               "lost 0, duplicated 0", verdict, rss)

        assert exit_code == 0, gateway.log_tail()
        finished_after = [e for e in ledger.acknowledged.values() if e["sent"] < term_at <= e["at"]]
        streams_in_flight = [e for e in ledger.acknowledged.values()
                             if e["streamed"] and e["headers"] < term_at <= e["at"]]
        cut_off = [f for f in ledger.failures if f["headers"] is not None and f["headers"] < term_at]
        # Requests in flight at the signal were finished: many completed after it, among them
        # streams that were already answering, and none that had started answering was cut off.
        assert len(finished_after) >= 5, ledger.summary()
        assert len(streams_in_flight) >= 2, ledger.summary()
        assert cut_off == [], cut_off
        # New requests were refused once intake stopped (connection refused, or a 503).
        late = [e for e in ledger.acknowledged.values() if e["sent"] > term_at + 0.5]
        assert late == [], f"{len(late)} requests sent after the signal were served"
        assert any(f["sent"] > exited_at for f in ledger.failures), "no request was tried after the exit"
        # Flushed: every acknowledged request's events are on the topic and counted once.
        verdict.assert_clean()
        assert verdict.counts["in_topics"] == verdict.counts["acknowledged"]
        assert verdict.counts["judged"] == verdict.counts["sampled"] > 0
        rss.assert_below(RSS_LIMIT)
