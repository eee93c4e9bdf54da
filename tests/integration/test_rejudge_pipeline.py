"""Re-judging through the whole pipeline: the aggregator's API (real PostgreSQL, HTTP on loopback)
takes the request and publishes the command, the processor (real broker, llmsim) re-judges the
window, the aggregator stores the outcomes apart and compares old version against new.

- A small fixture whose comparison figures were worked out by hand (below, in the comments).
- A window of requests, sampled and unsampled, re-judged under a rubric's new prompt: one
  outcome per request under each version, the window's live rollups unchanged, live traffic
  judged meanwhile; the API's refusals name their field.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.aggregator.app import create_app
from shared.events.builders import dict_to_struct, new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Evaluation, InferenceRequest
from shared.sampling import is_sampled
from shared.settings import KafkaSettings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import monitor_settings
from tests.integration.test_processor_harness import (
    QA,
    Producer,
    response_event,
    stage,
    write_deployments,
)
from tests.integration.test_processor_rejudge import ANSWER, V1, V2, spec, version
from tests.support.aggregator import Message, produce, uuid7_at, wait_caught_up, wait_for
from tests.support.rollup_recompute import rollup_snapshot

REPO = Path(__file__).resolve().parents[2]
READ_KEY, ADMIN_KEY = "read-" + uuid4().hex, "admin-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")}
    return env | {"PROMPTPULSE_API_READ_KEY": READ_KEY, "PROMPTPULSE_API_ADMIN_KEY": ADMIN_KEY}


async def run_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=cli_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Aggregator:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def call(self, method: str, path: str, status: int, body: Any = None) -> dict:
        headers = ADMIN if method == "POST" else READ
        async with self.http.request(method, self.url + path, headers=headers, json=body) as response:
            payload = await response.json()
            assert response.status == status, payload
            return payload

    async def done(self, rejudge_id: str, stored: int, within: float = 90.0) -> dict:
        deadline = time.monotonic() + within
        while True:
            view = await self.call("GET", f"/v1/rejudges/{rejudge_id}", 200)
            if view["status"] == "done" and view["progress"]["stored"] >= stored:
                return view
            assert time.monotonic() < deadline, json.dumps(view)[:3000]
            await asyncio.sleep(0.3)


@asynccontextmanager
async def aggregator(settings: Any) -> AsyncIterator[Aggregator]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Aggregator(f"http://127.0.0.1:{runner.addresses[0][1]}", http)
    finally:
        await runner.cleanup()


def settings_for(dsn: str, folder: Path, prefix: str) -> Any:
    settings = monitor_settings(dsn, folder, read_key=READ_KEY, admin_key=ADMIN_KEY)
    return settings.model_copy(update={"kafka": KafkaSettings(topic_prefix=prefix, partitions=3)})


def outcome(request_id: str, start: datetime, value: float, evaluator_version: str, rejudge_id: str = "") -> Message:
    meta = new_meta(request_id=request_id, deployment="shop", request_start_time=start)
    event = Evaluation(meta=meta, metric="cites_context", evaluator="cites_context",
                       evaluator_version=evaluator_version, rejudge_id=rejudge_id)
    event.scored.value = value
    event.scored.score = 1 + int(4 * value / 10 + 0.5)
    event.scored.reason = "r"
    record = encode(event)
    return Message("evaluations", event_key(event), record.value, record.headers)


async def test_comparison_figures_match_a_hand_worked_fixture(fresh_database: str, tmp_path: Path) -> None:
    async with stage(tmp_path, spec(V1)) as st:
        current = version(st.deployments_dir)
        settings = settings_for(fresh_database, st.deployments_dir, st.prefix)
        await ensure_topics(settings, [getattr(st.topics, t) for t in ("feedback", "spans")])
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        rng = random.Random(5)
        ids = sorted(uuid7_at(start + timedelta(seconds=i), rng) for i in range(5))
        # Old version (live) and new version (re-judged), on the 0-10 scale, pass at least 7:
        old, new = [8, 6, 9, 3, 7], [6, 6, 9, 8, 9]
        async with aggregator(settings) as api:
            view = await api.call("POST", "/v1/deployments/shop/rejudges", 202, {
                "evaluator": f"cites_context@{current}", "from": iso(start), "to": iso(start + timedelta(minutes=1))})
            messages = [outcome(rid, start + timedelta(seconds=i), o, "old-version")
                        for i, (rid, o) in enumerate(zip(ids, old, strict=True))]
            messages += [outcome(rid, start + timedelta(seconds=i), n, current, view["id"])
                         for i, (rid, n) in enumerate(zip(ids, new, strict=True))]
            # A request outside the window, re-judged too: not in this comparison.
            messages.append(outcome("outside", start + timedelta(minutes=2), 1, current, view["id"]))
            await produce(settings, messages)
            await wait_caught_up(settings)
            shown = await api.call("GET", f"/v1/rejudges/{view['id']}", 200)
            listed = await api.call("GET", "/v1/deployments/shop/rejudges", 200)
        await delete_topics(settings, [Topics.from_settings(settings).feedback, Topics.from_settings(settings).spans])
    assert [r["id"] for r in listed["rejudges"]] == [view["id"]]
    [figures] = shown["comparison"]["metrics"]
    assert (figures["old_version"], figures["new_version"], figures["pairs"]) == ("old-version", current, 5)
    # Differences new - old: -2, 0, 0, 5, 2. Mean 1.0; deviations -3, -1, -1, 4, 1, squares sum 28,
    # variance 28/4 = 7, standard error sqrt(7/5) = 1.183216; t(0.975, 4) = 2.776445, half width
    # 3.285141: [-2.285141, 4.285141].
    difference = figures["mean_difference"]
    assert difference["mean"] == pytest.approx(1.0)
    assert difference["confidence_interval"] == pytest.approx([-2.285141, 4.285141], abs=1e-5)
    # Pass (at least 7): old P F P F P = 0.6, new F F P P P = 0.6.
    assert figures["pass_rate"] == {"old": pytest.approx(0.6), "new": pytest.approx(0.6)}
    # Equal scores: the 6/6 and 9/9 pairs, 2 of 5.
    assert figures["exact_match_rate"] == pytest.approx(0.4)
    # Pass/fail agreement 3 of 5 = 0.6; chance 0.6 * 0.6 + 0.4 * 0.4 = 0.52; (0.6 - 0.52) / 0.48.
    assert figures["cohen_kappa"] == pytest.approx(0.08 / 0.48)
    # Quadratic weights (i - j)^2 / 100 over 0..10: observed (4 + 0 + 0 + 25 + 4) / 100 / 5 per
    # pair... as totals: observed 33/100, expected sum over old i of sum over new j (i - j)^2 =
    # 10 + 22 + 19 + 115 + 11 = 177, / (5 * 100) = 0.354; kappa = 1 - 0.33 / 0.354.
    assert figures["weighted_kappa"] == pytest.approx(1 - 0.33 / 0.354)
    moved = [(m["request_id"], m["old"], m["new"]) for m in figures["most_moved"]]
    # 3 -> 8 first; then the two moves of 2 by request id; unchanged requests are not listed.
    assert moved == [(ids[3], 3, 8), *sorted([(ids[0], 8, 6), (ids[4], 7, 9)])]
    assert figures["new_outcomes"] == {"scored": 5, "not_applicable": 0, "error": 0}
    assert shown["progress"]["stored"] == 6 and shown["status"] == "requested"


async def test_a_window_rejudged_end_to_end_once_per_version_live_rollups_unchanged(
    fresh_database: str, tmp_path: Path
) -> None:
    async with stage(tmp_path, spec(V1)) as st:
        old = version(st.deployments_dir)
        settings = settings_for(fresh_database, st.deployments_dir, st.prefix)
        await ensure_topics(settings, [getattr(st.topics, t) for t in ("feedback", "spans")])
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=6)
        end = start + timedelta(minutes=1)
        rng = random.Random(8)
        ids = [uuid7_at(start + timedelta(seconds=2 * i), rng) for i in range(16)]
        async with aggregator(settings), st.processor(), Producer(st.kafka) as producer:
            events = []
            for i, request_id in enumerate(ids):
                meta = new_meta(request_id=request_id, deployment="shop", request_start_time=start + timedelta(seconds=2 * i))
                request = InferenceRequest(meta=meta, inputs=dict_to_struct(QA))
                events += [request, response_event(request, {"answer": ANSWER})]
            await producer.send(st.topics.inference, events)
            await asyncio.sleep(3)
            await wait_caught_up(settings)
        conn = await asyncpg.connect(fresh_database)
        try:
            live = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM evaluations")}
        finally:
            await conn.close()
        assert live and live < set(ids), "the window needs sampled and unsampled requests"
        before = await rollup_snapshot(fresh_database)

        write_deployments(st.deployments_dir, st.sim.url, spec(V2))  # the rubric's prompt changed
        new = version(st.deployments_dir)
        async with aggregator(settings) as api:
            refusals = [
                await api.call("POST", "/v1/deployments/shop/rejudges", 400,
                               {"evaluator": f"cites_context@{old}", "from": iso(start), "to": iso(end)}),
                await api.call("POST", "/v1/deployments/shop/rejudges", 400,
                               {"evaluator": "nope", "from": iso(start), "to": iso(end)}),
                await api.call("POST", "/v1/deployments/shop/rejudges", 400,
                               {"evaluator": "cites_context", "from": iso(end), "to": iso(start)}),
                await api.call("POST", "/v1/deployments/shop/rejudges", 400, {
                    "evaluator": "cites_context", "from": iso(start - timedelta(days=8)), "to": iso(end)}),
            ]
            assert [r["error"]["field"] for r in refusals] == ["evaluator", "evaluator", "from", "from"]
            assert "versions it has loaded" in refusals[0]["error"]["message"]
            assert "retention" in refusals[3]["error"]["message"] or "keeps records" in refusals[3]["error"]["message"]
            # Through the CLI: it prints the id, follows progress until done, then the comparison.
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "eval", "rejudge", "shop", "--from", iso(start), "--to",
                iso(end), "--evaluator", "cites_context", "--api-url", api.url, "--timeout", "120",
                cwd=REPO, env=cli_env(), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            # The events' records are stamped now, minutes after their requests' start times: the
            # re-judge reads on for records up to request_ttl_seconds past the window's end.
            async with st.processor(request_ttl_seconds=3600), Producer(st.kafka) as producer:
                later = []
                # Live traffic while the re-judge runs, each request in the sample (five random
                # ids at a rate of 0.5 all missed it once in 32 runs).
                live_ids = [i for i in (f"live-{uuid4().hex[:10]}" for _ in range(200)) if is_sampled(i, 0.5)][:5]
                for request_id in live_ids:
                    meta = new_meta(request_id=request_id, deployment="shop",
                                    request_start_time=datetime.now(UTC))
                    request = InferenceRequest(meta=meta, inputs=dict_to_struct(QA))
                    later += [request, response_event(request, {"answer": ANSWER})]
                await producer.send(st.topics.inference, later)
                out, err = await asyncio.wait_for(cli.communicate(), 150)
                stdout = out.decode()
                assert cli.returncode == 0, err.decode()
                rejudge_id = stdout.splitlines()[0]
                assert f"{rejudge_id}: done, {len(ids)} of {len(ids)} requests judged" in err.decode()
                assert f"cites_context: {old} → {new}" in stdout and "weighted kappa" in stdout
                done = await api.done(rejudge_id, len(ids))
                assert done["version"] == new
                shown = await run_cli("eval", "rejudge-show", rejudge_id, "--json", "--api-url", api.url)
                assert json.loads(shown)["comparison"] == done["comparison"]

                async def live_judged() -> bool:
                    conn = await asyncpg.connect(fresh_database)
                    try:
                        return bool(await conn.fetchval(
                            "SELECT count(*) FROM evaluations WHERE evaluator_version = $1 AND request_id LIKE 'live-%'",
                            new))
                    finally:
                        await conn.close()

                # Live outcomes may land after the re-judge's last one (both share the judge):
                # wait for them while the processor still runs, rather than race it.
                await wait_for(live_judged, 60, "live traffic judged")
                await wait_caught_up(settings)
        after = await rollup_snapshot(fresh_database)
        conn = await asyncpg.connect(fresh_database)
        try:
            rejudged = await conn.fetch("SELECT request_id, evaluator_version FROM rejudge_evaluations")
            live_new = await conn.fetchval(
                "SELECT count(*) FROM evaluations WHERE evaluator_version = $1 AND request_id LIKE 'live-%'", new)
        finally:
            await conn.close()
        await delete_topics(settings, [Topics.from_settings(settings).feedback, Topics.from_settings(settings).spans])
    assert sorted(r["request_id"] for r in rejudged) == sorted(ids)  # one each, unsampled ones too
    assert {r["evaluator_version"] for r in rejudged} == {new}
    assert live_new > 0  # live traffic was judged meanwhile
    assert done["progress"]["total"] == len(ids) and done["progress"]["judged"] == len(ids)

    def in_window(snapshot: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
        return {t: [r for r in rows if any(isinstance(v, datetime) and start <= v < end for v in r)]
                for t, rows in snapshot.items()}

    assert in_window(after) == in_window(before)
    assert any(in_window(before).values())
    [figures] = done["comparison"]["metrics"]
    assert (figures["old_version"], figures["new_version"]) == (old, new)
    assert figures["pairs"] == len(live)  # the requests judged live under the old version
