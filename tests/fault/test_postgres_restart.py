"""PostgreSQL restarted under steady load: cleanly (``pg_ctl stop -m fast``) and as a crash
(``-m immediate``, WAL recovery on start), each with a few seconds with no server at all.

The stack's database is a private server (tests/support/private_postgres.py); the shared one is
never touched. While it is away the aggregator holds its batch and pauses consumption; Kafka keeps
everything meanwhile, and the gateway and the processor never notice. After the restart the
aggregator resumes from the offsets it stored with its last committed batch: the ledger must
balance, and the query API must answer again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.fault.ledger import MB, Ledger, RssSampler, prometheus_total, report, steady_load, verify
from tests.support.live_stack import StackOptions, live_stack
from tests.support.private_postgres import PrivatePostgres

pytestmark = pytest.mark.integration

RATE = 12
DOWN_SECONDS = 8
RSS_LIMIT = 600 * MB


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarted_mid_load(tmp_path: Path, private_postgres: PrivatePostgres, mode: str) -> None:
    options = StackOptions(sampling_rate=0.2, database_url=private_postgres.dsn)
    async with live_stack(tmp_path, options) as stack:
        ledger = Ledger()
        async with RssSampler(stack, extra={"postgres (private)": private_postgres.pid}) as rss:
            async with steady_load(stack, ledger, rate=RATE):
                await ledger.until_acknowledged(80, within=60)
                await asyncio.to_thread(private_postgres.stop if mode == "fast" else private_postgres.crash)
                down_at = time.time()
                await asyncio.sleep(DOWN_SECONDS)
                acknowledged_while_down = ledger.acknowledged_since(down_at)
                await asyncio.to_thread(private_postgres.start)
                await ledger.until_acknowledged(len(ledger.acknowledged) + 80, within=90)
            verdict = await verify(stack, ledger, within=150)
        fault = f"PostgreSQL restarted mid-load (pg_ctl -m {mode}, {DOWN_SECONDS} s down)"
        report(fault, "aggregator paused, resumed from its stored offsets; lost 0, duplicated 0, "
               "rollups = recomputation", verdict, rss)
        verdict.assert_clean()
        assert verdict.counts["not_running"] == [], verdict.counts
        assert acknowledged_while_down >= DOWN_SECONDS * RATE // 3, ledger.summary()  # the gateway never noticed
        assert verdict.counts["judged"] == verdict.counts["sampled"] > 0
        # The fault was felt: batches failed while the server was away and were retried.
        assert await prometheus_total(stack.aggregator, "promptpulse_aggregator_ingest_failed_attempts_total") > 0
        metrics = await stack.api(f"/v1/deployments/{stack.deployment}/metrics")
        assert metrics, "the query API answers again after the restart"
        rss.assert_below(RSS_LIMIT)
