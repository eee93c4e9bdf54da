"""No bad input crashes anything, part two: the inputs a generator rarely reaches (issue 7, part 3;
the schemathesis sweep of the OpenAPI documents is test_api_sweep.py).

One live stack for the module (tests/support/api_stack.py: llmsim, aggregator, processor and
gateway as real processes on their own topics and database). Bodies over the limit (413),
100,000 levels of ``[`` (a 400 well within a client timeout, never a RecursionError), numbers too
large for any field, invalid UTF-8, a body sent under another content type, times at the edges,
and the proxy's own bodies: each refused with a 4xx whose JSON error names the problem. After
each case every service process still runs and answers /healthz.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from services.aggregator.api.auth import SESSION_BODY_BYTES
from services.aggregator.api.body import MAX_BODY_BYTES
from services.aggregator.api.params import encode_cursor
from services.gateway.settings import GatewaySection
from tests.support import api_stack
from tests.support.api_stack import CLIENT_TIMEOUT, PROXY_BODY_LIMIT, assert_all_healthy
from tests.support.live_stack import LiveStack

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

# The module's own live stack (tests/support/api_stack.py).
proxy_key = pytest.fixture(scope="module")(api_stack.proxy_key)
stack = pytest_asyncio.fixture(scope="module", loop_scope="module")(api_stack.stack)


@dataclass
class Answer:
    status: int
    body: Any
    content_type: str

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self.body
        assert self.body["error"]["message"].strip(), self.body
        return self.body["error"]


async def send(url: str, data: bytes | Any, headers: dict[str, str], method: str = "POST") -> Answer:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http, http.request(
        method, url, data=data, headers=headers,
    ) as resp:
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        return Answer(resp.status, body, resp.content_type)


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    limit: int  # bytes of body accepted
    method: str = "POST"


def targets(stack: LiveStack) -> list[Target]:
    """Every route that reads a body, with a valid key."""
    gateway = {"api-key": stack.demo_key, "Content-Type": "application/json"}
    admin = {"Authorization": f"Bearer {stack.admin_key}", "Content-Type": "application/json"}
    gateway_limit = GatewaySection().max_body_bytes
    return [
        Target("score", stack.score_url, gateway, gateway_limit),
        Target("feedback", f"{stack.gateway.url}/v1/deployments/demo/feedback", gateway, gateway_limit),
        Target("monitors", f"{stack.aggregator.url}/v1/deployments/demo/monitors", admin, MAX_BODY_BYTES, "PUT"),
        Target("session", f"{stack.aggregator.url}/v1/session", {"Content-Type": "application/json"},
               SESSION_BODY_BYTES),
    ]


@pytest.mark.timeout(120)
async def test_bodies_over_the_limit_are_413_naming_the_limit(stack: LiveStack) -> None:
    big = json.dumps({"question": "x" * (2 << 20), "request_id": str(uuid.uuid4()), "monitors": []}).encode()
    for target in targets(stack):
        answer = await send(target.url, big, target.headers, target.method)
        assert answer.status == 413, (target.name, answer)
        assert answer.error["type"] == "body_too_large" and "bytes" in answer.error["message"], (target.name, answer)

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"question": "'
            for _ in range(64):
                yield b"y" * 65536
            yield b'"}'

        answer = await send(target.url, chunked(), target.headers, target.method)
        assert answer.status == 413, (target.name, "chunked", answer)
        assert answer.error["type"] == "body_too_large", (target.name, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_deeply_nested_json_is_a_400_not_a_recursion_error(stack: LiveStack) -> None:
    # 1,000 levels exhaust Python's recursion limit; 100,000 fit the score and monitors limits.
    for depth in (3_000, 100_000):
        for body in (b"[" * depth, b'{"a":' * (depth // 2), b"[" * depth + b"]" * depth):
            for target in targets(stack):
                answer = await send(target.url, body, target.headers, target.method)
                if len(body) > target.limit:  # the session route takes 4 KiB at most
                    assert answer.status == 413, (target.name, depth, answer)
                    continue
                assert answer.status == 400, (target.name, depth, answer)
                assert "nested too deeply" in answer.error["message"], (target.name, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_numbers_too_large_for_any_field_are_400_naming_the_field(stack: LiveStack) -> None:
    gateway, feedback, monitors, _ = targets(stack)
    huge = "9" * 5000  # more digits than Python's int parser takes
    cases = [
        (gateway, f'{{"question": {huge}}}', None, "not valid JSON"),
        (gateway, '{"question": 1e400}', "question", "question"),  # parses as infinity
        (gateway, '{"question": 123456789012345678901234567890}', "question", "question"),
        (feedback, f'{{"request_id": "{uuid.uuid4()}", "rating": 1e400}}', "rating", "rating"),
        (feedback, f'{{"request_id": "{uuid.uuid4()}", "rating": 123456789012345678901234567890}}', "rating", "rating"),
        (monitors, f'{{"monitors": [{{"id": "m", "statistic": "error_rate", "threshold": {huge}, "window": "5m"}}]}}',
         "monitors", "not valid JSON"),
        (monitors, '{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 1e400, "window": "5m"}]}',
         "monitors[0].threshold", "finite"),
        (monitors, '{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": 1e30}]}',
         "monitors[0].window", "window"),
    ]
    for target, raw, field_name, mentioned in cases:
        answer = await send(target.url, raw.encode(), target.headers, target.method)
        assert answer.status == 400, (target.name, raw[:120], answer)
        assert answer.error.get("field") == field_name, (target.name, raw[:120], answer)
        assert mentioned in answer.error["message"], (target.name, raw[:120], answer)
    # Numbers in inputs the flow does not declare are ignored, however large.
    answer = await send(gateway.url, b'{"question": "q", "unused": 1e400}', gateway.headers)
    assert answer.status == 200, answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_a_monitor_min_samples_beyond_what_a_window_row_holds_is_refused(stack: LiveStack) -> None:
    # monitor_windows.min_samples is a Postgres integer: a monitor accepted with more would make
    # every later evaluation pass fail (DataError), stopping all monitors, not just this one.
    monitors = targets(stack)[2]
    for min_samples in (2**31, 123456789012345678901234567890):
        raw = json.dumps({"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": "5m",
                                        "min_samples": min_samples}]})
        answer = await send(monitors.url, raw.encode(), monitors.headers, monitors.method)
        assert answer.status == 400, (min_samples, answer)
        assert answer.error["field"] == "monitors[0].min_samples", answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_invalid_utf8_is_a_400_saying_so(stack: LiveStack) -> None:
    for raw in (b'{"question": "\xff\xfe"}', b"\xc3\x28", b'{"key": "\xed\xa0\x80"}'):  # bad byte, bad pair, surrogate
        for target in targets(stack):
            answer = await send(target.url, raw, target.headers, target.method)
            assert answer.status == 400, (target.name, raw, answer)
            assert "not valid JSON" in answer.error["message"] and "utf-8" in answer.error["message"].lower(), (
                target.name, raw, answer)
    # A lone surrogate escape is valid JSON syntax, but no character: no event, json or text
    # column can hold it (it used to be a 500 in feedback comments and monitor webhooks).
    request_id = str(uuid.uuid4())
    for target, raw in zip(targets(stack), (
        b'{"question": "\\ud800"}',
        b'{"request_id": "' + request_id.encode() + b'", "comment": "ok \\udfff"}',
        b'{"monitors": [{"id": "m", "statistic": "error_rate", "threshold": 0.5, "window": "5m",'
        b' "notification": {"webhook_url": "http://x/\\ud800"}}]}',
        b'{"key": "\\ud800\\ud800"}',
    ), strict=True):
        answer = await send(target.url, raw, target.headers, target.method)
        assert answer.status == 400, (target.name, raw, answer)
        assert "surrogate" in answer.error["message"], (target.name, answer)
    # In a path or a query: refused as a bad name, in the same JSON shape.
    read = {"Authorization": f"Bearer {stack.read_key}"}
    for url, headers, status in (
        (f"{stack.gateway.url}/v1/deployments/%FF%FE/score", {"api-key": stack.demo_key}, 404),
        (f"{stack.aggregator.url}/v1/deployments/%FF/metrics", read, 400),
        (f"{stack.aggregator.url}/v1/alerts?deployment=%ED%A0%80", read, 400),
    ):
        method = "POST" if url.startswith(stack.gateway.url) else "GET"
        answer = await send(url, b"{}", headers, method)
        assert answer.status == status, (url, answer)
        assert answer.error["type"], answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_a_body_sent_under_another_content_type(stack: LiveStack) -> None:
    # Bodies are read as JSON whatever their declared type; when one is not JSON, the error
    # names the declared type as the likely mistake (a form post, a plain-text body).
    for target in targets(stack):
        for content_type, raw in (("application/x-www-form-urlencoded", b"question=What+is+sampled%3F"),
                                  ("text/plain", b"What is sampled?"), ("multipart/form-data; boundary=x", b"--x--")):
            headers = {**target.headers, "Content-Type": content_type}
            answer = await send(target.url, raw, headers, target.method)
            assert answer.status == 400, (target.name, content_type, answer)
            assert answer.content_type == "application/json"
            assert f"sent as {content_type.split(';')[0]}" in answer.error["message"], (target.name, answer)
    gateway = targets(stack)[0]
    answer = await send(gateway.url, b'{"question": "What is sampled?"}', {**gateway.headers, "Content-Type": "text/plain"})
    assert answer.status == 200, answer
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_times_at_the_edges_are_400_naming_the_parameter(stack: LiveStack) -> None:
    # Valid RFC 3339 texts whose UTC time falls outside what a datetime holds (they used to be
    # an OverflowError, a 500), and the same times inside a page cursor (an asyncpg DataError).
    read = {"Authorization": f"Bearer {stack.read_key}"}
    base = f"{stack.aggregator.url}/v1/deployments/demo"
    edges = ("9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999+00:00",
             "0001-01-01T00:00:00Z", "99999999999")
    routes = ((f"{base}/metrics", {}), (f"{base}/requests", {}), (f"{base}/violations", {}),
              (f"{base}/compare", {"baseline": "a", "candidate": "b"}))
    for edge in edges:
        for route, extra in routes:
            for name in ("from", "to"):
                url = str(URL(route).with_query({**extra, name: edge}))
                answer = await send(url, b"", read, "GET")
                assert answer.status == 400, (url, answer)
                assert answer.error["field"] == name and name in answer.error["message"], (url, answer)
    for cursor_time in (*edges, "9999-12-31T23:59:59", "2030-01-01T00:00:00"):  # the last two without a zone
        cursor = encode_cursor([cursor_time, str(uuid.uuid4())])
        answer = await send(f"{base}/requests?cursor={cursor}", b"", read, "GET")
        assert answer.status == 400, (cursor_time, answer)
        assert answer.error["field"] == "cursor", (cursor_time, answer)
    # The other parts of a cursor: a request id Postgres cannot hold, an alert id beyond bigint.
    for url in (f"{base}/requests?cursor={encode_cursor(['2030-01-01T00:00:00+00:00', 'a' + chr(0)])}",
                f"{stack.aggregator.url}/v1/alerts?cursor={encode_cursor([2**63])}",
                f"{stack.aggregator.url}/v1/alerts?cursor={encode_cursor([-2**70])}"):
        answer = await send(url, b"", read, "GET")
        assert answer.status == 400, (url, answer)
        assert answer.error["field"] == "cursor", (url, answer)
    await assert_all_healthy(stack)


@pytest.mark.timeout(120)
async def test_proxy_bodies_a_route_cannot_take_are_4xx_naming_the_problem(
    stack: LiveStack, proxy_key: tuple[str, dict[str, Any]],
) -> None:
    # The proxy reads bodies itself (its own limit, no flow inputs): the same rules as the score routes.
    headers = {"Authorization": f"Bearer {proxy_key[0]}", "Content-Type": "application/json"}
    for url in (f"{stack.gateway.url}/v1/chat/completions",
                f"{stack.gateway.url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"):
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * PROXY_BODY_LIMIT}]}).encode()
        answer = await send(url, big, headers)
        assert answer.status == 413, (url, answer)
        assert answer.error["type"] == "body_too_large" and "proxy.max_body_bytes" in answer.error["message"], answer

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"model": "m", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 65536
            yield b'"}]}'

        answer = await send(url, chunked(), headers)
        assert answer.status == 413 and answer.error["type"] == "body_too_large", (url, answer)
        cases = [(b"[" * 100_000, "nested too deeply"), (b'{"a":' * 50_000, "nested too deeply"),
                 (b'{"model": "\xff\xfe"}', "utf-8"),
                 (b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
                 (b'["model", "m"]', "JSON object"), (b"", "empty")]
        if "/deployments/" not in url:  # an Azure deployment route names the model in its path
            cases.append((b'{"messages": []}', "model"))
        for raw, mentioned in cases:
            answer = await send(url, raw, headers)
            assert 400 <= answer.status < 500, (url, raw[:60], answer)
            assert mentioned in answer.error["message"], (url, raw[:60], answer)
        for content_type, raw in (("application/x-www-form-urlencoded", b"model=m&messages=hi"),
                                  ("text/plain", b"What is sampled?")):
            answer = await send(url, raw, {**headers, "Content-Type": content_type})
            assert answer.status == 400, (url, content_type, answer)
            assert f"sent as {content_type}" in answer.error["message"], (url, answer)
    await assert_all_healthy(stack)
