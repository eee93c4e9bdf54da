"""Golden wire fixtures: the gateway's one LLM call path (plain aiohttp, for the proxy and for flows'
llm nodes) and the official ``openai`` client speak the same bytes to an upstream, per connection
type (``openai``, ``azure_openai``, ``openai_compatible``).

For one chat call (tests/fixtures/proxy_wire/chat.request.json), JSON and streamed, a loopback
recording upstream captures what each side sends: the real gateway's proxy (a ``type: proxy``
deployment on the connection, events to real Kafka); a flow's llm node call (shared/flow/llm.py)
through the endpoint the gateway builds for the connection (shared/flow/llm_http.py); and the same
llm node call through the ``openai`` client built from the same connection, called as flows
called it before (``client.post``, openai's aiohttp transport). All must match the connection
type's golden request (method, path, query, auth header name and value shape, content type) and
send the same body JSON. The upstream answers all from the same recorded answers
(chat.answer.json, and chat.answer.sse with an Azure-style choice-less first chunk, an SSE comment
and a usage-only chunk); what each side records (answer text, model, tokens) must equal
chat.parsed.json.

Failures, flow path against the openai client on scripted answers: a 429 with ``Retry-After`` is
retried after the wait it asks for (one longer than 120 s is not retried), a 500 fails with the
same error type, status and message, an ``error`` event inside a stream likewise, and so do a
timeout and a connection lost mid-stream; a refused connection is the one difference (see the
test).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import openai
import pytest
import yaml
from aiohttp import web
from opentelemetry import trace

from shared.apikeys import new_api_key_record
from shared.deployments import Connection, create_openai_client
from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceResponse, InferenceStatus
from shared.flow import LlmCallError, llm
from shared.flow.clients import build_clients
from shared.flow.llm_http import LlmEndpoint
from shared.settings import ServiceSettings
from tests.support.gateway_stack import events_by_request, kafka_for, read_topic, running_gateway

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proxy_wire"
KINDS = ("openai", "azure_openai", "openai_compatible")
KEY_ENV = "PP_TEST_WIRE_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-wire-golden-0123456789"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when it arrived


@dataclass
class Scripted:
    """One answer the upstream gives instead of the recorded one."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before answering
    cut: bool = False  # send the body as a stream, then drop the connection before its end


