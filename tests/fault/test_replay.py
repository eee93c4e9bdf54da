"""Aggregator offsets reset to the earliest (a replay): every rollup stays exactly as it was.

The aggregator keeps its Kafka positions in Postgres (`consumer_offsets`, written in each
batch's transaction, read on partition assignment; services/aggregator/ingest/consumer.py).
An operator replays by stopping it and resetting those rows: here both ways, first every offset
set to 0, then the rows deleted (no stored offset means "from the beginning"). The aggregator
reads every record again; each finds its natural key taken and adds nothing, so the rollups
after the replay equal those before, row for row, and the ledger still balances.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.fault.ledger import (
    MB,
    Ledger,
    RssSampler,
    aggregator_caught_up,
    prometheus_total,
    report,
    steady_load,
    verify,
)
from tests.support.live_stack import LiveStack, StackOptions, live_stack
from tests.support.rollup_recompute import rollup_snapshot

pytestmark = pytest.mark.integration

RSS_LIMIT = 600 * MB
RESET = {
    "set to 0": "UPDATE consumer_offsets SET next_offset = 0 WHERE consumer_group = $1",
    "deleted": "DELETE FROM consumer_offsets WHERE consumer_group = $1",
}


async def _replay(stack: LiveStack, ledger: Ledger, how: str) -> None:
    aggregator = stack.aggregator
    group = aggregator.env["PROMPTPULSE_AGGREGATOR__GROUP_ID"]
    assert await aggregator.stop() == 0
    conn = await asyncpg.connect(stack.database_url)
    try:
        result = await conn.execute(RESET[how], group)
        assert result.split()[-1] != "0", f"no stored offsets to reset ({result})"
    finally:
        await conn.close()
    await aggregator.start()
    await stack.wait_for(lambda: aggregator_caught_up(stack), 120, f"the replay ({how}) to reach the end")
    # It really read everything again: every request and response was a duplicate, none new.
    duplicates = await prometheus_total(aggregator, "promptpulse_aggregator_ingest_duplicates_total")
    assert duplicates >= 2 * len(ledger.acknowledged), duplicates
    for table in ("inference_requests", "inference_responses", "evaluations"):
        inserted = await prometheus_total(aggregator, "promptpulse_aggregator_ingest_rows_inserted_total", table=table)
        assert inserted == 0, f"the replay inserted {inserted} {table} rows"


@pytest.mark.timeout(240)
async def test_replay_from_the_earliest_offsets_leaves_rollups_unchanged(tmp_path: Path) -> None:
    async with live_stack(tmp_path, StackOptions(sampling_rate=0.2)) as stack:
        ledger = Ledger()
        async with RssSampler(stack) as rss:
            async with steady_load(stack, ledger, rate=15):
                await ledger.until_acknowledged(300, within=90)
            (await verify(stack, ledger, within=120)).assert_clean()
            before = await rollup_snapshot(stack.database_url)
            assert sum(row[4] for row in before["rollup_operations"]) == len(ledger.acknowledged)

            for how in RESET:
                await _replay(stack, ledger, how)
                after = await rollup_snapshot(stack.database_url)
                for table, rows in before.items():
                    assert after[table] == rows, f"{table} changed by the replay (offsets {how})"
            verdict = await verify(stack, ledger, within=60)
        report("aggregator offsets reset to the earliest (set to 0, then deleted): full replay, twice",
               "rollups identical row for row; every record a duplicate, 0 new rows", verdict, rss)
        verdict.assert_clean()
        rss.assert_below(RSS_LIMIT)
