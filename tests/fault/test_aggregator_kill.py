"""Aggregator SIGKILL in the middle of a batch, under load, then a restart: nothing lost, nothing
counted twice, rollups equal the recomputation.

The aggregator's test-only fault hook (``PROMPTPULSE_AGGREGATOR__FAULT_PAUSE_*``, see
services/aggregator/settings.py) holds one batch between its inserts and its COMMIT and writes a
marker file when it does; the process is killed there, with the batch's rows inserted but not
committed. The batch number is chosen so that the hook fires a few seconds into the load. The
restarted process gets the same environment without the fault settings, so it does not pause
again (its batch count starts from 1 like the first one's did).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from tests.fault.ledger import MB, Ledger, RssSampler, report, steady_load, verify
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

# Batches that wait up to 400 ms to fill: at this rate about two a second, each holding a few
# dozen rows of several tables, so the hook fires some seconds into the load on a full batch.
RATE = 12.0
BATCH_WAIT_MS = "400"
PAUSED_BATCH = 12
FAULT_PREFIX = "PROMPTPULSE_AGGREGATOR__FAULT_"


async def committed_rows(stack: LiveStack) -> dict[str, int]:
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM inference_requests) AS requests,
                      (SELECT count(*) FROM inference_responses) AS responses,
                      (SELECT count(*) FROM evaluations) AS evaluations,
                      (SELECT count(*) FROM spans) AS spans,
                      (SELECT coalesce(sum(requests), 0) FROM rollup_operations) AS rolled_requests""")
        return dict(row)
    finally:
        await conn.close()


@pytest.mark.timeout(240)
async def test_aggregator_sigkill_before_commit_loses_and_doubles_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "aggregator-holding-a-batch"
    fault = {
        f"{FAULT_PREFIX}PAUSE_BEFORE_COMMIT_SECONDS": "600",
        f"{FAULT_PREFIX}PAUSE_ON_BATCH": str(PAUSED_BATCH),
        f"{FAULT_PREFIX}MARKER_PATH": str(marker),
    }
    options = StackOptions(
        sampling_rate=0.3,
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__BATCH_MAX_WAIT_MS": BATCH_WAIT_MS, **fault}},
    )
    async with live_stack(tmp_path, options) as stack:
        ledger = Ledger()
        async with RssSampler(stack) as rss, steady_load(stack, ledger, rate=RATE):
            async def holding() -> dict | None:
                return _marker(marker)

            held = await stack.wait_for(holding, 90, f"the aggregator holding batch {PAUSED_BATCH}")
            before = await committed_rows(stack)
            await asyncio.sleep(2)  # the batch stays open; the load goes on into Kafka
            assert await committed_rows(stack) == before, "nothing commits while the batch is held"
            acknowledged_at_kill = len(ledger.acknowledged)
            assert await stack.aggregator.kill() == -9
            after_kill = await committed_rows(stack)
            assert after_kill == before, "the killed batch left nothing behind"

            # The same process again, without the fault hook.
            _remove(marker)
            for name in fault:
                del stack.aggregator.env[name]
            await stack.aggregator.start()
            await ledger.until_acknowledged(acknowledged_at_kill + 100, within=90)

        verdict = await verify(stack, ledger, within=120)
        final = await committed_rows(stack)

    print(f"aggregator kill: held batch {held}, committed at the kill {before}, final {final}; "
          f"{verdict.summary()}")
    rows = ", ".join(f"{table} {count}" for table, count in sorted(held["inserted"].items()))
    report(f"aggregator SIGKILL between a batch's inserts and its COMMIT (rows held: {rows}), "
           "restarted (`test_aggregator_kill.py`)",
           "the killed batch left nothing; the restart re-read it from the stored offsets, did not pause "
           "again; lost 0, duplicated 0, rollups = recomputation", verdict, rss)
    assert held["batch"] == PAUSED_BATCH and sum(held["inserted"].values()) > 0, held
    assert _marker(marker) is None, "the restarted aggregator paused again"
    verdict.assert_clean()
    assert verdict.counts["not_running"] == [], verdict.counts
    assert verdict.counts["acknowledged"] >= acknowledged_at_kill + 100
    assert final["requests"] > before["requests"] and final["rolled_requests"] == final["requests"]
    rss.assert_below(600 * MB)


def _marker(path: Path) -> dict | None:
    """What the fault hook wrote when it started holding a batch (None: not holding one)."""
    return json.loads(path.read_text()) if path.exists() else None


def _remove(path: Path) -> None:
    path.unlink()