@dataclass
class RecordingUpstream:
    """Records every request and answers it with the next scripted answer, else the recorded
    answer (SSE when ``stream``)."""

    url: str = ""
    requests: list[Captured] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Captured(request.method, request.path, parse_qs(request.query_string),
                                      {k.lower(): v for k, v in request.headers.items()}, body, time.monotonic()))
        if self.script:
            scripted = self.script.pop(0)
            await asyncio.sleep(scripted.delay)
            if scripted.cut:
                response = web.StreamResponse(headers={"Content-Type": scripted.content_type})
                await response.prepare(request)
                await response.write(scripted.body)
                assert request.transport is not None
                request.transport.abort()
                return response
            return web.Response(status=scripted.status, body=scripted.body, headers=scripted.headers,
                                content_type=scripted.content_type)
        if not json.loads(body).get("stream"):
            return web.Response(body=(FIXTURES / "chat.answer.json").read_bytes(), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in (FIXTURES / "chat.answer.sse").read_bytes().split(b"\n\n"):
            if event:
                await response.write(event + b"\n\n")  # one event per write, as an upstream sends them
        await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    recorder = RecordingUpstream()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", recorder.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recorder.url = f"http://{host}:{port}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def connection_spec(kind: str, upstream_url: str) -> dict[str, Any]:
    spec = {k: v.replace("{upstream}", upstream_url) for k, v in fixture(f"{kind}.json")["connection"].items()}
    return {**spec, "api_key_env": KEY_ENV}


def request_body(stream: bool, model: str) -> dict[str, Any]:
    body = {**fixture("chat.request.json"), "model": model}
    return {**body, "stream": True, "stream_options": {"include_usage": True}} if stream else body


def assert_golden(captured: Captured, kind: str, body: dict[str, Any], who: str) -> None:
    golden = fixture(f"{kind}.json")["request"]
    assert (captured.method, captured.path, captured.query) == (golden["method"], golden["path"], golden["query"]), who
    assert captured.headers.get(golden["auth_header"]) == golden["auth_value"].replace("{key}", UPSTREAM_KEY), who
    other = "api-key" if golden["auth_header"] == "authorization" else "authorization"
    assert other not in captured.headers, f"{who} sent {other} too"
    assert captured.headers["content-type"].split(";")[0] == golden["content_type"], who
    assert json.loads(captured.body) == body, who


async def proxy_call(upstream: RecordingUpstream, settings: ServiceSettings, tmp_path: Path, kind: str,
                     stream: bool) -> tuple[Captured, dict[str, Any]]:
    """What the gateway's proxy sent upstream, and what it recorded (answer, model, tokens)."""
    folder = tmp_path / "deployments"
    folder.mkdir()
    (folder / "connections.yaml").write_text(yaml.safe_dump({"connections": {"golden": connection_spec(
        kind, upstream.url)}}))
    key, record = new_api_key_record("golden-key")
    (folder / "golden.yaml").write_text(yaml.safe_dump({
        "name": "golden", "type": "proxy", "proxy": {"connection": "golden"},
        "api_keys": [record.model_dump(mode="json", exclude_none=True)]}))
    body = request_body(stream, fixture(f"{kind}.json")["model"])
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with running_gateway(folder, kafka, tmp_path / "spool") as gateway:
        assert gateway.deployments.current.failures == {}, gateway.deployments.current.failures
        async with gateway.session.post(f"{gateway.url}/v1/chat/completions", data=json.dumps(body).encode(),
                                        headers={"Authorization": f"Bearer {key}",
                                                 "Content-Type": "application/json"}) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()
            request_id = resp.headers["x-request-id"]
        await gateway.publisher.wait_delivered()
        records = await read_topic(kafka, gateway.topics.inference, 2)
    [captured] = upstream.requests
    replies = [e for e in events_by_request(records)[request_id] if isinstance(e, InferenceResponse)]
    [reply] = replies
    assert reply.status == InferenceStatus.INFERENCE_STATUS_OK, reply.error_message
    [usage] = reply.usage
    return captured, {"answer": struct_to_dict(reply.outputs)["answer"], "model": usage.model,
                      "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                      "total_tokens": usage.total_tokens}


FLOW_PATHS = ("endpoint", "openai")  # the gateway's LlmEndpoint, and the openai client flows used before


def flow_client(kind: str, upstream: RecordingUpstream, path: str, max_retries: int = 0, timeout: float = 30.0,
                url: str | None = None) -> Any:
    connection = Connection.model_validate({"name": "golden", **connection_spec(kind, url or upstream.url)})
    environ = {KEY_ENV: UPSTREAM_KEY}
    if path == "openai":
        return create_openai_client(connection, environ, max_retries=max_retries, timeout=timeout,
                                    http_client=openai.DefaultAioHttpClient())
    if path == "openai-httpx":  # the client on its default transport
        return create_openai_client(connection, environ, max_retries=max_retries, timeout=timeout)
    [client] = build_clients({"golden": connection}, ["golden"], environ=environ, max_retries=max_retries,
                             timeout=timeout).values()
    assert isinstance(client, LlmEndpoint)  # what the gateway and the processor build for llm nodes
    return client


async def flow_call(upstream: RecordingUpstream, kind: str, stream: bool, path: str = "endpoint",
                    max_retries: int = 0, **client: Any) -> tuple[Captured, dict[str, Any]]:
    """What a flow's llm node call sent upstream (the last request), and what it parsed."""
    llm_client = flow_client(kind, upstream, path, max_retries, **client)
    request = fixture("chat.request.json")
    try:
        text, call = await llm.chat_completion(
            node="answer", client=llm_client, model=fixture(f"{kind}.json")["model"],
            messages=request["messages"], params={"max_tokens": request["max_tokens"],
                                                  "temperature": request["temperature"]},
            tracer=trace.get_tracer("golden"), stream=stream)
    finally:
        await llm_client.close()
    return upstream.requests[-1], {"answer": text, "model": call.model, "prompt_tokens": call.prompt_tokens,
                                   "completion_tokens": call.completion_tokens, "total_tokens": call.total_tokens}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", KINDS)
async def test_proxy_flows_and_openai_client_send_and_parse_the_same_wire(
    kind: str, stream: bool, upstream: RecordingUpstream, settings: ServiceSettings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    body = request_body(stream, fixture(f"{kind}.json")["model"])

    by_proxy, proxy_parsed = await proxy_call(upstream, settings, tmp_path, kind, stream)
    upstream.requests.clear()
    by_flow, flow_parsed = await flow_call(upstream, kind, stream)
    by_openai, openai_parsed = await flow_call(upstream, kind, stream, "openai")
    assert len(upstream.requests) == 2

    assert_golden(by_proxy, kind, body, "the proxy")
    assert_golden(by_flow, kind, body, "the flow's llm node")
    assert_golden(by_openai, kind, body, "the openai client")
    assert proxy_parsed == flow_parsed == openai_parsed == fixture("chat.parsed.json")


RATE_LIMITED = json.dumps({"error": {"message": "Rate limit reached for gpt-4o-mini; try again in 1s.",
                                     "type": "requests", "code": "rate_limit_exceeded"}}).encode()
SERVER_ERROR = json.dumps({"error": {"message": "The server had an error while processing your request.",
                                     "type": "server_error"}}).encode()


async def failure_of(upstream: RecordingUpstream, kind: str, stream: bool, path: str, script: list[Scripted],
                     max_retries: int = 0, **client: Any) -> tuple[str, int | None, str, int]:
    """(error type, status, message, requests sent) of a flow llm call the upstream fails."""
    upstream.requests.clear()
    upstream.script = list(script)
    with pytest.raises(LlmCallError) as caught:
        await flow_call(upstream, kind, stream, path, max_retries, **client)
    error = caught.value
    assert error.node == "answer"
    return error.error_type, error.status_code, error.message, len(upstream.requests)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("path", FLOW_PATHS)
async def test_a_429_with_retry_after_is_retried_after_the_wait_it_asks_for(
    path: str, stream: bool, upstream: RecordingUpstream,
) -> None:
    # 1 s is past the first back-off wait of either client (at most 0.75 s): only Retry-After explains the gap.
    upstream.script = [Scripted(429, RATE_LIMITED, {"Retry-After": "1"})]
    _, parsed = await flow_call(upstream, "openai", stream, path, max_retries=2)
    first, second = upstream.requests
    assert parsed == fixture("chat.parsed.json")
    assert json.loads(first.body) == json.loads(second.body)
    assert second.at - first.at >= 1.0


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limits_and_server_errors_fail_the_same_way_on_both_paths(
    kind: str, upstream: RecordingUpstream,
) -> None:
    cases = {
        "429, out of retries": ([Scripted(429, RATE_LIMITED, {"Retry-After": "0"})] * 2, 1, False),
        "429 asking for more than 120 s: not retried": ([Scripted(429, RATE_LIMITED, {"Retry-After": "121"})], 2,
                                                        False),
        "500": ([Scripted(500, SERVER_ERROR)], 0, False),
        "500 to a stream": ([Scripted(500, SERVER_ERROR)], 0, True),
        "503, plain text": ([Scripted(503, b"upstream unavailable", content_type="text/plain")], 0, False),
        "400, x-should-retry true": ([Scripted(400, b"{}", {"x-should-retry": "true"})] * 2, 1, False),
    }
    for case, (script, retries, stream) in cases.items():
        found = {path: await failure_of(upstream, kind, stream, path, script, retries) for path in FLOW_PATHS}
        assert found["endpoint"] == found["openai"], case
    expected = {
        "429, out of retries": ("RateLimitError", 429, 2),
        "429 asking for more than 120 s: not retried": ("RateLimitError", 429, 1),
        "500": ("InternalServerError", 500, 1),
        "503, plain text": ("InternalServerError", 503, 1),
        "400, x-should-retry true": ("BadRequestError", 400, 2),
    }
    for case, (error_type, status, sent) in expected.items():
        script, retries, stream = cases[case]
        found_type, found_status, message, found_sent = await failure_of(upstream, kind, stream, "endpoint", script,
                                                                         retries)
        assert (found_type, found_status, found_sent) == (error_type, status, sent), case
    assert message == "Error code: 400"  # no error message in the body: only the status
    assert (await failure_of(upstream, kind, False, "endpoint", cases["500"][0]))[2] == (
        "Error code: 500 - The server had an error while processing your request.")


async def test_an_error_event_inside_a_stream_fails_the_same_way_on_both_paths(upstream: RecordingUpstream) -> None:
    events = (b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
              b'"delta":{"content":"Par"},"finish_reason":null}]}\n\n'
              b'data: {"error":{"message":"The model produced invalid content.","type":"server_error"}}\n\n')
    script = [Scripted(200, events, content_type="text/event-stream")]
    found = {path: await failure_of(upstream, "openai", True, path, script) for path in FLOW_PATHS}
    assert found["endpoint"] == found["openai"] == ("APIError", None, "The model produced invalid content.", 1)


CHUNK = (b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
         b'"delta":{"content":"Par"},"finish_reason":null}]}\n\n')


async def test_timeouts_and_lost_connections_fail_the_same_way_on_both_paths(upstream: RecordingUpstream) -> None:
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    cases = {
        "no answer within the timeout": ([Scripted(200, b"{}", delay=2.0)], False, {"timeout": 0.3}),
        "no stream within the timeout": ([Scripted(200, CHUNK, delay=2.0)], True, {"timeout": 0.3}),
        "connection dropped mid-stream": ([Scripted(200, CHUNK, content_type="text/event-stream", cut=True)], True,
                                          {}),
        "connection refused": ([], False, {"url": closed}),
    }
    expected = {
        "no answer within the timeout": ("APITimeoutError", None, "Request timed out."),
        "no stream within the timeout": ("APITimeoutError", None, "Request timed out."),
        "connection dropped mid-stream": ("APIConnectionError", None, "Connection error."),
        "connection refused": ("APIConnectionError", None, "Connection error."),
    }
    for case, (script, stream, client) in cases.items():
        found = {path: (await failure_of(upstream, "openai", stream, path, script, **client))[:3]
                 for path in (*FLOW_PATHS, "openai-httpx")}
        assert found["endpoint"] == found["openai-httpx"] == expected[case], (case, found)
        if case == "connection refused":
            # openai's vendored aiohttp transport maps every aiohttp ClientConnectionError to
            # httpx's ConnectTimeout, so flows used to record a refused connection as a timeout;
            # the endpoint names it as the client's own transport and the proxy (llm_unreachable) do.
            assert found["openai"] == ("APITimeoutError", None, "Request timed out."), found
        else:
            assert found["endpoint"] == found["openai"], (case, found)
