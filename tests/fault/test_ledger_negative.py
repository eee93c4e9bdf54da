"""The negative twin of every fault test: the ledger's verifier can fail.

One stack, a short clean load that must verify clean; then, one at a time and undone before the
next, the damage a real bug would do: a request stored twice (a second raw row), a request
counted twice in the rollups only, and a request whose raw row is gone. Each alone must make
:func:`tests.fault.ledger.verify` fail, naming what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.fault.ledger import Ledger, RssSampler, steady_load, verify
from tests.support.live_stack import StackOptions, live_stack

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
async def test_an_injected_duplicate_and_a_deleted_row_each_fail_the_verifier(tmp_path: Path) -> None:
    async with live_stack(tmp_path, StackOptions(sampling_rate=0.2)) as stack:
        ledger = Ledger()
        async with RssSampler(stack), steady_load(stack, ledger, rate=10):
            await ledger.until_acknowledged(60, within=90)
        baseline = await verify(stack, ledger, within=90)
        baseline.assert_clean()
        assert baseline.counts["acknowledged"] >= 60 and baseline.counts["judged"] > 0

        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute("SET TIME ZONE 'UTC'")  # the rollups' minutes are UTC minutes
            # A request's row whose start time is not the last microsecond of a minute: its copy
            # one microsecond later stays in the same minute (and the same day partition).
            victim = await conn.fetchval(
                "SELECT request_id FROM inference_requests WHERE deployment = $1 "
                "AND extract(second FROM request_start_time) < 59 ORDER BY request_start_time LIMIT 1",
                stack.deployment)
            assert victim in ledger.acknowledged

            # 1. Stored twice: a second raw row (the natural key also holds the start time).
            await conn.execute("CREATE TEMP TABLE copy AS SELECT * FROM inference_requests WHERE request_id = $1",
                               victim)
            await conn.execute("UPDATE copy SET request_start_time = request_start_time + interval '1 microsecond'")
            assert await conn.execute("INSERT INTO inference_requests SELECT * FROM copy") == "INSERT 0 1"
            verdict = await verify(stack, ledger, within=5)
            with pytest.raises(AssertionError, match="duplicated 1"):
                verdict.assert_clean()
            assert any(victim in item for item in verdict.duplicated), verdict.summary()
            assert not verdict.lost and not verdict.unseen
            await conn.execute("DELETE FROM inference_requests WHERE (request_id, request_start_time) IN "
                               "(SELECT request_id, request_start_time FROM copy)")
            (await verify(stack, ledger, within=5)).assert_clean()

            # 2. Counted twice in a rollup only (the raw rows are right): a delta applied twice.
            key = await conn.fetchrow(
                "SELECT deployment, date_trunc('minute', request_start_time), variant, run_id "
                "FROM inference_requests WHERE request_id = $1", victim)
            bump = ("UPDATE rollup_operations SET requests = requests + $5 "
                    "WHERE deployment = $1 AND minute = $2 AND variant = $3 AND run_id = $4")
            assert await conn.execute(bump, *key, 1) == "UPDATE 1"
            verdict = await verify(stack, ledger, within=5)
            with pytest.raises(AssertionError):
                verdict.assert_clean()
            assert any(item.startswith("rollup_operations requests") for item in verdict.duplicated), verdict.summary()
            assert any(item.startswith("rollup_operations") for item in verdict.rollup_mismatches)
            assert not verdict.lost and not verdict.unseen
            await conn.execute(bump, *key, -1)
            (await verify(stack, ledger, within=5)).assert_clean()

            # 3. A deleted raw row: acknowledged, the aggregator is past it, never counted.
            await conn.execute("DELETE FROM inference_responses WHERE request_id = $1", victim)
            verdict = await verify(stack, ledger, within=3)
            with pytest.raises(AssertionError, match="lost 1"):
                verdict.assert_clean()
            assert verdict.lost == [f"{victim}: aggregator is past its events, no response row"], verdict.summary()
            assert verdict.rollup_mismatches  # the rollups still count it
        finally:
            await conn.close()
