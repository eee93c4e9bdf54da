"""SIGKILL between the inserts and the COMMIT, then restart: the rollups equal an offline
recomputation from the raw rows (plain SQL in tests/support/aggregator.py), and the raw rows
equal what was published. A negative twin proves the recomputation would catch a double count."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg
import pytest

from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    aggregator_settings,
    create_topics,
    produce,
    running_aggregator,
    wait_caught_up,
)
from tests.support.rollup_recompute import rollup_mismatches

REPO = Path(__file__).resolve().parents[2]


def _spawn(settings, log_path: Path, **fault: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PROMPTPULSE_DATABASE_URL": settings.database_url.get_secret_value(),
        "PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PROMPTPULSE_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "PROMPTPULSE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "PROMPTPULSE_DEPLOYMENTS_DIR": "/nonexistent/promptpulse-deployments",
        "PROMPTPULSE_TELEMETRY__SPANS_TO_KAFKA": "false",
        "PROMPTPULSE_TELEMETRY__LOG_FORMAT": "text",
        "PROMPTPULSE_AGGREGATOR__GROUP_ID": settings.group_id(),
        "PROMPTPULSE_AGGREGATOR__PORT": "0",
        "PROMPTPULSE_AGGREGATOR__BATCH_MAX_RECORDS": "100",
        "PROMPTPULSE_AGGREGATOR__BATCH_MAX_WAIT_MS": "20",
        **{f"PROMPTPULSE_AGGREGATOR__{k.upper()}": v for k, v in fault.items()},
    }
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.aggregator"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def _counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM inference_requests) AS requests,
                      (SELECT count(*) FROM inference_responses) AS responses,
                      (SELECT count(*) FROM evaluations) AS evaluations,
                      (SELECT count(*) FROM spans) AS spans,
                      (SELECT coalesce(sum(requests), 0) FROM rollup_operations) AS rolled_requests,
                      (SELECT coalesce(sum(evaluations), 0) FROM rollup_quality) AS rolled_evaluations"""
        )
        return dict(row)
    finally:
        await conn.close()


def _tail(log_path: Path, chars: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else "(no log)"


def _exists(path: Path) -> bool:
    return path.exists()


async def _wait_for_file(path: Path, process: subprocess.Popen, log_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _exists(path):
        if process.poll() is not None:
            raise AssertionError(f"aggregator exited early ({process.returncode}):\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"fault hook never reached:\n{_tail(log_path)}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def crash_settings(fresh_database: str, unique_name: str):
    settings = aggregator_settings(fresh_database, f"it-{uuid4().hex[:8]}.", unique_name)
    topics = await create_topics(settings)
    yield settings
    await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


async def test_sigkill_before_commit_then_restart_loses_and_doubles_nothing(crash_settings, tmp_path: Path) -> None:
    settings = crash_settings
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=17)
    now = datetime.now(UTC)
    requests, judged = 300, 60
    messages = [
        m for i in range(requests) for m in factory.request(now - timedelta(seconds=i), judged=i < judged)
    ]
    await produce(settings, messages)
    marker, log_path = tmp_path / "paused", tmp_path / "aggregator.log"

    first = _spawn(
        settings, log_path, fault_pause_before_commit_seconds="300", fault_pause_on_batch="3",
        fault_marker_path=str(marker),
    )
    try:
        await _wait_for_file(marker, first, log_path, 60)
        held = await _counts(dsn)  # what is committed while batch 3 sits before its COMMIT
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    committed = await _counts(dsn)
    assert committed == held, "the killed batch left nothing behind"
    stored = committed["requests"] + committed["responses"] + committed["evaluations"] + committed["spans"]
    assert 0 < stored < requests * 7 + judged * 4, "the kill landed mid-stream: some batches committed, not all"

    second = _spawn(settings, log_path)
    try:
        await wait_caught_up(settings, 90)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, _tail(log_path)
    finally:
        if second.poll() is None:
            second.kill()

    final = await _counts(dsn)
    assert final == {
        "requests": requests,
        "responses": requests,
        "evaluations": judged * 4,
        "spans": requests * 5,
        "rolled_requests": requests,
        "rolled_evaluations": judged * 4,
    }
    assert await rollup_mismatches(dsn) == {}


@pytest.mark.parametrize("fault", ["duplicate raw row", "rollup counted twice"])
async def test_the_recomputation_catches_a_single_double_count(crash_settings, fault: str) -> None:
    """Negative twin: the same check as above must fail when one row too many is counted."""
    settings = crash_settings
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=19)
    now = datetime.now(UTC)
    await produce(settings, [m for i in range(30) for m in factory.request(now - timedelta(seconds=i), judged=i < 5)])
    async with running_aggregator(settings):
        await wait_caught_up(settings)
    assert await rollup_mismatches(dsn) == {}, "clean before the fault is injected"

    conn = await asyncpg.connect(dsn)
    try:
        if fault == "duplicate raw row":
            # The same response stored twice under a key a hair apart: what a dedup key
            # without the start time, or a broken ON CONFLICT, would let through.
            await conn.execute(
                """INSERT INTO inference_responses
                   SELECT request_start_time + interval '1 microsecond', request_id, event_id, event_time,
                          deployment, variant, run_id, trace_id, status, error_type, error_message,
                          latency_ms, time_to_first_token_ms, prompt_tokens, completion_tokens,
                          total_tokens, usage, sampled, outputs, ingested_at
                   FROM inference_responses ORDER BY request_id LIMIT 1"""
            )
        else:
            # A redelivered evaluation counted again in the rollup without a new raw row.
            await conn.execute(
                """UPDATE rollup_quality SET evaluations = evaluations + 1, errors = errors + 1
                   WHERE (deployment, minute, variant, run_id, metric) =
                         (SELECT deployment, minute, variant, run_id, metric FROM rollup_quality LIMIT 1)"""
            )
    finally:
        await conn.close()
    problems = await rollup_mismatches(dsn)
    expected_table = "rollup_operations" if fault == "duplicate raw row" else "rollup_quality"
    assert expected_table in problems and len(problems[expected_table]) == 1
