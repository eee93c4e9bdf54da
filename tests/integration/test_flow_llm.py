"""The fixture flows against llmsim over real HTTP on 127.0.0.1, through the official openai client.

Usage is checked against the bytes llmsim actually sent: a transport that copies each response
body as the client reads it (without buffering, so streams still stream).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.llmsim.app import create_app
from services.llmsim.keys import STATE
from services.llmsim.settings import LatencyModel, LlmsimSection
from services.llmsim.state import SimulatorState
from shared.deployments import Connection
from shared.flow import FlowExecutor, LlmCallError, load_flow
from shared.flow.clients import build_clients, close_clients
from tests.support.flow_fakes import CHAT_FLOW, STANDARD_FLOW

pytestmark = pytest.mark.integration

INSTANT = LatencyModel(ttft_ms=0, tokens_per_second=1_000_000, jitter=0)
CONTEXT = "Sampling is a hash of the request id.\nThe default rate is 10 percent.\n"


@dataclass
class Sim:
    base_url: str
    app: web.Application

    @property
    def state(self) -> SimulatorState:
        return self.app[STATE]


@asynccontextmanager
async def llmsim(**overrides: Any) -> AsyncIterator[Sim]:
    overrides.setdefault("latency", INSTANT)
    app = create_app(LlmsimSection(port=0, seed=11, **overrides))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Sim(f"http://{host}:{port}", app)
    finally:
        await runner.cleanup()


class _Tee(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, sink: bytearray) -> None:
        self.inner = inner
        self.sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class RecordingTransport(httpx2.AsyncBaseTransport):
    """Real HTTP; keeps a copy of every request body and of every response body as it is read."""

    inner: httpx2.AsyncHTTPTransport = field(default_factory=httpx2.AsyncHTTPTransport)
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[bytearray] = field(default_factory=list)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(json.loads(await request.aread()))
        response = await self.inner.handle_async_request(request)
        sink = bytearray()
        self.responses.append(sink)
        return httpx2.Response(
            response.status_code, headers=response.headers, stream=_Tee(response.stream, sink),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def usage(self, index: int) -> dict[str, int]:
        """The usage llmsim sent in response ``index`` (a JSON body or the stream's usage chunk)."""
        body = bytes(self.responses[index]).decode()
        if body.lstrip().startswith("{"):
            return json.loads(body)["usage"]
        events = [line[6:] for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
        usages = [json.loads(e)["usage"] for e in events if json.loads(e).get("usage")]
        assert len(usages) == 1, body
        return usages[0]


def recording_client(sim: Sim) -> tuple[openai.AsyncOpenAI, RecordingTransport]:
    transport = RecordingTransport()
    client = openai.AsyncOpenAI(
        base_url=f"{sim.base_url}/v1", api_key="no-key", max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    return client, transport


def assert_usage_matches(call: Any, sent: dict[str, int]) -> None:
    assert call.usage_reported
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
        sent["prompt_tokens"], sent["completion_tokens"], sent["total_tokens"])
    assert call.completion_tokens > 0


@pytest.mark.parametrize("variant", ["variant_0", "variant_1"])
async def test_standard_flow_usage_equals_what_llmsim_returned(variant: str) -> None:
    async with llmsim() as sim:
        client, transport = recording_client(sim)
        executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client})
        result = await executor.run({"question": "How are requests sampled?", "context": CONTEXT}, variant=variant)
        await client.close()
    assert isinstance(result.outputs["answer"], str) and result.outputs["answer"]
    assert result.outputs["refusal"] is None
    [call] = result.llm_calls
    assert_usage_matches(call, transport.usage(0))
    sent = transport.requests[0]
    assert sent["model"] == "gpt-3.5-turbo"
    assert sent["max_tokens"] == (256 if variant == "variant_0" else 64)
    assert "[1] Sampling is a hash of the request id." in sent["messages"][1]["content"]


async def test_streamed_chat_flow_usage_equals_the_usage_chunk() -> None:
    history = [{"inputs": {"question": "What is PromptPulse?"}, "outputs": {"answer": "A quality monitor."}}]
    async with llmsim() as sim:
        client, transport = recording_client(sim)
        executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
        async with executor.stream({"question": "How does it sample?", "chat_history": history}) as stream:
            deltas = [delta async for delta in stream]
            result = await stream.result()
        await client.close()
    assert len(deltas) > 1 and "".join(deltas) == result.outputs["answer"]
    [call] = result.llm_calls
    assert call.streamed and call.finish_reason in ("stop", "length")
    assert_usage_matches(call, transport.usage(0))
    sent = transport.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][2]["content"] == "A quality monitor."


