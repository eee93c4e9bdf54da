"""Monitors against real Kafka and Postgres: scores go through the real ingest, windows are
evaluated at chosen instants (``once(now)``), and alerts are read back by a plain consumer.

The evaluation clock is passed in, never read from the wall: each step evaluates the window
that closed one grace period before it, so the test is exact whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg
import yaml
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.aggregator.db.pool import create_pool
from services.aggregator.monitors import evaluator as evaluator_module
from services.aggregator.monitors.evaluator import EVALUATOR_LOCK
from services.aggregator.monitors.service import MonitorService
from services.aggregator.monitors.settings import MonitorsSection
from services.aggregator.monitors.store import replace_monitors
from services.aggregator.settings import AggregatorSection as QueryApiSection
from services.aggregator.settings import AggregatorSettings as QueryApiSettings
from services.aggregator.settings import ModelPrice
from shared.events.builders import new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Evaluation, JudgeCall
from shared.settings import KafkaSettings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    Message,
    create_topics,
    produce,
    running_aggregator,
    uuid7_at,
    wait_caught_up,
    wait_for,
)

GRACE = 60
AVERAGE = {"id": "rel-avg", "variant": "a", "statistic": "average", "metric": "relevance", "threshold": 3.5,
           "window": "1m", "min_samples": 3}
CAUTIOUS = {"id": "rel-pass-cautious", "statistic": "pass_rate", "metric": "relevance", "threshold": 0.9,
            "window": "1m", "min_samples": 3, "fire_only_when_ci_below": True}
PLAIN = {"id": "rel-pass-plain", "statistic": "pass_rate", "metric": "relevance", "threshold": 0.9,
         "window": "1m", "min_samples": 3}
# Per minute: fine, bad, then 3 of 4 passing (pass rate 0.75, below 0.9, but with 4 samples
# Wilson's interval reaches 0.95: only the monitor without the interval rule stays firing).
SCRIPT = {0: [5, 5, 4, 5], 1: [1, 2, 1, 2], 2: [5, 4, 5, 2]}


def write_deployments(folder: Path, monitors: list[dict], name: str = "demo") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connections.yaml").write_text(yaml.safe_dump(
        {"connections": {"judge": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                                   "api_key": "none"}}}))
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name,
        "flow": "../flows/none",
        "variants": [{"id": "a", "weight": 1}, {"id": "b", "weight": 1}],
        "column_mapping": {"question": "inputs.question", "context": "inputs.context", "answer": "outputs.answer"},
        "evaluation": {"metrics": ["groundedness", "relevance", "coherence", "fluency"], "sampling_rate": 0.5,
                       "judge": {"connection": "judge", "model": "judge-1"}},
        "monitors": monitors,
    }))
    return folder


def monitor_settings(dsn: str, folder: Path, *, api=None, prices=None, read_key=None, admin_key=None,
                     **monitors) -> QueryApiSettings:
    # The aggregator these tests run ingests only: its own evaluator, on the real clock, would
    # race the test's evaluator, which runs at clock values the test chooses.
    monitors.setdefault("enabled", False)
    section = QueryApiSection(
        group_id=f"it-{uuid4().hex[:12]}", port=0, batch_max_wait_ms=50, prices=prices or {},
        monitors=MonitorsSection(**monitors), **({"api": api} if api is not None else {}),
    )
    return QueryApiSettings(
        database_url=dsn,
        kafka=KafkaSettings(topic_prefix=f"it-{uuid4().hex[:8]}.", partitions=3),
        deployments_dir=folder,
        aggregator=section,
        api_read_key=read_key,
        api_admin_key=admin_key,
    )


def scored(deployment: str, variant: str, metric: str, start: datetime, score: int, rng: random.Random) -> Message:
    meta = new_meta(request_id=uuid7_at(start, rng), deployment=deployment, request_start_time=start, variant=variant)
    event = Evaluation(meta=meta, metric=metric)
    event.judge.CopyFrom(JudgeCall(model="judge-1", prompt_version="v1", prompt_tokens=100, completion_tokens=9,
                                   latency_ms=50.0))
    event.scored.score = score
    event.scored.reason = f"scored {score}"
    record = encode(event)
    return Message("evaluations", event_key(event), record.value, record.headers)


def script_messages(base: datetime, script: dict[int, list[int]], variant: str = "a") -> list[Message]:
    rng = random.Random(5)
    return [scored("demo", variant, "relevance", base + timedelta(minutes=m, seconds=5 + i), s, rng)
            for m, scores in script.items() for i, s in enumerate(scores)]


def step(base: datetime, minute: int) -> datetime:
    """The instant at which the window ending ``minute`` minutes after ``base`` is due."""
    return base + timedelta(minutes=minute, seconds=GRACE + 1)


async def read_alerts(settings: QueryApiSettings, expected: int, seconds: float = 30) -> list[tuple[str, dict]]:
    """(key, JSON) of every record on the alerts topic, waiting until ``expected`` are there."""
    topic = Topics.from_settings(settings).alerts
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or range(3)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[tuple[str, dict]] = []
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found += [(r.key.decode(), json.loads(r.value)) for r in records]
            ends = await consumer.end_offsets(partitions)
            positions = [await consumer.position(tp) for tp in partitions]
            if len(found) >= expected and all(p >= ends[tp] for p, tp in zip(positions, partitions, strict=True)):
                break
        return found
    finally:
        await consumer.stop()


@asynccontextmanager
async def ingested(settings: QueryApiSettings, messages: list[Message]) -> AsyncIterator[None]:
    """Topics made, ``messages`` produced and stored by the real ingest; topics deleted after."""
    topics = await create_topics(settings)
    await ensure_topics(settings, [topics.alerts])
    try:
        await produce(settings, messages)
        async with running_aggregator(settings):
            await wait_caught_up(settings)
        yield
    finally:
        await delete_topics(settings, [*(getattr(topics, role) for role in CONSUMED), topics.alerts])


def minute_base() -> datetime:
    # Data a few minutes back, inside retention and past any grace: the clock of the test is `step`.
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)


async def test_scripted_scores_fire_and_resolve_and_a_plain_consumer_reads_the_alerts(
    fresh_database, tmp_path, monkeypatch
) -> None:
    settings = monitor_settings(fresh_database, write_deployments(tmp_path / "d", [AVERAGE, CAUTIOUS, PLAIN]))
    base = minute_base()
    scale_reads: list[str] = []  # the deployment's recorded version scales, read by the evaluator
    read_versions = evaluator_module.read_versions

    async def counted_read(conn, deployment):
        scale_reads.append(deployment)
        return await read_versions(conn, deployment)

    monkeypatch.setattr(evaluator_module, "read_versions", counted_read)
    async with ingested(settings, script_messages(base, SCRIPT)):
        pool = await create_pool(settings)
        service = MonitorService(settings, pool)
        try:
            await service.open()  # its producer and webhook session (app.py does it at start-up)
            await service.sync_files()
            ticks = [await service.once(step(base, minute)) for minute in (1, 2, 3)]
            assert [t.windows for t in ticks] == [3, 3, 3]
            assert [t.alerts for t in ticks] == [0, 3, 2]
            assert scale_reads == ["demo"] * 3  # once a tick for its three quality monitors, not once each
            alerts = await read_alerts(settings, expected=5)
            rows = await pool.fetch("SELECT * FROM monitor_windows ORDER BY monitor_id, window_end")
            stored = await pool.fetch("SELECT * FROM alerts ORDER BY id")
        finally:
            await service.close()
            await pool.close()
    by_monitor: dict[str, list[dict]] = {}
    for key, body in alerts:
        assert key == body["monitorId"]  # keyed by monitor id: one monitor's changes stay in order
        by_monitor.setdefault(key, []).append(body)
    assert [a["state"] for a in by_monitor["rel-avg"]] == ["ALERT_STATE_FIRING", "ALERT_STATE_RESOLVED"]
    assert [a["state"] for a in by_monitor["rel-pass-cautious"]] == ["ALERT_STATE_FIRING", "ALERT_STATE_RESOLVED"]
    assert [a["state"] for a in by_monitor["rel-pass-plain"]] == ["ALERT_STATE_FIRING"]  # 0.75 is still below
    firing = by_monitor["rel-avg"][0]
    assert firing["value"] == 1.5 and firing["threshold"] == 3.5 and firing["sampleCount"] == 4
    assert firing["statistic"] == "ALERT_STATISTIC_AVERAGE" and firing["variant"] == "a"
    assert firing["confidenceLow"] < 1.5 < firing["confidenceHigh"]
    assert datetime.fromisoformat(firing["windowStart"]) == base + timedelta(minutes=1)
    assert datetime.fromisoformat(firing["windowEnd"]) == base + timedelta(minutes=2)
    assert by_monitor["rel-avg"][1]["value"] == 4.0
    windows = {(r["monitor_id"], r["window_end"]): r for r in rows}
    assert len(rows) == 9
    plain = [windows[("rel-pass-plain", base + timedelta(minutes=m))] for m in (1, 2, 3)]
    assert [w["value"] for w in plain] == [1.0, 0.0, 0.75] and [w["violated"] for w in plain] == [False, True, True]
    cautious_last = windows[("rel-pass-cautious", base + timedelta(minutes=3))]
    assert cautious_last["value"] == 0.75 and not cautious_last["violated"] and cautious_last["ci_high"] > 0.9
    assert all(r["published_at"] is not None for r in stored) and len(stored) == 5


async def test_two_evaluators_at_once_emit_each_window_once(fresh_database, tmp_path) -> None:
    settings = monitor_settings(fresh_database, write_deployments(tmp_path / "d", [AVERAGE, CAUTIOUS, PLAIN]))
    base = minute_base()
    async with ingested(settings, script_messages(base, SCRIPT)):
        pools = [await create_pool(settings) for _ in range(2)]
        services = [MonitorService(settings, pool) for pool in pools]
        try:
            for service in services:
                await service.open()
            await services[0].sync_files()
            # Positive proof of the lock: while another session holds it, a tick does nothing.
            holder = await asyncpg.connect(fresh_database)
            await holder.execute("SELECT pg_advisory_lock($1)", EVALUATOR_LOCK)
            blocked = await services[0].once(step(base, 1))
            await holder.execute("SELECT pg_advisory_unlock($1)", EVALUATOR_LOCK)
            await holder.close()
            assert not blocked.leader and blocked.windows == 0
            for minute in (1, 2, 3):
                for _ in range(3):  # several rounds each, both replicas at once
                    await asyncio.gather(*(s.once(step(base, minute)) for s in services))
            alerts = await read_alerts(settings, expected=5)
            windows = await pools[0].fetchval("SELECT count(*) FROM monitor_windows")
        finally:
            for service, pool in zip(services, pools, strict=True):
                await service.close()
                await pool.close()
    assert windows == 9
    assert sum(s.stats.windows for s in services) == 9  # no window measured twice, by either
    assert sum(s.stats.alerts for s in services) == 5
    assert len(alerts) == 5 and len({a["eventId"] for _, a in alerts}) == 5


async def test_operational_monitors_match_plain_sql_over_the_raw_rows(fresh_database, tmp_path) -> None:
    monitors = [
        {"id": "errors", "statistic": "error_rate", "threshold": 0.5, "window": "1m", "min_samples": 1},
        {"id": "p95", "statistic": "latency_p95", "threshold": 3600, "window": "1m", "min_samples": 1},
        {"id": "tokens", "statistic": "tokens_per_hour", "threshold": 1e12, "window": "1m", "min_samples": 1},
        {"id": "cost", "statistic": "cost_per_hour", "threshold": 1e9, "window": "1m", "min_samples": 1},
    ]
    prices = {"gpt-4o": ModelPrice(prompt_per_1k=0.0025, completion_per_1k=0.01),
              "gpt-4o-mini": ModelPrice(prompt_per_1k=0.00015, completion_per_1k=0.0006)}
    settings = monitor_settings(fresh_database, write_deployments(tmp_path / "d", monitors), prices=prices)
    base = minute_base()
    factory = EventFactory(seed=11)
    messages = [m for i in range(300) for m in factory.request(base + timedelta(milliseconds=150 * i + 7))]
    async with ingested(settings, messages):
        pool = await create_pool(settings)
        service = MonitorService(settings, pool)
        try:
            await service.open()  # its producer and webhook session (app.py does it at start-up)
            await service.sync_files()
            await service.once(step(base, 1))
            got = {r["monitor_id"]: r for r in await pool.fetch("SELECT * FROM monitor_windows")}
            window = ("WHERE deployment = 'demo' AND run_id = '' AND request_start_time >= $1 "
                      "AND request_start_time < $1 + interval '1 minute'")
            raw = await pool.fetchrow(
                f"SELECT count(*) AS n, count(*) FILTER (WHERE status = 'error') AS errors, "
                f"sum(total_tokens) AS tokens FROM inference_responses {window}", base)
            latencies = [r["latency_ms"] for r in await pool.fetch(
                f"SELECT latency_ms FROM inference_responses {window} ORDER BY latency_ms", base)]
            cost = await pool.fetchval(
                f"""SELECT sum((u->>'prompt_tokens')::numeric / 1000 * p.prompt_per_1k
                             + (u->>'completion_tokens')::numeric / 1000 * p.completion_per_1k)::float8
                    FROM inference_responses CROSS JOIN LATERAL jsonb_array_elements(usage) AS u
                    JOIN model_prices p ON p.model = u->>'model' {window}""", base)
        finally:
            await service.close()
            await pool.close()
    assert raw["n"] == 300 and all(w["sample_count"] == 300 for w in got.values())
    assert got["errors"]["value"] == raw["errors"] / 300 and raw["errors"] > 0
    exact_p95 = latencies[int(0.95 * (len(latencies) - 1))] / 1000
    assert abs(got["p95"]["value"] - exact_p95) / exact_p95 <= 0.01
    assert got["tokens"]["value"] == raw["tokens"] * 60
    assert abs(got["cost"]["value"] - cost * 60) <= 1e-9 * cost * 60 and cost > 0
    assert not any(w["violated"] for w in got.values())


class _Hook:
    """A webhook receiver on loopback answering with the statuses it is given, in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict, dict]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.json()))
        return web.Response(status=self.statuses[min(len(self.calls) - 1, len(self.statuses) - 1)])


