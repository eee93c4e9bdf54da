"""Re-judge ledger: a past window re-judged, the processor SIGKILLed mid-way and restarted, the
re-judge resumed: every request of the window has exactly one re-judged outcome (missing 0,
duplicated 0), the window's live rollups are unchanged, and live traffic is judged throughout
(the fault ledger's verdict over all of it is clean).

Phase 1 sends load across a minute boundary M and stops: the window is the minute before M,
complete. Phase 2 sends load again while the window is re-judged with a slowed judge; once
the re-judge's progress shows some requests judged and some not, the processor is killed,
then started again; the restarted worker reads the uncommitted command again and resumes after
its last recorded prefix. The requests judged past that prefix before the kill are judged and
published twice: the aggregator keeps the first (counted below as repeats on the topic).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.events.codec import decode
from tests.fault.ledger import MB, Ledger, RssSampler, report, steady_load, verify
from tests.integration.test_processor_harness import read_topic
from tests.support.live_stack import StackOptions, live_stack
from tests.support.rollup_recompute import rollup_snapshot

pytestmark = pytest.mark.integration

RATE = 8.0
SLOW_JUDGE_MS = 1500  # the re-judge then takes several seconds: room to kill it part-way


def in_minute(snapshot: dict[str, list[tuple]], start: datetime, end: datetime) -> dict[str, list[tuple]]:
    return {table: [row for row in rows if any(isinstance(v, datetime) and start <= v < end for v in row)]
            for table, rows in snapshot.items()}


@pytest.mark.timeout(300)
async def test_processor_killed_mid_rejudge_resumes_missing_0_duplicated_0(tmp_path: Path) -> None:
    # A small judge cap, so that with the slowed judge the re-judge of even a short window takes
    # several rounds: room to kill it part-way (live calls, served first, take some of the cap).
    options = StackOptions(sampling_rate=0.5, metrics=["relevance"], monitors=[],
                           env={"processor": {"PROMPTPULSE_PROCESSOR__JUDGE_CONCURRENCY": "8"}})
    async with live_stack(tmp_path, options) as stack:
        ledger = Ledger()
        async with RssSampler(stack) as rss:
            async with steady_load(stack, ledger, rate=RATE):
                await ledger.until_acknowledged(20, within=60)
                boundary = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
                await asyncio.sleep((boundary - datetime.now(UTC)).total_seconds() + 2)
            start, end = boundary - timedelta(minutes=1), boundary
            await asyncio.sleep(5)  # live judging of the window finishes and is ingested
            (await verify(stack, ledger, within=60)).assert_clean()
            before = in_minute(await rollup_snapshot(stack.database_url), start, end)
            conn = await asyncpg.connect(stack.database_url)
            try:
                window = {r["request_id"] for r in await conn.fetch(
                    "SELECT request_id FROM inference_requests WHERE deployment = 'demo' "
                    "AND request_start_time >= $1 AND request_start_time < $2", start, end)}
            finally:
                await conn.close()
            assert len(window) >= 20

            async with steady_load(stack, ledger, rate=RATE):
                await stack.llmsim_control("latency", {"ttft_ms": SLOW_JUDGE_MS})
                created = await stack.api("/v1/deployments/demo/rejudges", admin=True, method="POST", body={
                    "evaluator": "relevance", "from": start.isoformat(), "to": end.isoformat()})
                rejudge = f"/v1/rejudges/{created['id']}"

                async def midway() -> dict | None:
                    view = await stack.api(rejudge)
                    judged = view["progress"]["judged"]
                    return view if view["status"] == "running" and 0 < judged < len(window) * 3 // 4 else None

                at_kill = await stack.wait_for(midway, 90, "the re-judge part-way")
                assert await stack.processor.kill() == -9
                await stack.llmsim_control("latency", {"ttft_ms": 5})
                await asyncio.sleep(2)  # the gateway goes on taking traffic with no processor
                await stack.processor.start()
                killed_at = time.monotonic()

                async def finished() -> dict | None:
                    view = await stack.api(rejudge)
                    return view if view["status"] == "done" and view["progress"]["stored"] >= len(window) else None

                done = await stack.wait_for(finished, 120, "the resumed re-judge done")
                await ledger.until_acknowledged(len(ledger.acknowledged) + 40, within=60)  # live, after the kill
            verdict = await verify(stack, ledger, within=120)
        after = in_minute(await rollup_snapshot(stack.database_url), start, end)
        conn = await asyncpg.connect(stack.database_url)
        try:
            stored = Counter(r["request_id"] for r in await conn.fetch(
                "SELECT request_id FROM rejudge_evaluations WHERE metric = 'relevance' AND rejudge_id = $1",
                created["id"]))
        finally:
            await conn.close()
        on_topic = Counter()
        for record in await read_topic(stack.kafka, stack.topics.evaluations, lambda rows: False, within=5):
            event = decode(record.value, record.headers)
            if getattr(event, "rejudge_id", "") == created["id"]:
                on_topic[event.meta.request_id] += 1

    missing = window - set(stored)
    duplicated = {rid: n for rid, n in stored.items() if n > 1}
    extra = set(stored) - window
    repeats = sum(n - 1 for n in on_topic.values() if n > 1)
    print(f"re-judge kill: window {len(window)} requests, judged {at_kill['progress']['judged']} at the kill, "
          f"missing {len(missing)}, duplicated {len(duplicated)}, outside {len(extra)}, repeats on the topic "
          f"{repeats}, resumed in {time.monotonic() - killed_at:.1f} s; {verdict.summary()}")
    report(f"processor SIGKILL mid re-judge ({at_kill['progress']['judged']} of {len(window)} judged), restarted "
           "(`test_rejudge_kill.py`)", "the re-judge resumed after its recorded prefix: one re-judged outcome per "
           f"request of the window ({repeats} repeats on the topic dropped by the store), window rollups "
           "unchanged", verdict, rss)
    assert (len(missing), len(duplicated), len(extra)) == (0, 0, 0), (missing, duplicated, extra)
    assert done["progress"]["total"] == len(window)
    assert after == before and any(before.values())
    verdict.assert_clean()
    assert verdict.counts["sampled"] > 0 and verdict.counts["judged"] == verdict.counts["sampled"]
    rss.assert_below(600 * MB)