async def test_first_delta_arrives_while_llmsim_is_still_streaming() -> None:
    slow = LatencyModel(ttft_ms=0, tokens_per_second=40, jitter=0)  # about a second of streaming
    async with llmsim(latency=slow, answer_tokens=40) as sim:
        [client] = build_clients(
            {"sim": Connection(name="sim", type="openai_compatible", base_url=f"{sim.base_url}/v1", api_key="none")},
            ["sim"], max_retries=0,
        ).values()
        executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
        async with executor.stream({"question": "Tell me about sampling."}) as stream:
            await anext(stream)
            assert sim.state.streams_in_flight == 1  # llmsim has not written its last token yet
            rest = [d async for d in stream]
            result = await stream.result()
        await client.close()
    assert rest and result.llm_calls[0].usage_reported and result.llm_calls[0].completion_tokens > 1


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_closing_the_stream_ends_the_http_stream_at_llmsim(transport: str) -> None:
    crawl = LatencyModel(ttft_ms=0, tokens_per_second=20, jitter=0)  # ~3 s for the whole answer
    async with llmsim(latency=crawl, answer_tokens=60) as sim:
        connection = Connection(name="sim", type="openai_compatible", base_url=f"{sim.base_url}/v1", api_key="none")
        clients = build_clients({"sim": connection}, ["sim"], transport=transport, max_retries=0)
        executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": clients["sim"]})
        stream = executor.stream({"question": "Tell me everything."})
        await anext(stream)
        assert sim.state.streams_in_flight == 1
        await stream.aclose()
        assert stream.cancelled
        # llmsim notices the closed connection at its next write; wait for it (bounded, not timed).
        for _ in range(200):
            if sim.state.streams_in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert sim.state.streams_in_flight == 0
        assert sim.state.counters["streams_abandoned_by_client"] == 1
        await close_clients(clients)


async def test_llm_failure_names_the_error_type() -> None:
    async with llmsim() as sim:
        client, _ = recording_client(sim)
        executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
        with pytest.raises(LlmCallError) as caught:
            await executor.run({"question": "q"}, llm_headers={"x-llmsim-fault": "429"})
        with pytest.raises(LlmCallError) as streamed:
            async with executor.stream({"question": "q"}, llm_headers={"x-llmsim-fault": "500"}) as stream:
                async for _ in stream:
                    pass
        await client.close()
    assert (caught.value.node, caught.value.error_type, caught.value.status_code) == ("chat", "RateLimitError", 429)
    assert (streamed.value.error_type, streamed.value.status_code) == ("InternalServerError", 500)


async def test_azure_connection_uses_the_deployment_name() -> None:
    async with llmsim() as sim:
        connection = Connection(name="az", type="azure_openai", azure_endpoint=sim.base_url,
                                api_version="2024-10-21", api_key_env="PP_TEST_AZURE_KEY")
        clients = build_clients({"az": connection}, ["az"], environ={"PP_TEST_AZURE_KEY": "test-key"}, max_retries=0)
        executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": clients["az"]})
        result = await executor.run({"question": "q"})
        await close_clients(clients)
    [call] = result.llm_calls
    assert call.request_model == "gpt-35-turbo" and call.usage_reported


async def test_spans_carry_usage_and_never_the_key() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    secret = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    async with llmsim() as sim:
        connection = Connection(name="sim", type="openai", base_url=f"{sim.base_url}/v1", api_key_env="PP_TEST_KEY")
        clients = build_clients({"sim": connection}, ["sim"], environ={"PP_TEST_KEY": secret}, max_retries=0)
        executor = FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": clients["sim"]},
                                tracer_provider=provider)
        async with executor.stream({"context": CONTEXT}) as stream:
            async for _ in stream:
                pass
            result = await stream.result()
        await close_clients(clients)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat = spans["chat gpt-3.5-turbo"]
    assert chat.attributes["gen_ai.usage.input_tokens"] == result.llm_calls[0].prompt_tokens
    assert chat.attributes["gen_ai.usage.output_tokens"] == result.llm_calls[0].completion_tokens
    assert chat.attributes["server.address"] == "127.0.0.1"
    dumped = "".join(s.to_json() for s in exporter.get_finished_spans())
    assert secret not in dumped
