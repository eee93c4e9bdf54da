"""Keys, sessions and the live stream (SSE) on the query API of a real aggregator (Kafka, Postgres,
HTTP on loopback; test_aggregator_api.py's stack): the read and admin keys, sessions by cookie, a
session ended on one replica refused on every replica, a live stream whose session check fails,
and one that pushes new data once committed."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import aiohttp
from yarl import URL

from services.aggregator.api.wiring import LISTENER_APPLICATION_NAME
from tests.integration.test_aggregator_api import ADMIN, AVERAGE, READ, READ_KEY, Stack
from tests.integration.test_aggregator_api import stack as stack_fixture
from tests.support.aggregator import EventFactory, produce, serving_aggregator, sse_events, wait_for
from tests.support.prometheus_text import assert_promtool_clean, value

stack = stack_fixture  # the API tests' aggregator, under the name its tests ask for


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

    async def session() -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(stack.url + "/v1/session", json={"key": READ_KEY}) as response:
                assert response.status == 200
            return browser.cookie_jar.filter_cookies(URL(stack.url))["pp_session"].value

    async def status(url: str, token: str, method: str = "GET", path: str = "/v1/deployments") -> int:
        # The cookie as a header: a copied cookie, sent whatever the client's cookie policy.
        async with stack.http.request(method, url + path, headers={"Cookie": f"pp_session={token}"}) as response:
            return response.status

    async with serving_aggregator(settings) as (_, second):
        replicas = (stack.url, second)
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


async def test_a_stream_whose_session_check_fails_ends_cleanly(stack: Stack, caplog) -> None:
    # A database error while a live stream re-checks its session used to escape the handler
    # (a traceback, and a stream cut off mid-chunk): now one warning, and the stream ends.
    settings = stack.settings.model_copy(deep=True)
    settings.aggregator.api.sse_heartbeat_seconds = 0.5  # how often an open stream checks its session
    async with serving_aggregator(settings) as (_, url):
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
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith(("services.aggregator.api", "aiohttp"))]
    assert errors == []
    ended = [r.getMessage() for r in caplog.records if r.name == "services.aggregator.api.stream_route"]
    assert len(ended) == 1 and "UndefinedTableError" in ended[0]


async def test_a_live_subscriber_sees_new_data_after_it_is_committed(stack: Stack) -> None:
    async with stack.http.post(stack.url + "/v1/session", headers=READ) as response:
        assert response.status == 200
    async with stack.http.get(stack.url + "/v1/stream/metrics?deployment=demo",
                              timeout=aiohttp.ClientTimeout(total=90, sock_read=60)) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
        events = sse_events(response)
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
