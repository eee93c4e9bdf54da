"""The query API on a real aggregator (Kafka, Postgres, HTTP on loopback): figures checked
against plain SQL over the raw rows, pagination, traces, monitors, alerts, runs (keys, sessions
and the live stream: test_aggregator_api_sessions.py, on this module's stack)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from services.aggregator.app import MONITORS
from shared.events.builders import new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Feedback
from tests.integration.test_aggregator_monitors import (
    AVERAGE,
    SCRIPT,
    monitor_settings,
    script_messages,
    step,
    write_deployments,
)
from tests.support.aggregator import (
    EventFactory,
    Message,
    produce,
    serving_aggregator,
    topics_with_alerts,
    wait_caught_up,
)

READ_KEY, ADMIN_KEY = "read-" + uuid4().hex, "admin-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OTHER = {"id": "other-errors", "statistic": "error_rate", "threshold": 0.5, "window": "5m"}


@dataclass
class Stack:
    url: str
    dsn: str
    app: web.Application
    settings: object
    base: datetime  # minute of the scripted scores
    http: aiohttp.ClientSession

    def get(self, path: str, headers=READ, **kwargs):
        return self.http.get(self.url + path, headers=headers, **kwargs)

    async def json(self, path: str, status: int = 200, headers=READ) -> dict:
        async with self.get(path, headers=headers) as response:
            body = await response.json()
            assert response.status == status, body
            return body

    async def sql(self, query: str, *args):
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


@pytest.fixture
async def stack(fresh_database, tmp_path) -> AsyncIterator[Stack]:
    folder = write_deployments(tmp_path / "deployments", [AVERAGE])
    write_deployments(folder, [OTHER], name="other")
    settings = monitor_settings(fresh_database, folder, read_key=READ_KEY, admin_key=ADMIN_KEY, enabled=False)
    now = datetime.now(UTC)
    base = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    factory = EventFactory(seed=23, judged_share=0.4)
    messages = [m for i in range(240) for m in factory.request(now - timedelta(seconds=2.5 * i + 1), feedback=i % 9 == 0)]
    messages += [m for i in range(12) for m in factory.request(now - timedelta(seconds=i + 1), run_id="run-1",
                                                               judged=True)]
    messages += script_messages(base, SCRIPT)
    async with topics_with_alerts(settings):
        await produce(settings, messages)
        async with serving_aggregator(settings) as (app, url), \
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await wait_caught_up(settings)
            yield Stack(url, fresh_database, app, settings, base, http)


async def test_metrics_agree_with_plain_sql_over_the_raw_rows(stack: Stack) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=40)).replace(second=0, microsecond=0)
    end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    body = await stack.json(f"/v1/deployments/demo/metrics?from={start.isoformat().replace('+00:00', 'Z')}"
                            f"&to={int(end.timestamp())}&step=5m")
    where = "deployment = 'demo' AND run_id = '' AND request_start_time >= $1 AND request_start_time < $2"
    [ops] = await stack.sql(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE status = 'error') AS errors, sum(total_tokens) AS tokens, "
        f"sum(prompt_tokens) AS prompt FROM inference_responses WHERE {where}", start, end)
    quality = {r["metric"]: r for r in await stack.sql(
        f"SELECT metric, count(score) AS n, avg(score)::float8 AS average, "
        f"(count(*) FILTER (WHERE score >= 3))::float8 / nullif(count(score), 0) AS pass_rate "
        f"FROM evaluations WHERE {where} GROUP BY metric", start, end)}
    overview = body["overview"]
    assert overview["requests"] == overview["responses"] == ops["n"] == 240
    assert overview["errors"] == ops["errors"] and overview["error_rate"] == ops["errors"] / ops["n"]
    assert overview["tokens"]["total"] == ops["tokens"] and overview["tokens"]["prompt"] == ops["prompt"]
    assert set(overview["by_model"]) == {"gpt-4o", "gpt-4o-mini"}
    for metric, row in quality.items():
        figures = overview["quality"][metric]
        assert figures["samples"] == row["n"]
        assert figures["average"] == pytest.approx(row["average"]) and figures["pass_rate"] == pytest.approx(row["pass_rate"])
    relevance = overview["quality"]["relevance"]
    assert relevance["violations"] == {"windows": 0, "violations": 0, "violation_rate": None}
    assert relevance["average_interval"][0] <= relevance["average"] <= relevance["average_interval"][1]
    # Feedback names no variant (the gateway's feedback route cannot know it): it counts for the
    # variant of its request in the same deployment, so no phantom variant "" appears beside a and b.
    assert set(body["by_variant"]) == {"a", "b"}
    assert sum(v["requests"] for v in body["by_variant"].values()) == 240
    feedback = {r["variant"]: r for r in await stack.sql(
        "SELECT q.variant, count(*) AS n, count(f.rating) AS rated, avg(f.rating)::float8 AS average "
        "FROM feedback f JOIN inference_requests q ON q.request_id = f.request_id AND q.deployment = f.deployment "
        "WHERE q.deployment = 'demo' AND q.run_id = '' AND q.request_start_time >= $1 AND q.request_start_time < $2 "
        "GROUP BY 1", start, end)}
    assert sum(r["n"] for r in feedback.values()) == overview["feedback"]["count"] == 27  # every 9th of 240
    for variant, row in feedback.items():
        figures = body["by_variant"][variant]["feedback"]
        assert figures["count"] == row["n"] and figures["rated"] == row["rated"]
        assert figures["average_rating"] == pytest.approx(row["average"])
    assert len(body["series"]) == 9 and body["step_seconds"] == 300
    assert sum(p["requests"] for p in body["series"]) == 240
    assert sum(p["feedback"]["count"] for p in body["series"]) == 27
    assert sum(p["tokens"]["total"] for p in body["series"]) == ops["tokens"]
    assert all(set(p["by_variant"]) == {"a", "b"} for p in body["series"])
    latencies = [r["latency_ms"] for r in await stack.sql(
        f"SELECT latency_ms FROM inference_responses WHERE {where} ORDER BY 1", start, end)]
    exact = latencies[int(0.95 * (len(latencies) - 1))]
    assert abs(overview["latency_ms"]["p95"] - exact) / exact <= 0.01
    deployments = {d["name"]: d for d in (await stack.json("/v1/deployments"))["deployments"]}
    assert {v["id"] for v in deployments["demo"]["variants"]} == {"a", "b"}
    assert deployments["demo"]["configured"] and deployments["demo"]["monitors"] == 1
    assert deployments["other"]["first_seen"] is None  # configured, never seen
    assert (await stack.json("/v1/deployments/nope/metrics", 404))["error"]["field"] == "deployment"


async def test_sampled_requests_page_through_every_row_once(stack: Stack) -> None:
    expected = [r["request_id"] for r in await stack.sql(
        "SELECT request_id FROM inference_requests WHERE deployment = 'demo' AND run_id = '' AND sampled "
        "ORDER BY request_start_time DESC, request_id DESC")]
    assert 60 < len(expected) < 180  # the file's 50% sampling rate
    seen, cursor, pages = [], None, 0
    while True:
        body = await stack.json("/v1/deployments/demo/requests?sampled=true&limit=7"
                                + (f"&cursor={cursor}" if cursor else ""))
        pages += 1
        seen += [r["request_id"] for r in body["requests"]]
        for row in body["requests"]:
            assert row["sampled"] and row["inputs"] == {"question": "q?"} and len(row["trace_id"]) == 32
            assert row["response"] is not None
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected and pages == -(-len(expected) // 7)
    judged = [r for r in await stack.sql(
        "SELECT request_id, metric, score, reason FROM evaluations WHERE deployment = 'demo' AND run_id = '' "
        "AND outcome = 'scored' AND request_id = ANY($1::text[])", expected)]
    assert judged
    body = await stack.json(f"/v1/deployments/demo/requests?limit=500&from={int((datetime.now(UTC) - timedelta(hours=2)).timestamp())}")
    by_id = {r["request_id"]: r for r in body["requests"]}
    for verdict in judged:
        [entry] = [e for e in by_id[verdict["request_id"]]["evaluations"] if e["metric"] == verdict["metric"]]
        assert entry["score"] == verdict["score"] and entry["reason"] == verdict["reason"]
    everything = await stack.json("/v1/deployments/demo/requests?sampled=false&limit=500")
    assert len(everything["requests"]) == 240 and everything["next_cursor"] is None
    assert any(r["inputs"] is None and not r["sampled"] for r in everything["requests"])
    with_feedback = [r for r in everything["requests"] if r["feedback"]]
    assert len(with_feedback) == 27 and with_feedback[0]["feedback"][0]["rating"] in (1, 5)


async def test_a_trace_reads_back_as_a_tree(stack: Stack) -> None:
    [row] = await stack.sql("SELECT trace_id, request_id FROM inference_requests WHERE run_id = '' LIMIT 1")
    body = await stack.json(f"/v1/traces/{row['trace_id']}")
    assert body["span_count"] == 5 and body["request_ids"] == [row["request_id"]]
    [root] = body["roots"]
    assert root["name"] == "invoke_workflow demo" and root["orphan"] is False and root["kind"] == "server"
    assert [c["name"] for c in root["children"]] == [f"chat node{i}" for i in range(1, 5)]
    assert root["children"][0]["attributes"]["gen_ai.usage.input_tokens"] == 11
    assert (await stack.json(f"/v1/traces/{'0' * 32}", 404))["error"]["field"] == "trace_id"


async def test_one_request_by_id_with_its_scores_in_any_deployment(stack: Stack) -> None:
    [judged] = await stack.sql(
        "SELECT q.request_id, q.trace_id, q.variant, count(e.metric) AS metrics FROM inference_requests q "
        "JOIN evaluations e USING (request_id, request_start_time) WHERE q.run_id = '' AND q.sampled "
        "GROUP BY 1, 2, 3 ORDER BY 1 LIMIT 1")
    body = await stack.json(f"/v1/requests/{judged['request_id']}")
    assert body["request_id"] == judged["request_id"] and body["deployment"] == "demo"
    assert body["trace_id"] == judged["trace_id"] and body["variant"] == judged["variant"]
    assert body["inputs"] == {"question": "q?"} and body["response"]["status"] in ("ok", "error")
    assert len(body["evaluations"]) == judged["metrics"] > 0
    listed = await stack.json("/v1/deployments/demo/requests?sampled=true&limit=500")
    [same] = [r for r in listed["requests"] if r["request_id"] == judged["request_id"]]
    assert same == body, "the same row as the deployment's request list gives"

    [plain] = await stack.sql("SELECT request_id FROM inference_requests WHERE NOT sampled LIMIT 1")
    unsampled = await stack.json(f"/v1/requests/{plain['request_id']}")
    assert unsampled["sampled"] is False and unsampled["inputs"] is None and unsampled["response"] is not None

    missing = (await stack.json(f"/v1/requests/{uuid4()}", 404))["error"]
    assert missing["field"] == "request_id" and "retention" in missing["message"]
    await stack.json("/v1/requests/" + "a" * 201, 400)
    await stack.json(f"/v1/requests/{judged['request_id']}", 401, headers={})


async def test_feedback_counts_only_for_the_deployment_its_event_names(stack: Stack) -> None:
    # A key for deployment "other" sends feedback naming a request of "demo" (issue 15, finding 1):
    # it must show neither on that request nor in either deployment's figures. Both feedback
    # events are stored before their request is, as the feedback topic may run ahead.
    start = (datetime.now(UTC) - timedelta(minutes=55)).replace(second=7)  # a minute nothing else uses
    messages = EventFactory(seed=31, variants=("b",)).request(start)
    request_id = messages[0].key.decode()

    def feedback(deployment: str, rating: int, comment: str) -> Message:
        meta = new_meta(request_id=request_id, deployment=deployment, request_start_time=None)
        event = Feedback(meta=meta, rating=rating, comment=comment)
        return Message("feedback", event_key(event), encode(event).value, encode(event).headers)

    await produce(stack.settings, [feedback("other", 1, "from another deployment's key"), feedback("demo", 5, "own")])
    await wait_caught_up(stack.settings)
    assert len(await stack.sql("SELECT 1 FROM feedback WHERE request_id = $1", request_id)) == 2
    await produce(stack.settings, messages)
    await wait_caught_up(stack.settings)

    shown = (await stack.json(f"/v1/requests/{request_id}"))["feedback"]
    assert [(f["rating"], f["comment"]) for f in shown] == [(5, "own")]
    since = (start - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    listed = await stack.json(f"/v1/deployments/demo/requests?sampled=false&from={since}&limit=500")
    [row] = [r for r in listed["requests"] if r["request_id"] == request_id]
    assert row["feedback"] == shown

    minute = start.replace(second=0)
    window = f"from={int(minute.timestamp())}&to={int(minute.timestamp()) + 60}"
    demo = await stack.json(f"/v1/deployments/demo/metrics?{window}")
    assert demo["overview"]["requests"] == 1
    assert demo["overview"]["feedback"] == {"count": 1, "rated": 1, "average_rating": 5.0, "comments": 1}
    assert set(demo["by_variant"]) == {"b"} and demo["by_variant"]["b"]["feedback"]["count"] == 1
    other = await stack.json(f"/v1/deployments/other/metrics?{window}")
    assert other["overview"]["feedback"]["count"] == 0 and other["by_variant"] == {}
    compared = await stack.json(f"/v1/deployments/demo/compare?baseline=a&candidate=b&{window}")
    assert compared["figures"]["b"]["feedback"]["count"] == 1


async def test_two_variants_compared_with_the_difference_and_its_interval(stack: Stack) -> None:
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    body = await stack.json(f"/v1/deployments/demo/compare?baseline=a&candidate=b&from={int(start.timestamp())}")
    assert (body["baseline"], body["candidate"], body["level"]) == ("a", "b", 0.95)
    rows = await stack.sql(
        "SELECT variant, metric, count(*) AS n, avg(score)::float8 AS average, "
        "avg((score >= 3)::int)::float8 AS pass_rate FROM evaluations "
        "WHERE deployment = 'demo' AND run_id = '' AND outcome = 'scored' AND request_start_time >= $1 "
        "GROUP BY 1, 2", start)
    exact = {(r["variant"], r["metric"]): r for r in rows}
    assert {m for (_, m) in exact} == set(body["quality"])
    for metric, figures in body["quality"].items():
        a, b = exact.get(("a", metric)), exact.get(("b", metric))
        for side, row in (("baseline", a), ("candidate", b)):
            assert figures[side]["samples"] == (row["n"] if row else 0), (metric, side)
            if row:
                assert figures[side]["average"] == pytest.approx(row["average"])
                assert figures[side]["pass_rate"] == pytest.approx(row["pass_rate"])
        if a and b and a["n"] >= 2 and b["n"] >= 2:
            difference = figures["average_difference"]
            assert difference["value"] == pytest.approx(b["average"] - a["average"])
            low, high = difference["interval"]
            assert low <= difference["value"] <= high
            assert figures["verdict"] == ("better" if low > 0 else "worse" if high < 0 else "no clear difference")
    # Variant a also holds the scripted relevance scores of the monitor fixtures.
    assert body["quality"]["relevance"]["baseline"]["samples"] > body["quality"]["relevance"]["candidate"]["samples"]
    assert set(body["figures"]) == {"a", "b"} and body["figures"]["a"]["requests"] > 0

    assert (await stack.json("/v1/deployments/demo/compare?baseline=a", 400))["error"]["field"] == "candidate"
    assert (await stack.json("/v1/deployments/demo/compare?baseline=a&candidate=a", 400))["error"]["field"] == "candidate"
    await stack.json("/v1/deployments/nope/compare?baseline=a&candidate=b", 404)


BAD_PARAMETERS = [
    ("/v1/deployments/demo/metrics?from=yesterday", "from"),
    ("/v1/deployments/demo/metrics?to=2030-01-01T00:00:00", "to"),
    ("/v1/deployments/demo/metrics?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", "from"),
    ("/v1/deployments/demo/metrics?step=7s", "step"),
    ("/v1/deployments/demo/metrics?step=soon", "step"),
    ("/v1/deployments/demo/metrics?from=2020-01-01T00:00:00Z&to=2021-01-01T00:00:00Z&step=1m", "step"),
    ("/v1/deployments/demo/metrics?variant=not%20a%20variant", "variant"),
    ("/v1/deployments/demo/metrics?pass_score=6", "pass_score"),
    ("/v1/deployments/demo/metrics?colour=red", "colour"),
    ("/v1/deployments/demo/requests?limit=0", "limit"),
    ("/v1/deployments/demo/requests?limit=100000", "limit"),
    ("/v1/deployments/demo/requests?sampled=perhaps", "sampled"),
    ("/v1/deployments/demo/requests?cursor=bm9wZQ", "cursor"),
    ("/v1/deployments/demo/requests?limit=5&limit=6", "limit"),
    ("/v1/deployments/demo/requests?run_id=%20", "run_id"),
    ("/v1/deployments/Bad%20Name/requests", "deployment"),
    ("/v1/traces/not-a-trace", "trace_id"),
    ("/v1/alerts?state=open", "state"),
    ("/v1/alerts?cursor=%%%", "cursor"),
    ("/v1/alerts?monitor=bad%20id", "monitor"),
    ("/v1/stream/metrics", "deployment"),
    ("/v1/stream/metrics?deployment=", "deployment"),
    ("/v1/deployments?x=1", "x"),
]


async def test_every_bad_parameter_is_a_400_naming_it(stack: Stack) -> None:
    for path, field in BAD_PARAMETERS:
        error = (await stack.json(path, 400))["error"]
        assert error["field"] == field and error["type"] == "invalid_parameter", (path, error)
        assert field in error["message"], path
    # The positive twins: the same routes with good values answer 200.
    for path in ("/v1/deployments/demo/metrics?step=5m&pass_score=4&variant=a", "/v1/alerts?state=firing",
                 "/v1/deployments/demo/requests?limit=5&sampled=false&run_id=run-1"):
        await stack.json(path, 200)


async def test_monitors_set_through_the_api_win_over_the_file(stack: Stack) -> None:
    shown = await stack.json("/v1/deployments/demo/monitors")
    assert shown["source"] == "file" and [m["id"] for m in shown["monitors"]] == ["rel-avg"]
    assert shown["monitors"][0]["window"] == "1m" and shown["monitors"][0]["state"] == "ok"
    wanted = {"monitors": [{**AVERAGE, "threshold": 4.5, "notification": {"webhook_url": "https://hooks.example/T/x"}},
                           {"id": "errs", "statistic": "error_rate", "threshold": 0.2, "window": "5m"}]}
    async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=ADMIN, json=wanted) as response:
        assert response.status == 200
        put = await response.json()
    assert put["source"] == "api" and [m["threshold"] for m in put["monitors"]] == [4.5, 0.2]
    assert put["monitors"][0]["notification"]["webhook_url"] == "**********"
    # A restart re-reads the files: the API's set stays.
    await stack.app[MONITORS].sync_files()
    again = await stack.json("/v1/deployments/demo/monitors")
    assert again["source"] == "api" and len(again["monitors"]) == 2
    [stored] = await stack.sql("SELECT definition FROM monitors WHERE monitor_id = 'rel-avg'")
    assert json.loads(stored["definition"])["notification"]["webhook_url"] == "https://hooks.example/T/x"
    bad_cases = [
        ({"monitors": [{**AVERAGE, "threshold": 9}]}, "monitors[0].threshold"),
        ({"monitors": [{**AVERAGE, "variant": "zzz"}]}, "monitors[0].variant"),
        ({"monitors": [{**AVERAGE, "id": "other-errors"}]}, "monitors[0].id"),  # the other deployment's
        ({"monitor": []}, "monitors"),
    ]
    for body, field in bad_cases:
        async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=ADMIN, json=body) as response:
            error = (await response.json())["error"]
            assert response.status == 400 and error["field"] == field, error
    async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=ADMIN, data="{") as response:
        assert response.status == 400
    async with stack.http.put(stack.url + "/v1/deployments/nope/monitors", headers=ADMIN, json={"monitors": []}) as r:
        assert r.status == 404
    assert len((await stack.json("/v1/deployments/demo/monitors"))["monitors"]) == 2  # failures changed nothing


async def test_alerts_are_listed_and_paged(stack: Stack) -> None:
    service = stack.app[MONITORS]
    await service.open()  # monitors are disabled here (no loop): the test drives the passes
    for minute in (1, 2, 3):
        await service.once(step(stack.base, minute))
    body = await stack.json("/v1/alerts?deployment=demo")
    assert [a["state"] for a in body["alerts"]] == ["resolved", "firing"] and body["firing"] == []
    firing = body["alerts"][1]
    assert firing["monitor_id"] == "rel-avg" and firing["value"] == 1.5 and firing["published"] is True
    assert firing["confidence_interval"][0] < 1.5 < firing["confidence_interval"][1]
    first = await stack.json("/v1/alerts?limit=1")
    assert len(first["alerts"]) == 1 and first["next_cursor"]
    second = await stack.json(f"/v1/alerts?limit=1&cursor={first['next_cursor']}")
    assert second["alerts"][0]["id"] == firing["id"] and second["next_cursor"] is None
    assert [a["state"] for a in (await stack.json("/v1/alerts?state=firing"))["alerts"]] == ["firing"]
    monitors = await stack.json("/v1/deployments/demo/monitors")
    [watched] = monitors["monitors"]
    assert watched["state"] == "resolved" and watched["last_window"]["value"] == 4.0
    start = stack.base.isoformat().replace("+00:00", "Z")
    end = (stack.base + timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    metrics = await stack.json(f"/v1/deployments/demo/metrics?from={start}&to={end}&variant=a")
    assert metrics["overview"]["quality"]["relevance"]["violations"] == {
        "windows": 3, "violations": 1, "violation_rate": 1 / 3}


async def test_batch_run_progress(stack: Stack) -> None:
    body = await stack.json("/v1/runs/run-1")
    [entry] = body["deployments"]
    assert entry["deployment"] == "demo"
    assert entry["progress"] == {"requests": 12, "responses": 12, "judged": 12, "evaluations": 48}
    assert entry["overview"]["requests"] == 12
    assert sum(v["requests"] for v in entry["by_variant"].values()) == 12
    assert (await stack.json("/v1/runs/run-404", 404))["error"]["field"] == "run_id"
