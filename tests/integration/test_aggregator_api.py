"""The query API on a real aggregator (Kafka, Postgres, HTTP on loopback): figures checked
against plain SQL over the raw rows, pagination, traces, monitors, alerts, runs, keys, SSE."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from services.aggregator.api.wiring import LISTENER_APPLICATION_NAME
from services.aggregator.app import MONITORS, create_app
from shared.events.builders import new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Feedback
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import (
    AVERAGE,
    SCRIPT,
    monitor_settings,
    script_messages,
    step,
    write_deployments,
)
from tests.support.aggregator import (
    CONSUMED,
    EventFactory,
    Message,
    create_topics,
    produce,
    wait_caught_up,
    wait_for,
)
from tests.support.prometheus_text import assert_promtool_clean, value

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
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    now = datetime.now(UTC)
    base = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    factory = EventFactory(seed=23, judged_share=0.4)
    messages = [m for i in range(240) for m in factory.request(now - timedelta(seconds=2.5 * i + 1), feedback=i % 9 == 0)]
    messages += [m for i in range(12) for m in factory.request(now - timedelta(seconds=i + 1), run_id="run-1",
                                                               judged=True)]
    messages += script_messages(base, SCRIPT)
    await produce(settings, messages)
    app = create_app(settings)  # the real wiring: ingest, monitors and the query API
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await wait_caught_up(settings)
        yield Stack(f"http://127.0.0.1:{port}", fresh_database, app, settings, base, http)
    finally:
        await http.close()
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])


async def test_keys_sessions_and_admin_only_changes(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": f"Basic {READ_KEY}"}):
        async with stack.get("/v1/deployments", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"]["type"] == "unauthorized"
    assert (await stack.json("/v1/deployments"))["deployments"]
    assert (await stack.json("/v1/deployments", headers=ADMIN))["deployments"]  # admin may read too
    body = json.dumps({"monitors": [AVERAGE]})
    async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=READ, data=body) as response:
        assert response.status == 403 and (await response.json())["error"]["type"] == "forbidden"
    async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", headers=ADMIN, data=body) as response:
        assert response.status == 200
    # A browser: the read key once for an HttpOnly cookie, then cookie only (EventSource cannot send headers).
    async with stack.http.post(stack.url + "/v1/session", json={"key": "not-the-key"}) as response:
        assert response.status == 401
    async with stack.http.post(stack.url + "/v1/session", json={"key": READ_KEY}) as response:
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and READ_KEY not in cookie
    assert (await stack.json("/v1/deployments", headers={}))["deployments"]
    async with stack.http.put(stack.url + "/v1/deployments/demo/monitors", data=body) as response:
        assert response.status == 403  # a cookie never changes monitors (no cross-site writes)
    token = stack.http.cookie_jar.filter_cookies(URL(stack.url))["pp_session"].value
    expires, session_id, signature = token.split(".")
    # Sent as a header: a cookie jar would not send a cookie to an IP address, proving nothing.
    for cookie, status in ((token, 200), (f"{expires}9.{session_id}.{signature}", 401),
                           (f"{expires}.{session_id[::-1]}.{signature}", 401)):
        async with aiohttp.ClientSession() as other, other.get(
            stack.url + "/v1/deployments", headers={"Cookie": f"pp_session={cookie}"},
        ) as response:
            assert response.status == status, cookie
    async with stack.http.delete(stack.url + "/v1/session") as response:
        assert response.status == 204
    async with stack.get("/v1/deployments", headers={}) as response:
        assert response.status == 401
    for path in ("/healthz", "/metrics", "/openapi.json"):  # open, and holding no deployment data
        async with stack.get(path, headers={}) as response:
            assert response.status == 200, path
    async with stack.get("/metrics", headers={}) as response:
        text = await response.text()
    assert "promptpulse_aggregator_ingest_records_total" in text
    assert value(text, "promptpulse_aggregator_api_responses_total", route="/v1/deployments", status=401) == 6
    assert_promtool_clean(text)


async def test_a_session_ended_on_one_replica_is_refused_on_every_replica(stack: Stack) -> None:
    # Issue 15, finding 6: a copied pp_session cookie used to work for its whole lifetime after
    # DELETE /v1/session. Two aggregator replicas on one database: a session ended on either is
    # refused by both, and ending one session leaves the others alone.
    settings = stack.settings.model_copy(deep=True)
    settings.aggregator.api.sse_heartbeat_seconds = 0.5  # how often an open stream checks its session
    second = web.AppRunner(create_app(settings))
    await second.setup()
    site = web.TCPSite(second, "127.0.0.1", 0)
    await site.start()
    replicas = (stack.url, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")

    async def session() -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(stack.url + "/v1/session", json={"key": READ_KEY}) as response:
                assert response.status == 200
            return browser.cookie_jar.filter_cookies(URL(stack.url))["pp_session"].value

    async def status(url: str, token: str, method: str = "GET", path: str = "/v1/deployments") -> int:
        # The cookie as a header: a copied cookie, sent whatever the client's cookie policy.
        async with stack.http.request(method, url + path, headers={"Cookie": f"pp_session={token}"}) as response:
            return response.status

    try:
        ended_on_first, ended_on_second, kept = await session(), await session(), await session()
        for token in (ended_on_first, ended_on_second, kept):
            assert [await status(url, token) for url in replicas] == [200, 200]
        assert await status(replicas[0], ended_on_first, "DELETE", "/v1/session") == 204
        assert await status(replicas[1], ended_on_second, "DELETE", "/v1/session") == 204
        for token in (ended_on_first, ended_on_second):
            assert [await status(url, token) for url in replicas] == [401, 401]
        assert [await status(url, kept) for url in replicas] == [200, 200]
        # A live stream open on one replica ends when its session is ended on the other.
        streamed = await session()
        async with stack.http.get(replicas[1] + "/v1/stream/metrics?deployment=demo",
                                  headers={"Cookie": f"pp_session={streamed}"}) as stream:
            assert stream.status == 200
            assert (await stream.content.readline()).startswith(b"retry:")
            assert await status(replicas[0], streamed, "DELETE", "/v1/session") == 204
            await asyncio.wait_for(stream.read(), 10)  # to the end of the stream: it was closed
        assert await status(replicas[1], streamed, "GET", "/v1/stream/metrics?deployment=demo") == 401
        # Ending it again, or with no session at all, is harmless.
        assert await status(replicas[1], ended_on_first, "DELETE", "/v1/session") == 204
        async with stack.http.delete(replicas[1] + "/v1/session") as response:
            assert response.status == 204
    finally:
        await second.cleanup()


async def test_a_stream_whose_session_check_fails_ends_cleanly(stack: Stack, caplog) -> None:
    # A database error while a live stream re-checks its session used to escape the handler
    # (a traceback, and a stream cut off mid-chunk): now one warning, and the stream ends.
    settings = stack.settings.model_copy(deep=True)
    settings.aggregator.api.sse_heartbeat_seconds = 0.5  # how often an open stream checks its session
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(url + "/v1/session", json={"key": READ_KEY}) as response:
                assert response.status == 200
            async with browser.get(url + "/v1/stream/metrics?deployment=demo") as stream:
                assert stream.status == 200
                assert (await stream.content.readline()).startswith(b"retry:")
                caplog.set_level(logging.WARNING)
                # The re-check's query now fails in the database (undefined table).
                await stack.sql("ALTER TABLE revoked_sessions RENAME TO revoked_sessions_away")
                try:
                    await asyncio.wait_for(stream.read(), 10)  # to the end: no ClientPayloadError
                finally:
                    await stack.sql("ALTER TABLE revoked_sessions_away RENAME TO revoked_sessions")
    finally:
        await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith(("services.aggregator.api", "aiohttp"))]
    assert errors == []
    ended = [r.getMessage() for r in caplog.records if r.name == "services.aggregator.api.stream_route"]
    assert len(ended) == 1 and "UndefinedTableError" in ended[0]


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


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict]]:
    name, data = None, []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name is not None:
            yield name, json.loads("".join(data))
            name, data = None, []


async def test_a_live_subscriber_sees_new_data_after_it_is_committed(stack: Stack) -> None:
    async with stack.http.post(stack.url + "/v1/session", headers=READ) as response:
        assert response.status == 200
    async with stack.http.get(stack.url + "/v1/stream/metrics?deployment=demo",
                              timeout=aiohttp.ClientTimeout(total=90, sock_read=60)) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        events = _events(response)
        name, snapshot = await anext(events)
        assert name == "snapshot" and snapshot["deployment"] == "demo"
        assert snapshot["overview"]["requests"] > 0
        # New traffic in a minute the snapshot already holds: the pushed minute must grow.
        moment = datetime.now(UTC).replace(microsecond=0)
        minute = moment.replace(second=0).isoformat()
        before = next((p["requests"] for p in snapshot["minutes"] if p["start"] == minute), 0)
        factory = EventFactory(seed=99, deployment="demo")
        await produce(stack.settings, [m for i in range(5) for m in factory.request(moment - timedelta(milliseconds=i))])
        seen = None

        async def pushed() -> bool:
            nonlocal seen
            name, event = await asyncio.wait_for(anext(events), 60)
            if name == "metrics":
                seen = next((p["requests"] for p in event["minutes"] if p["start"] == minute), None)
            return seen is not None and seen >= before + 5

        await wait_for(pushed, 90, "the stream to push the new requests")
        assert seen >= before + 5
        # The listening connection dies (a Postgres restart, a failover): notifications sent
        # meanwhile are lost, so the subscriber gets a fresh snapshot once it is back.
        killed = await stack.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND application_name = $1",
                                 LISTENER_APPLICATION_NAME)
        assert len(killed) == 1
        name, resync = await asyncio.wait_for(anext(events), 60)
        while name != "snapshot":
            name, resync = await asyncio.wait_for(anext(events), 60)
        assert resync["overview"]["requests"] >= snapshot["overview"]["requests"] + 5
    hub_metrics = await stack.http.get(stack.url + "/metrics")
    assert value(await hub_metrics.text(), "promptpulse_aggregator_stream_listener_connected") == 1