@asynccontextmanager
async def hook_server(*hooks: _Hook) -> AsyncIterator[list[str]]:
    app = web.Application()
    for index, hook in enumerate(hooks):
        app.router.add_post(f"/hook{index}", hook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield [f"http://127.0.0.1:{port}/hook{i}" for i in range(len(hooks))]
    finally:
        await runner.cleanup()


async def test_webhooks_are_retried_and_a_removed_firing_monitor_resolves(fresh_database, tmp_path) -> None:
    settings = monitor_settings(fresh_database, write_deployments(tmp_path / "d", []),
                                webhook_retry_initial_seconds=0.05, webhook_max_attempts=4)
    base = minute_base()
    flaky, refusing = _Hook([503, 200]), _Hook([400])
    async with ingested(settings, script_messages(base, SCRIPT)), hook_server(flaky, refusing) as urls:
        pool = await create_pool(settings)
        service = MonitorService(settings, pool)
        try:
            await service.open()  # its producer and webhook session (app.py does it at start-up)
            monitors = [{**AVERAGE, "notification": {"webhook_url": urls[0]}},
                        {**PLAIN, "notification": {"webhook_url": urls[1]}}]
            async with pool.acquire() as conn:  # the API's path: stored in Postgres, wins over the file
                await replace_monitors(conn, "demo", {"monitors": monitors}, None)
            for minute in (1, 2):
                await service.once(step(base, minute))

            async def settled() -> bool:
                await service.once(step(base, 2))
                await service.dispatcher.deliver_due()  # the service's own task does this when it runs
                return not await pool.fetchval("SELECT count(*) FROM alert_deliveries WHERE state = 'pending'")

            await wait_for(settled, 30, "webhook deliveries to settle")
            firing = {r["monitor_id"]: r for r in await pool.fetch(
                "SELECT a.*, d.state AS webhook_state, d.attempts AS webhook_attempts, d.last_error AS webhook_last_error,"
                " d.target FROM alerts a JOIN alert_deliveries d ON d.alert_id = a.id")}
            log = await pool.fetch("SELECT * FROM delivery_log ORDER BY id")
            async with pool.acquire() as conn:
                await replace_monitors(conn, "demo", {"monitors": []}, None)
            await service.once(step(base, 2))
            await wait_for(settled, 30, "the removal's webhook")
            resolved = await pool.fetch("SELECT * FROM alerts WHERE state = 'resolved' ORDER BY id")
        finally:
            await service.close()
            await pool.close()
    assert firing["rel-avg"]["webhook_state"] == "delivered" and firing["rel-avg"]["webhook_attempts"] == 2
    assert firing["rel-pass-plain"]["webhook_state"] == "failed"  # 400 is final: no retry
    assert firing["rel-pass-plain"]["webhook_last_error"] == "HTTP 400"
    # Every attempt is in the delivery log: the flaky hook's 503 then 200, the refusing one's 400.
    assert [(r["monitor_id"], r["attempt"], r["http_status"], r["outcome"]) for r in log] == [
        ("rel-avg", 1, 503, "retrying"), ("rel-pass-plain", 1, 400, "failed"), ("rel-avg", 2, 200, "delivered")]
    assert {r["destination"] for r in log} == {"notification.webhook"}
    first, second = flaky.calls[0], flaky.calls[1]
    assert first[1] == second[1] and first[1]["text"].startswith("[FIRING] rel-avg")
    assert first[0]["X-PromptPulse-Alert-Id"] == firing["rel-avg"]["event_id"]
    # Removing monitors while they fire ends their alerts: a last resolved alert each.
    assert sorted(r["monitor_id"] for r in resolved) == ["rel-avg", "rel-pass-plain"]
    assert all("removed" in r["message"] for r in resolved)
    assert flaky.calls[-1][1]["text"].startswith("[RESOLVED] rel-avg")
