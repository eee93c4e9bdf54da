"""Golden wire fixtures: the proxy's aiohttp path and the official ``openai`` client speak the same
bytes to an upstream, per connection type (``openai``, ``azure_openai``, ``openai_compatible``).

For one chat call (tests/fixtures/proxy_wire/chat.request.json), JSON and streamed, a loopback
recording upstream captures what each side sends: the real gateway's proxy (a ``type: proxy``
deployment on the connection, called with plain aiohttp, events to real Kafka) and the flow
runtime's LLM call (shared/flow/llm.py: ``client.post`` of the openai client built from the same
connection, as flows call it). Both must match the connection type's golden request (method,
path, query, auth header name and value shape, content type) and send the same body JSON. The
upstream answers both from the same recorded answers (chat.answer.json, and chat.answer.sse with
an Azure-style choice-less first chunk, an SSE comment and a usage-only chunk); what each side
records (answer text, model, tokens) must equal chat.parsed.json.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml
from aiohttp import web
from opentelemetry import trace

from shared.apikeys import new_api_key_record
from shared.deployments import Connection
from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceResponse, InferenceStatus
from shared.flow import llm
from shared.flow.clients import build_clients, close_clients
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


@dataclass
class RecordingUpstream:
    """Records every request and answers it with the recorded answer (SSE when ``stream``)."""

    url: str = ""
    requests: list[Captured] = field(default_factory=list)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Captured(request.method, request.path, parse_qs(request.query_string),
                                      {k.lower(): v for k, v in request.headers.items()}, body))
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


async def openai_call(upstream: RecordingUpstream, kind: str, stream: bool) -> tuple[Captured, dict[str, Any]]:
    """What the flows' LLM call (the openai client's ``client.post``) sent upstream, and parsed."""
    connection = Connection.model_validate({"name": "golden", **connection_spec(kind, upstream.url)})
    clients = build_clients({"golden": connection}, ["golden"], environ={KEY_ENV: UPSTREAM_KEY}, max_retries=0)
    request = fixture("chat.request.json")
    try:
        text, call = await llm.chat_completion(
            node="answer", client=clients["golden"], model=fixture(f"{kind}.json")["model"],
            messages=request["messages"], params={"max_tokens": request["max_tokens"],
                                                  "temperature": request["temperature"]},
            tracer=trace.get_tracer("golden"), stream=stream)
    finally:
        await close_clients(clients)
    [captured] = upstream.requests
    return captured, {"answer": text, "model": call.model, "prompt_tokens": call.prompt_tokens,
                      "completion_tokens": call.completion_tokens, "total_tokens": call.total_tokens}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", KINDS)
async def test_proxy_and_openai_client_send_and_parse_the_same_wire(
    kind: str, stream: bool, upstream: RecordingUpstream, settings: ServiceSettings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    body = request_body(stream, fixture(f"{kind}.json")["model"])

    by_proxy, proxy_parsed = await proxy_call(upstream, settings, tmp_path, kind, stream)
    upstream.requests.clear()
    by_openai, openai_parsed = await openai_call(upstream, kind, stream)

    assert_golden(by_proxy, kind, body, "the proxy")
    assert_golden(by_openai, kind, body, "the openai client")
    assert proxy_parsed == openai_parsed == fixture("chat.parsed.json")
