"""Aggregator ingestion against real Kafka and PostgreSQL: exactly-once effect, poison records,
late events, batch runs, payload sampling, offsets from Postgres, notifications."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg
import pytest

from services.aggregator.ingest.values import uuid7_time
from shared.events.builders import new_event_id, new_meta
from shared.events.codec import encode
from shared.events.messages import Evaluation, Feedback, InferenceResponse, InferenceStatus
from shared.sampling import is_sampled
from shared.topics import delete_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    Message,
    aggregator_settings,
    create_topics,
    ingestor_of,
    produce,
    running_aggregator,
    settings_on_own_topics,
    stored_offsets,
    wait_caught_up,
    wait_for,
)
from tests.support.rollup_recompute import rollup_mismatches, rollup_snapshot


@pytest.fixture
async def agg(fresh_database: str, unique_name: str) -> AsyncIterator:
    async with settings_on_own_topics(fresh_database, unique_name) as made:
        yield made


async def _fetch(dsn: str, query: str, *args):
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_events_delivered_twice_give_the_same_rollups_as_once(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=11)
    now = datetime.now(UTC)
    messages = [
        m
        for i in range(120)
        for m in factory.request(now - timedelta(seconds=7 * i), judged=i % 3 == 0, feedback=i % 10 == 0)
    ]
    await produce(settings, messages)
    async with running_aggregator(settings) as app:
        await wait_caught_up(settings)
        once = await rollup_snapshot(dsn)
        stats = ingestor_of(app).stats
        duplicates_before = stats.duplicates
        await produce(settings, messages)  # every record again, as a redelivery would bring it
        await wait_caught_up(settings)
        twice = await rollup_snapshot(dsn)
        duplicates_after = stats.duplicates

    assert once == twice
    assert duplicates_before == 0
    # Every row of the second delivery was recognised as already stored.
    stored = (await _fetch(dsn, """
        SELECT (SELECT count(*) FROM inference_requests) + (SELECT count(*) FROM inference_responses)
             + (SELECT count(*) FROM evaluations) + (SELECT count(*) FROM feedback)
             + (SELECT count(*) FROM spans) AS n"""))[0]["n"]
    assert duplicates_after == stored
    totals = (await _fetch(dsn, "SELECT sum(requests) AS q, sum(responses) AS r FROM rollup_operations"))[0]
    assert (totals["q"], totals["r"]) == (120, 120)
    evaluations = (await _fetch(dsn, "SELECT sum(evaluations) AS n FROM rollup_quality"))[0]["n"]
    assert evaluations == 40 * 4
    assert (await _fetch(dsn, "SELECT count(*) AS n FROM spans"))[0]["n"] == 120 * 5
    assert await rollup_mismatches(dsn) == {}


def _poison_messages() -> list[tuple[Message, str]]:
    start = datetime.now(UTC)
    meta = new_meta(request_id=new_event_id(), deployment="demo", request_start_time=start)
    nan_latency = InferenceResponse(meta=meta, status=InferenceStatus.INFERENCE_STATUS_OK, latency_ms=float("nan"))
    future = new_meta(request_id=new_event_id(), deployment="demo", request_start_time=start + timedelta(days=400))
    far_future = InferenceResponse(meta=future, status=InferenceStatus.INFERENCE_STATUS_OK, latency_ms=5.0)
    long_metric = Evaluation(meta=meta, metric="m" * 300)
    long_metric.scored.score = 3
    headers = [("pp-event-type", b"inference.request"), ("pp-schema-version", b"1")]

    def encoded(role: str, event) -> Message:
        record = encode(event)
        return Message(role, b"k", record.value, record.headers)

    return [
        (Message("inference", b"k", b"\xff\x00garbage", headers), "malformed-body"),
        (Message("inference", b"k", b"x", [("pp-event-type", b"no.such.type"), ("pp-schema-version", b"1")]),
         "unknown-event-type"),
        (Message("feedback", b"k", b"x", []), "missing-event-type"),
        (encoded("inference", nan_latency), "implausible-value"),
        (encoded("inference", far_future), "time-out-of-range"),
        (encoded("evaluations", long_metric), "invalid-value"),
        (Message("spans", b"t", b"\x0a\x05broken", []), "malformed-body"),
    ]


async def test_poison_records_go_to_dead_letters_and_the_batch_goes_on(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=3)
    now = datetime.now(UTC)
    before = [m for i in range(20) for m in factory.request(now - timedelta(seconds=i))]
    after = [m for i in range(20) for m in factory.request(now - timedelta(seconds=30 + i))]
    poison = _poison_messages()
    await produce(settings, before + [m for m, _ in poison] + after)
    async with running_aggregator(settings):
        await wait_caught_up(settings)

    letters = await _fetch(dsn, "SELECT topic, reason, detail, value FROM dead_letters ORDER BY id")
    assert sorted(r["reason"] for r in letters) == sorted(reason for _, reason in poison)
    assert all(r["detail"] for r in letters)
    assert any(r["value"] == b"\xff\x00garbage" for r in letters), "the poison record is kept as it came"
    requests = (await _fetch(dsn, "SELECT count(*) AS n FROM inference_requests"))[0]["n"]
    assert requests == 40, "the good records around the poison ones are all stored"
    assert await rollup_mismatches(dsn) == {}


async def test_a_record_postgres_refuses_is_isolated_and_dead_lettered(agg, monkeypatch) -> None:
    """A value no decoder check caught but Postgres refuses: the batch is split until that one
    record is alone, which is dead-lettered; every other record of the batch is stored."""
    from services.aggregator.ingest import decode as decode_module

    settings = agg
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=5)
    now = datetime.now(UTC)
    messages = [m for i in range(30) for m in factory.request(now - timedelta(seconds=i), feedback=True)]
    await produce(settings, messages)
    poisoned_comment = "poison-me"
    original = decode_module.feedback_row
    victims: list[str] = []

    def corrupting(event, common):
        row = original(event, common)
        if not victims:
            victims.append(row.event_id)
        if row.event_id == victims[0]:  # the same record every time it is decoded again
            return row._replace(rating=2**40, comment=poisoned_comment)  # does not fit an integer
        return row

    monkeypatch.setattr(decode_module, "feedback_row", corrupting)
    async with running_aggregator(settings):
        await wait_caught_up(settings)

    letters = await _fetch(dsn, "SELECT reason, topic FROM dead_letters")
    assert [(r["reason"], r["topic"]) for r in letters] == [("database-rejected", settings.kafka.topic_prefix + "feedback")]
    feedback = await _fetch(dsn, "SELECT event_id FROM feedback")
    assert len(feedback) == 29 and victims[0] not in {r["event_id"] for r in feedback}
    assert (await _fetch(dsn, "SELECT count(*) AS n FROM inference_requests"))[0]["n"] == 30
    assert await rollup_mismatches(dsn) == {}


async def test_late_events_land_in_their_own_minute(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=9)
    now = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=2)
    early_minute = now - timedelta(minutes=90)
    await produce(settings, [m for _ in range(3) for m in factory.request(now)])
    async with running_aggregator(settings):
        await wait_caught_up(settings)
        # A spool draining hours later: events about requests that started 90 minutes ago,
        # then one more about the minute that already has figures.
        await produce(settings, [m for _ in range(2) for m in factory.request(early_minute)])
        await produce(settings, factory.request(now + timedelta(seconds=5)))
        await wait_caught_up(settings)

    rows = await _fetch(dsn, "SELECT minute, sum(requests) AS n FROM rollup_operations GROUP BY minute ORDER BY minute")
    assert [(r["minute"], r["n"]) for r in rows] == [
        (early_minute.replace(second=0), 2),
        (now.replace(second=0), 4),
    ]
    assert await rollup_mismatches(dsn) == {}


async def test_batch_runs_are_kept_apart_and_keep_their_payloads(fresh_database, unique_name) -> None:
    settings = aggregator_settings(
        fresh_database, f"it-{uuid4().hex[:8]}.", unique_name, default_sampling_rate=0.5
    )
    topics = await create_topics(settings)
    try:
        dsn = fresh_database
        factory = EventFactory(seed=13, variants=("a",))
        start = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=1)
        production = [m for _ in range(40) for m in factory.request(start)]
        run = [m for _ in range(10) for m in factory.request(start, run_id="run-7", judged=True)]
        await produce(settings, production + run)
        async with running_aggregator(settings):
            await wait_caught_up(settings)

        ops = await _fetch(dsn, "SELECT run_id, requests FROM rollup_operations ORDER BY run_id")
        assert [(r["run_id"], r["requests"]) for r in ops] == [("", 40), ("run-7", 10)]
        quality = await _fetch(dsn, "SELECT DISTINCT run_id FROM rollup_quality")
        assert {r["run_id"] for r in quality} <= {"", "run-7"}
        assert (await _fetch(dsn, "SELECT sum(evaluations) AS n FROM rollup_quality WHERE run_id = 'run-7'"))[0]["n"] == 40
        runs = await _fetch(dsn, "SELECT run_id, deployment, first_minute FROM batch_runs")
        assert [(r["run_id"], r["deployment"], r["first_minute"]) for r in runs] == [
            ("run-7", "demo", start.replace(second=0))
        ]
        requests = await _fetch(dsn, "SELECT request_id, run_id, sampled, inputs FROM inference_requests")
        for row in requests:
            sampled = is_sampled(row["request_id"], 0.5)
            assert row["sampled"] == sampled
            assert (row["inputs"] is not None) == (sampled or row["run_id"] == "run-7")
        assert any(r["inputs"] is None for r in requests) and any(
            r["inputs"] is not None and r["run_id"] == "" for r in requests
        ), "the sample at 50% keeps some production payloads and drops others"
        outputs = await _fetch(dsn, "SELECT run_id, sampled, status, outputs FROM inference_responses")
        for row in outputs:
            if row["status"] == "ok":
                assert (row["outputs"] is not None) == (row["sampled"] or row["run_id"] == "run-7")
        assert await rollup_mismatches(dsn) == {}
    finally:
        await delete_topics(settings, [getattr(topics, role) for role in CONSUMED])


async def test_feedback_without_start_time_takes_it_from_the_request_id(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    request_id = new_event_id()  # the gateway's ids are UUIDv7: they embed their creation time
    meta = new_meta(request_id=request_id, deployment="demo", request_start_time=None)
    record = encode(Feedback(meta=meta, rating=4, comment="good"))
    await produce(settings, [Message("feedback", request_id.encode(), record.value, record.headers)])
    async with running_aggregator(settings):
        await wait_caught_up(settings)
    rows = await _fetch(dsn, "SELECT request_start_time, start_time_source FROM feedback")
    assert [(r["request_start_time"], r["start_time_source"]) for r in rows] == [
        (uuid7_time(request_id), "request_id")
    ]
    # No rollup: feedback names no variant, so the query API joins it to its request when read.
    assert await _fetch(dsn, "SELECT * FROM rollup_feedback") == []
    assert await _fetch(dsn, "SELECT * FROM deployment_variants") == []  # feedback names no variant


async def test_consumption_starts_from_the_offsets_stored_in_postgres(agg) -> None:
    """Postgres, not Kafka, says where to start: offsets stored there are sought on assignment."""
    settings = agg
    dsn = settings.database_url.get_secret_value()
    factory = EventFactory(seed=21)
    now = datetime.now(UTC)
    first = [m for i in range(10) for m in factory.request(now - timedelta(seconds=i))]
    await produce(settings, first)
    async with running_aggregator(settings):
        await wait_caught_up(settings)
    stored = await stored_offsets(dsn, settings.group_id())
    # Pretend an earlier run already stored everything up to the end, then publish more: a
    # restart must read only the new records, never the old ones again.
    second = [m for i in range(5) for m in factory.request(now - timedelta(seconds=i))]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE inference_requests, inference_responses, evaluations, spans, rollup_operations")
    finally:
        await conn.close()
    await produce(settings, second)
    async with running_aggregator(settings) as app:
        await wait_caught_up(settings)
        assert ingestor_of(app).stats.duplicates == 0
    assert (await _fetch(dsn, "SELECT count(*) AS n FROM inference_requests"))[0]["n"] == 5
    after = await stored_offsets(dsn, settings.group_id())
    assert all(after[tp] >= offset for tp, offset in stored.items())


async def test_each_committed_batch_notifies_its_deployments(agg) -> None:
    settings = agg
    dsn = settings.database_url.get_secret_value()
    payloads: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(dsn)
    await listener.add_listener("promptpulse_metrics", lambda *args: payloads.put_nowait(args[3]))
    try:
        factory = EventFactory(seed=4)
        start = datetime.now(UTC).replace(microsecond=0)
        await produce(settings, factory.request(start) + factory.request(start, deployment="other"))
        async with running_aggregator(settings):
            await wait_caught_up(settings)
            seen: set[str] = set()

            async def both_seen() -> bool:
                while not payloads.empty():
                    seen.add(json.loads(payloads.get_nowait())["deployment"])
                return seen >= {"demo", "other"}

            await wait_for(both_seen, 10, "notifications for both deployments")
    finally:
        await listener.close()
