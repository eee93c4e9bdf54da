"""Evaluator versions through the real ingest and query API (Kafka, Postgres, HTTP on loopback):
two versions of one metric kept apart, old-format events counted as before, re-judged outcomes
stored apart from the live figures, redelivery counted once, a value off its scale dead-lettered.
Figures are checked against values worked out by hand from the events below."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.aggregator.app import create_app
from shared.events.builders import new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Evaluation, JudgeCall
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import monitor_settings, write_deployments
from tests.support.aggregator import (
    CONSUMED,
    Message,
    create_topics,
    produce,
    uuid7_at,
    wait_caught_up,
)
from tests.support.rollup_recompute import rollup_mismatches

READ_KEY = "read-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}


def outcome(start: datetime, rng: random.Random, *, metric: str = "relevance", score: int | None = None,
            value: float | None = None, label: str = "", evaluator: str = "", version: str = "",
            prompt_version: str | None = "relevance-v1", rejudge_id: str = "", request_id: str | None = None,
            variant: str = "a") -> tuple[Message, str]:
    """One Evaluation event: old format (no evaluator, no value) unless evaluator/version/value are given."""
    request_id = request_id or uuid7_at(start, rng)
    meta = new_meta(request_id=request_id, deployment="demo", request_start_time=start, variant=variant)
    event = Evaluation(meta=meta, metric=metric, evaluator=evaluator, evaluator_version=version, rejudge_id=rejudge_id)
    if prompt_version is not None:
        event.judge.CopyFrom(JudgeCall(model="judge-1", prompt_version=prompt_version, prompt_tokens=10,
                                       completion_tokens=2, latency_ms=5.0))
    if score is None:
        event.not_applicable.reason = "no context"
    else:
        event.scored.score = score
        event.scored.reason = "r"
        event.scored.label = label
        if value is not None:
            event.scored.value = value
    record = encode(event)
    return Message("evaluations", event_key(event), record.value, record.headers), request_id


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession

    async def json(self, path: str, status: int = 200) -> dict:
        async with self.http.get(self.url + path, headers=READ) as response:
            body = await response.json()
            assert response.status == status, body
            return body


@pytest.fixture
async def started(fresh_database, tmp_path) -> AsyncIterator[tuple]:
    """An aggregator with ingest and the query API over the demo deployment's file; yields
    (api, settings, dsn, produce-and-wait)."""
    settings = monitor_settings(fresh_database, write_deployments(tmp_path / "deployments", []), read_key=READ_KEY)
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]

    async def send(messages: list[Message]) -> None:
        await produce(settings, messages)
        await wait_caught_up(settings)

    try:
        async with aiohttp.ClientSession() as http:
            yield Api(f"http://127.0.0.1:{port}", http), settings, fresh_database, send
    finally:
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])


async def test_versions_apart_rejudges_aside_and_redelivery_counted_once(started) -> None:
    api, _, dsn, send = started
    rng = random.Random(13)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    at = [base + timedelta(seconds=5 + i) for i in range(6)]
    later = [base + timedelta(minutes=2, seconds=5 + i) for i in range(3)]
    live: list[Message] = []
    # Version relevance-v1, in the old format (no evaluator, no value: the score is the value).
    for start, score in zip(at[:4], (5, 4, 4, 2), strict=True):
        live.append(outcome(start, rng, score=score)[0])
    # An old-format outcome without a judge call records no version: counted with every version.
    live.append(outcome(at[4], rng, prompt_version=None)[0])
    # Version relevance-v2, two minutes later, in the new format.
    v2_ids = []
    for start, score in zip(later[:2], (1, 2), strict=True):
        message, request_id = outcome(start, rng, score=score, value=float(score), evaluator="relevance",
                                      version="relevance-v2")
        live.append(message)
        v2_ids.append(request_id)
    # Re-judged outcomes: a third version and v1 again on v2's requests. They must not move any
    # live figure; the same (request, metric, version) twice is stored once.
    rejudged = [outcome(later[0], rng, score=5, value=5.0, evaluator="relevance", version="relevance-v3",
                        rejudge_id="rj-1", request_id=v2_ids[0])[0],
                outcome(later[0], rng, score=5, value=5.0, evaluator="relevance", version="relevance-v3",
                        rejudge_id="rj-2", request_id=v2_ids[0])[0],
                outcome(later[1], rng, score=3, value=3.0, evaluator="relevance", version="relevance-v1",
                        rejudge_id="rj-1", request_id=v2_ids[1])[0]]
    # A value off the built-in 1-5 scale is dead-lettered, naming the field.
    off_scale = outcome(later[2], rng, score=5, value=7.0, evaluator="relevance", version="relevance-v2")[0]

    await send(live + rejudged + [off_scale])
    start = base.isoformat().replace("+00:00", "Z")
    end = (base + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    path = f"/v1/deployments/demo/metrics?from={start}&to={end}&step=1m"
    latest = (await api.json(path))["overview"]["quality"]["relevance"]
    # Default: the latest version in the range, v2: scores 1 and 2, plus the unversioned outcome.
    assert latest["version"] == "relevance-v2"
    assert [v["version"] for v in latest["versions"]] == ["relevance-v2", "relevance-v1"]
    assert (latest["samples"], latest["average"], latest["pass_rate"]) == (2, 1.5, 0.0)
    assert (latest["evaluations"], latest["not_applicable"]) == (3, 1)
    assert latest["scores"] == {"1": 1, "2": 1, "3": 0, "4": 0, "5": 0}
    assert latest["scale"] == {"type": "integer", "min": 1.0, "max": 5.0} and latest["pass_score"] == 3
    older = (await api.json(path + "&version=relevance-v1"))["overview"]["quality"]["relevance"]
    assert older["version"] == "relevance-v1"
    assert (older["samples"], older["average"], older["pass_rate"]) == (4, 15 / 4, 3 / 4)
    assert (older["evaluations"], older["not_applicable"]) == (5, 1)
    assert (await api.json(path + "&version=relevance-v3", 404))["error"]["field"] == "version"
    assert (await api.json(path + "&pass_score=4&version=relevance-v1"))["overview"]["quality"]["relevance"][
        "pass_rate"] == 3 / 4

    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetch(
            "SELECT request_id, evaluator_version, value, rejudge_id FROM rejudge_evaluations ORDER BY 2")
        assert [(r["evaluator_version"], r["value"]) for r in stored] == [("relevance-v1", 3.0), ("relevance-v3", 5.0)]
        assert await conn.fetchval("SELECT count(*) FROM evaluations") == 7  # the live ones only
        assert await conn.fetchval("SELECT sum(evaluations) FROM rollup_evaluator_quality") == 7
        assert await conn.fetchval("SELECT sum(evaluations) FROM rollup_quality") == 7
        [letter] = await conn.fetch("SELECT reason, detail FROM dead_letters")
        assert letter["reason"] == "implausible-value" and letter["detail"].startswith("scored.value is 7.0")
        assert await rollup_mismatches(dsn) == {}
        before = await conn.fetch("SELECT * FROM rollup_evaluator_quality ORDER BY 1, 2, 3, 4, 5, 6")
        values_before = await conn.fetch("SELECT * FROM rollup_evaluator_values ORDER BY 1, 2, 3, 4, 5, 6, 7, 8")
    finally:
        await conn.close()

    # Everything delivered again (a replay, a producer retry): nothing counted twice.
    await send(live + rejudged)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetch("SELECT * FROM rollup_evaluator_quality ORDER BY 1, 2, 3, 4, 5, 6") == before
        assert await conn.fetch("SELECT * FROM rollup_evaluator_values ORDER BY 1, 2, 3, 4, 5, 6, 7, 8") == values_before
        assert await conn.fetchval("SELECT count(*) FROM rejudge_evaluations") == 2
    finally:
        await conn.close()
    assert (await api.json(path))["overview"]["quality"]["relevance"] == latest
