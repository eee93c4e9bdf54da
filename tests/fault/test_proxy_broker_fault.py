"""The broker stops under proxy traffic: an app on the official ``openai`` SDK never notices.

A proxy deployment (``type: proxy``, docs/proxy.md) in front of llmsim, on a stack whose broker
is private (tests/support/private_kafka.py). An ``AsyncOpenAI`` client, unchanged but for base URL
and key, sends steady traffic through it: chat completions and the Responses API, JSON and
streamed, in turn. The broker is stopped cleanly mid-traffic and the client keeps sending; before
the broker comes back every call sent so far must have been answered (the proxy records into the
gateway's spool, it never makes the app wait for Kafka). After the restart the ledger must
balance (tests/fault/ledger.py): every call the client saw succeed has exactly one request and
one response event on the topic and one stored request and response row (lost 0, duplicated 0),
rollups equal their recomputation, sampled calls judged; the spool is drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openai
import pytest
import yaml

from shared.apikeys import new_api_key_record
from tests.fault.ledger import MB, Ledger, RssSampler, prometheus_total, report, verify
from tests.fault.test_broker_faults import _broker_pid
from tests.support.live_stack import LiveStack, StackOptions, live_stack
from tests.support.private_kafka import PrivateKafka

pytestmark = pytest.mark.integration

PROXY = "proxied"
RATE = 10  # calls/s
OUTAGE_SECONDS = 8
RSS_LIMIT = 600 * MB
# Each arrival takes the next of these, so every kind is sent before, during and after the outage.
KINDS = (("chat", False), ("chat", True), ("responses", False), ("responses", True))


def proxy_deployment(key_record: dict) -> str:
    return yaml.safe_dump({
        "name": PROXY, "type": "proxy", "proxy": {"connection": "llmsim"},
        "variants": [{"id": "main", "weight": 1}],
        "api_keys": [key_record],
        "evaluation": {"metrics": ["relevance"], "sampling_rate": 0.25,
                       "judge": {"connection": "llmsim", "model": "llmsim-judge"}},
        "monitors": [],
    }, sort_keys=False)


async def one_call(client: openai.AsyncOpenAI, ledger: Ledger, number: int) -> None:
    """One call of the kind ``number`` picks; acknowledged when the SDK returned the whole answer
    (a JSON reply, or a stream that reached its final chunk or ``response.completed``)."""
    api, streamed = KINDS[number % len(KINDS)]
    question = f"Question {number}: how does PromptPulse decide which requests to judge?"
    ledger.sent += 1
    sent = time.time()
    headers_at = None
    try:
        if api == "chat":
            raw = await client.chat.completions.with_raw_response.create(
                model="llmsim-chat", stream=streamed,
                messages=[{"role": "system", "content": "PromptPulse judges a sample of requests."},
                          {"role": "user", "content": question}])
        else:
            raw = await client.responses.with_raw_response.create(
                model="llmsim-chat", stream=streamed, instructions="PromptPulse judges a sample of requests.",
                input=question)
        headers_at = time.time()
        answer = raw.parse()
        if not streamed:
            complete = bool(answer.choices[0].message.content if api == "chat" else answer.output_text)
        elif api == "chat":
            complete = False
            async for chunk in answer:
                complete = complete or any(choice.finish_reason for choice in chunk.choices)
        else:
            complete = False
            async for event in answer:
                complete = complete or event.type == "response.completed"
        request_id = raw.headers["x-request-id"]
        if complete:
            ledger.acknowledge(request_id, raw.headers["x-promptpulse-variant"], streamed, sent=sent,
                               headers=headers_at)
            ledger.acknowledged[request_id]["kind"] = f"{api}{' streamed' if streamed else ''}"
        else:
            ledger.unacknowledged[request_id] = "the answer ended early"
            ledger.fail("incomplete", streamed, sent, headers_at)
    except openai.APIStatusError as exc:
        ledger.rejected[exc.status_code] += 1
        ledger.fail(f"HTTP {exc.status_code}", streamed, sent, headers_at)
    except openai.OpenAIError as exc:
        ledger.errors[type(exc).__name__] += 1
        ledger.fail(type(exc).__name__, streamed, sent, headers_at)


@asynccontextmanager
async def sdk_traffic(stack: LiveStack, key: str, ledger: Ledger, *, rate: float,
                      concurrency: int = 16) -> AsyncIterator[None]:
    """Open-loop calls at ``rate``/s for the ``async with`` block; leaving it stops the arrivals
    and waits for every call in flight to be answered (or to fail: recorded, never raised)."""
    stop = asyncio.Event()
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway.url}/v1", api_key=key, max_retries=0, timeout=30)

    async def arrivals() -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task] = set()
        next_at = loop.time()
        number = ledger.sent  # a second block goes on with the kinds where the first stopped
        while not stop.is_set():
            if len(in_flight) >= concurrency:
                ledger.shed += 1
            else:
                task = asyncio.create_task(one_call(client, ledger, number))
                number += 1
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            next_at = max(next_at + 1.0 / rate, loop.time() - 1.0)  # a busy machine: no burst to catch up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(next_at - loop.time(), 0))
        if in_flight:
            await asyncio.wait(in_flight)

    async with client:
        task = asyncio.create_task(arrivals())
        try:
            yield
        finally:
            stop.set()
            await task


@pytest.mark.timeout(240)
async def test_broker_stopped_under_openai_sdk_traffic_through_the_proxy(
    tmp_path: Path, private_kafka: PrivateKafka,
) -> None:
    key, record = new_api_key_record(PROXY)
    options = StackOptions(kafka_bootstrap=private_kafka.bootstrap, monitors=[],
                           files={f"{PROXY}.yaml": proxy_deployment(record.model_dump(mode="json", exclude_none=True))})
    async with live_stack(tmp_path, options) as stack:
        stack.deployment = PROXY  # what the verifier reads: the proxy deployment's spec and rows
        ledger = Ledger()
        async with RssSampler(stack, extra={"kafka (private)": _broker_pid(private_kafka)}) as rss:
            async with sdk_traffic(stack, key, ledger, rate=RATE):
                await ledger.until_acknowledged(40, within=60)
                await asyncio.to_thread(private_kafka.stop)  # blocking script: the traffic goes on meanwhile
                down_at = time.time()
                await asyncio.sleep(OUTAGE_SECONDS)
            # Leaving the block waited for every call in flight: all answered with the broker still down.
            sent_before_restart, answered_before_restart = ledger.sent, len(ledger.acknowledged)
            kinds_while_down = Counter(e["kind"] for e in ledger.acknowledged.values() if e["at"] >= down_at)
            spooled = await prometheus_total(stack.gateway, "promptpulse_gateway_events_spooled_total")
            await asyncio.to_thread(private_kafka.start)
            async with sdk_traffic(stack, key, ledger, rate=RATE):
                await ledger.until_acknowledged(len(ledger.acknowledged) + 40, within=60)
            verdict = await verify(stack, ledger, within=90)
            spool_pending = await prometheus_total(stack.gateway, "promptpulse_gateway_event_spool_pending_bytes")
            sent_from_spool = await prometheus_total(stack.gateway, "promptpulse_gateway_events_sent_total",
                                                     path="spool")
            lost_events = await prometheus_total(stack.gateway, "promptpulse_gateway_events_lost_total")
            spooled_in_all = await prometheus_total(stack.gateway, "promptpulse_gateway_events_spooled_total")
            skipped = await prometheus_total(stack.gateway, "promptpulse_gateway_events_spool_skipped_total")
        print("ledger:", ledger.summary(), "| answered while down:", dict(kinds_while_down), "| spooled:", spooled,
              "in all:", spooled_in_all, "| sent from the spool:", sent_from_spool, "| skipped there (the producer "
              "delivered them after all):", skipped, "| topic duplicates:", verdict.counts["topic_duplicate_events"])
        report("broker stopped under `openai` SDK traffic through the proxy",
               "every call answered while the broker was down (events spooled, drained after); lost 0, "
               "duplicated 0, rollups = recomputation", verdict, rss)
        verdict.assert_clean()
        assert verdict.counts["not_running"] == [], verdict.counts
        # One request and one response event per call on the topic too: a clean stop leaves no batch
        # in doubt, and the spool's drain skips what the producer delivered after all.
        assert verdict.counts["topic_duplicate_events"] == 0, verdict.counts
        # The app never waited for Kafka: nothing failed, and the calls of the outage were answered in it.
        assert ledger.failures == [], (ledger.failures[:5], ledger.summary())
        assert answered_before_restart == sent_before_restart and len(ledger.acknowledged) == ledger.sent, ledger.summary()
        assert set(kinds_while_down) == {f"{api}{' streamed' if streamed else ''}" for api, streamed in KINDS}
        assert kinds_while_down.total() >= OUTAGE_SECONDS * RATE // 3, (kinds_while_down, ledger.summary())
        assert verdict.counts["streamed"] > 0 and verdict.counts["judged"] == verdict.counts["sampled"] > 0
        # The fault was felt (events went to the spool) and healed (the spool drained to Kafka).
        assert spooled > 0 and sent_from_spool > 0
        assert spool_pending == 0 and lost_events == 0
        # Every spooled event left the spool once: sent from it, or skipped as delivered directly.
        assert spooled_in_all == sent_from_spool + skipped, (spooled_in_all, sent_from_spool, skipped)
        rss.assert_below(RSS_LIMIT)
