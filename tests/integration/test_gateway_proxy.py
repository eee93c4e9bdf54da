"""The OpenAI-compatible proxy end to end: the official ``openai`` SDK (AsyncOpenAI and
AsyncAzureOpenAI), unchanged but for base URL and key, against the gateway on loopback, in front of
llmsim behind a recording tap, with real Kafka.

Every assertion reads real state: what the SDK got, what llmsim was sent (the tap), the events on
the topics, the spans.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from services.llmsim.settings import FaultRates, LatencyModel
from shared.apikeys import new_api_key_record
from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceRequest, InferenceResponse, InferenceStatus
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    Gateway,
    Keys,
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration

AZURE_KEY_ENV = "PP_TEST_PROXY_AZURE_KEY"
AZURE_UPSTREAM_KEY = "upstream-azure-key-0123"
API_VERSION = "2024-10-21"
QUESTION = "How are requests sampled?"
CONTEXT = "Sampling is a hash of the request id. It is 10 percent."


@dataclass
class Stack:
    gateway: Gateway
    keys: Keys
    tap: LlmTap

    def client(self, deployment: str = "proxy", **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.gateway.url}/v1", api_key=self.keys[deployment], max_retries=0,
                                  **options)

    def azure(self, deployment: str = "proxy", **options: Any) -> openai.AsyncAzureOpenAI:
        return openai.AsyncAzureOpenAI(azure_endpoint=self.gateway.url, api_key=self.keys[deployment],
                                       api_version=API_VERSION, max_retries=0, **options)

    async def events(self, request_id: str, count: int = 2) -> list[Any]:
        await self.gateway.publisher.wait_delivered()
        records = await read_topic(self.gateway.settings.kafka, self.gateway.topics.inference, count)
        return events_by_request(records)[request_id]

    async def tokens(self, request_id: str) -> list[Any]:
        records = await read_topic(self.gateway.settings.kafka, self.gateway.topics.tokens, 1)
        return events_by_request(records)[request_id]


def write_proxies(folder: Path, tap_url: str, keys: Keys) -> None:
    connections = yaml.safe_load((folder / "connections.yaml").read_text())
    connections["connections"]["azure-sim"] = {"type": "azure_openai", "azure_endpoint": tap_url,
                                               "api_version": API_VERSION, "api_key_env": AZURE_KEY_ENV}
    (folder / "connections.yaml").write_text(yaml.safe_dump(connections))
    specs: dict[str, dict[str, Any]] = {
        "proxy": {"proxy": {"connection": "llmsim"}, "allow_forced_variant": True,
                  "variants": [{"id": "base", "weight": 1}, {"id": "large", "weight": 0, "model": "llmsim-large"}],
                  "evaluation": {"metrics": ["relevance", "groundedness"], "sampling_rate": 1.0,
                                 "judge": {"connection": "llmsim", "model": "llmsim-judge"}}},
        "proxy-azure": {"proxy": {"connection": "azure-sim"}},
        "proxy-routed": {"proxy": {"connection": "llmsim", "context": "body.metadata.context"},
                         "variants": [{"id": "mini", "weight": 0}, {"id": "routed", "weight": 1, "model": "llmsim-routed"}]},
        "proxy-small": {"proxy": {"connection": "llmsim", "max_body_bytes": 2048}},
        "proxy-redacted": {"proxy": {"connection": "llmsim", "recorded_text_max_chars": 100},
                           "redaction": {"inputs": ["question"], "outputs": ["answer"]}},
    }
    for name, spec in specs.items():
        key, record = new_api_key_record(f"{name}-key")
        keys.plain[name] = key
        body = {"name": name, "type": "proxy", **spec, "api_keys": [record.model_dump(mode="json", exclude_none=True)]}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


@pytest.fixture
def latency() -> LatencyModel | None:
    return None  # llmsim's instant default


@pytest.fixture
def llmsim_options() -> dict[str, Any]:
    return {}  # LlmsimSection fields a test changes


@pytest.fixture
def gateway_options() -> dict[str, Any]:
    return {}  # GatewaySection fields a test changes


@pytest.fixture
async def stack(settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                latency: LatencyModel | None, gateway_options: dict[str, Any],
                llmsim_options: dict[str, Any]) -> AsyncIterator[Stack]:
    monkeypatch.setenv(AZURE_KEY_ENV, AZURE_UPSTREAM_KEY)
    options = {**llmsim_options, **({"latency": latency} if latency is not None else {})}
    async with llmsim_server(**options) as sim, LlmTap(sim.url) as tap:
        folder = tmp_path / "deployments"
        keys = write_deployments(folder, tap.url)
        write_proxies(folder, tap.url, keys)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(folder, kafka, tmp_path / "spool", **gateway_options) as gateway:
            assert gateway.deployments.current.failures == {}, gateway.deployments.current.failures
            yield Stack(gateway, keys, tap)


def request_id_of(raw: Any) -> str:
    """The gateway's x-request-id of a raw response (or of a stream: the openai instrumentation the
    flow runtime installs wraps streams, hiding the raw response's ``headers`` but not ``response``)."""
    headers = getattr(raw, "headers", None)
    return (headers if headers is not None else raw.response.headers)["x-request-id"]


async def test_responses_json_is_passed_through_and_recorded(stack: Stack) -> None:
    async with stack.client() as client:
        raw = await client.responses.with_raw_response.create(model="llmsim-chat", input=QUESTION,
                                                               instructions=CONTEXT, temperature=0.2)
    response = raw.parse()
    assert response.output_text and response.status == "completed"
    [exchange] = stack.tap.exchanges
    assert exchange.path == "/v1/responses"
    assert exchange.body == {"model": "llmsim-chat", "input": QUESTION, "instructions": CONTEXT, "temperature": 0.2}
    assert "authorization" not in exchange.headers  # api_key: none: no key is sent upstream
    assert stack.keys["proxy"] not in json.dumps(exchange.headers)  # the client's key stays with the gateway

    request, reply = await stack.events(request_id_of(raw))
    assert isinstance(request, InferenceRequest) and isinstance(reply, InferenceResponse)
    inputs = struct_to_dict(request.inputs)
    assert (inputs["api"], inputs["model"], inputs["question"], inputs["context"]) == (
        "responses", "llmsim-chat", QUESTION, CONTEXT)
    assert inputs["request"] == exchange.body
    assert request.meta.deployment == "proxy" and request.meta.variant == "base" and not request.streaming
    assert reply.status == InferenceStatus.INFERENCE_STATUS_OK
    assert struct_to_dict(reply.outputs) == {"answer": response.output_text}
    [usage] = reply.usage
    assert response.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.node) == (
        response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens, "responses")
    spans = {s.name: s for s in stack.gateway.spans.get_finished_spans()}
    llm = spans["responses llmsim-chat"]
    assert llm.attributes["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert exchange.headers["traceparent"].split("-")[1] == f"{llm.context.trace_id:032x}"
    assert reply.meta.traceparent.split("-")[1] == f"{llm.context.trace_id:032x}"


async def test_responses_stream_relays_typed_events_and_records_tokens(stack: Stack) -> None:
    async with stack.client() as client:
        raw = await client.responses.with_raw_response.create(
            model="llmsim-chat", input=[{"role": "developer", "content": CONTEXT},
                                        {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}],
            stream=True)
        kinds: list[str] = []
        deltas: list[str] = []
        final = None
        async for event in raw.parse():
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final is not None and final.output_text == "".join(deltas) and len(deltas) > 1
    request, reply = await stack.events(request_id_of(raw))
    inputs = struct_to_dict(request.inputs)
    assert (inputs["question"], inputs["context"]) == (QUESTION, CONTEXT) and request.streaming
    assert struct_to_dict(reply.outputs) == {"answer": final.output_text}
    assert reply.usage[0].completion_tokens == final.usage.output_tokens > 0
    assert reply.HasField("time_to_first_token_ms")
    chunks = await stack.tokens(request_id_of(raw))
    assert "".join(c.text for c in chunks) == final.output_text


async def test_chat_json_and_stream_with_usage_the_client_did_not_ask_for(stack: Stack) -> None:
    messages = [{"role": "system", "content": CONTEXT}, {"role": "user", "content": QUESTION}]
    async with stack.client() as client:
        whole = await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=messages)
        streamed = await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=messages,
                                                                          stream=True)
        chunks = [chunk async for chunk in streamed.parse()]
    answer = whole.parse().choices[0].message.content
    assert answer
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and all(c.choices for c in chunks)  # the usage-only chunk the proxy asked for is not relayed
    first, second = stack.tap.exchanges
    assert "stream_options" not in first.body
    assert second.body["stream_options"] == {"include_usage": True}  # asked upstream by the proxy
    _, reply = await stack.events(request_id_of(whole))
    assert struct_to_dict(reply.outputs) == {"answer": answer}
    request, reply = await stack.events(request_id_of(streamed))
    assert struct_to_dict(request.inputs)["context"] == CONTEXT
    assert struct_to_dict(reply.outputs) == {"answer": text}
    sent = second.usage()
    assert (reply.usage[0].prompt_tokens, reply.usage[0].completion_tokens) == (
        sent["prompt_tokens"], sent["completion_tokens"])


async def test_azure_client_through_azure_routes_to_an_azure_upstream(stack: Stack) -> None:
    async with stack.azure("proxy-azure") as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-prod", messages=[{"role": "user", "content": QUESTION}])
        response = await client.responses.create(model="gpt-4o-prod", input=QUESTION)
    assert raw.parse().choices[0].message.content and response.output_text
    chat, responses = stack.tap.exchanges
    assert chat.path == f"/openai/deployments/gpt-4o-prod/chat/completions?api-version={API_VERSION}"
    assert responses.path == f"/openai/responses?api-version={API_VERSION}"
    for exchange in (chat, responses):
        assert exchange.headers["api-key"] == AZURE_UPSTREAM_KEY  # the connection's key, never the client's
        assert "authorization" not in exchange.headers
    request, _ = await stack.events(request_id_of(raw))
    assert request.meta.deployment == "proxy-azure" and struct_to_dict(request.inputs)["model"] == "gpt-4o-prod"


async def test_azure_client_to_an_openai_upstream_names_the_model_in_the_body(stack: Stack) -> None:
    async with stack.azure() as client:
        await client.chat.completions.create(model="llmsim-chat", messages=[{"role": "user", "content": QUESTION}])
        await client.embeddings.create(model="llmsim-embed", input="one text")
    chat, embeddings = stack.tap.exchanges
    assert (chat.path, chat.body["model"]) == ("/v1/chat/completions", "llmsim-chat")
    assert (embeddings.path, embeddings.body["model"]) == ("/v1/embeddings", "llmsim-embed")


async def test_completions_and_embeddings_are_counted_and_embeddings_not_judged(stack: Stack) -> None:
    async with stack.client() as client:
        completion = await client.completions.with_raw_response.create(model="llmsim-text", prompt=QUESTION)
        embedding = await client.embeddings.with_raw_response.create(model="llmsim-embed", input=["a", "b c"])
    text = completion.parse().choices[0].text
    vectors = embedding.parse()
    assert text and len(vectors.data) == 2
    request, reply = await stack.events(request_id_of(completion), 4)
    assert struct_to_dict(request.inputs)["question"] == QUESTION
    assert struct_to_dict(reply.outputs) == {"answer": text}
    assert reply.usage[0].node == "text_completion" and reply.usage[0].completion_tokens > 0
    request, reply = await stack.events(request_id_of(embedding), 4)
    inputs = struct_to_dict(request.inputs)
    assert "question" not in inputs and "context" not in inputs  # nothing for a judge to read
    assert struct_to_dict(reply.outputs) == {"embeddings": 2}
    assert reply.usage[0].prompt_tokens == vectors.usage.prompt_tokens > 0


async def test_a_tool_call_answer_records_the_calls_and_no_answer(stack: Stack) -> None:
    tools = [{"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}}]
    async with stack.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat", messages=[{"role": "user", "content": QUESTION}], tools=tools, tool_choice="required")
        streamed = await client.responses.with_raw_response.create(
            model="llmsim-chat", input=QUESTION, stream=True, tool_choice="required",
            tools=[{"type": "function", "name": "search_docs", "parameters": {"type": "object"}}])
        kinds = [event.type async for event in streamed.parse()]
    [call] = raw.parse().choices[0].message.tool_calls
    assert call.function.name == "search_docs"
    assert stack.tap.exchanges[0].body["tools"] == tools  # passed through untouched
    _, reply = await stack.events(request_id_of(raw), 4)
    assert struct_to_dict(reply.outputs) == {"tool_calls": [{"name": "search_docs",
                                                             "arguments": call.function.arguments}]}
    assert "response.function_call_arguments.done" in kinds
    _, reply = await stack.events(request_id_of(streamed), 4)
    assert struct_to_dict(reply.outputs)["tool_calls"][0]["name"] == "search_docs"
    assert "answer" not in struct_to_dict(reply.outputs)


async def test_variants_route_to_other_models(stack: Stack) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    async with stack.client() as client:
        forced = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat", messages=messages, extra_headers={"x-promptpulse-variant": "large"})
    async with stack.client("proxy-routed") as client:
        weighted = await client.responses.with_raw_response.create(
            model="llmsim-chat", input=QUESTION, metadata={"context": CONTEXT})
    assert forced.parse().model == "llmsim-large"  # llmsim answers as the model it was asked for
    assert (forced.headers["x-promptpulse-variant"], weighted.headers["x-promptpulse-variant"]) == ("large", "routed")
    first, second = stack.tap.exchanges
    assert first.body["model"] == "llmsim-large" and first.body["messages"] == messages
    assert second.body == {"model": "llmsim-routed", "input": QUESTION, "metadata": {"context": CONTEXT}}
    request, _ = await stack.events(request_id_of(forced), 4)
    assert request.meta.variant == "large" and struct_to_dict(request.inputs)["model"] == "llmsim-large"
    request, _ = await stack.events(request_id_of(weighted), 4)
    assert request.meta.variant == "routed"
    async with stack.gateway.session.post(  # end users rate a proxied answer like a flow's
            f"{stack.gateway.url}/v1/deployments/proxy-routed/feedback", json={
                "request_id": request_id_of(weighted), "rating": 1},
            headers={"api-key": stack.keys["proxy-routed"]}) as resp:
        assert resp.status == 202, await resp.text()
    assert struct_to_dict(request.inputs)["context"] == CONTEXT  # proxy.context: body.metadata.context


@pytest.mark.parametrize(("fault", "error", "kind"), [
    ("429", openai.RateLimitError, "llm_rate_limited"),
    ("500", openai.InternalServerError, "llm_server_error"),
])
async def test_upstream_errors_reach_the_client_with_status_and_body(
        stack: Stack, fault: str, error: type[openai.APIStatusError], kind: str) -> None:
    async with stack.client() as client:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(model=f"llmsim-chat fault={fault}",
                                                 messages=[{"role": "user", "content": QUESTION}])
    exc = caught.value
    [exchange] = stack.tap.exchanges
    assert exc.status_code == exchange.status == int(fault)
    assert exc.body == json.loads(bytes(exchange.answer))["error"]  # the upstream's body, untouched
    if fault == "429":
        assert exc.response.headers["retry-after"]
    _, reply = await stack.events(exc.response.headers["x-request-id"])
    assert reply.status == InferenceStatus.INFERENCE_STATUS_ERROR and reply.error_type == kind
    assert f"HTTP {fault}" in reply.error_message


@pytest.mark.parametrize("latency", [LatencyModel(ttft_ms=0, tokens_per_second=20, jitter=0)])
async def test_a_client_that_leaves_mid_stream_cancels_the_call(stack: Stack) -> None:
    async with stack.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat", messages=[{"role": "user", "content": QUESTION}], stream=True)
        stream = raw.parse()
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.response.aclose()  # the connection goes: the gateway sees its client leave
    [exchange] = stack.tap.exchanges
    await asyncio.wait_for(exchange.done_event.wait(), 10)
    assert exchange.abandoned and not exchange.finished  # the upstream call was cancelled too
    _, reply = await stack.events(request_id_of(raw))
    assert reply.status == InferenceStatus.INFERENCE_STATUS_CANCELLED


async def test_keys_and_body_limit(stack: Stack) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    for key in ("not-a-key", stack.keys["demo"]):  # a flow deployment's key does not open the proxy
        async with openai.AsyncOpenAI(base_url=f"{stack.gateway.url}/v1", api_key=key, max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="llmsim-chat", messages=messages)
    async with stack.client("proxy-small") as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="llmsim-chat", messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                                  + "A" * 4096}}]}])
    assert caught.value.status_code == 413
    async with stack.gateway.session.post(f"{stack.gateway.url}/v1/deployments/proxy/score", json={},
                                          headers={"Authorization": f"Bearer {stack.keys['proxy']}"}) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["type"] == "proxy_deployment"
    assert stack.tap.exchanges == []


async def test_a_chunked_body_is_held_to_the_limit_and_a_non_json_body_names_its_declared_type(stack: Stack) -> None:
    url, auth = f"{stack.gateway.url}/v1/chat/completions", {"Authorization": f"Bearer {stack.keys['proxy-small']}"}

    async def chunks(body: bytes) -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(body), 500):
            yield body[start:start + 500]

    small = json.dumps({"model": "llmsim-chat", "messages": [{"role": "user", "content": QUESTION}]}).encode()
    large = json.dumps({"model": "llmsim-chat", "messages": [{"role": "user", "content": "x" * 4096}]}).encode()
    async with stack.gateway.session.post(url, data=chunks(small), headers=auth) as resp:
        assert resp.status == 200 and resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert (await resp.json())["choices"][0]["message"]["content"]
    async with stack.gateway.session.post(url, data=chunks(large), headers=auth) as resp:
        assert resp.status == 413 and (await resp.json())["error"]["type"] == "body_too_large"
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    async with stack.gateway.session.post(url, data=b"model=llmsim-chat", headers=form) as resp:
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["type"] == "invalid_json"
        assert "(sent as application/x-www-form-urlencoded; send application/json)" in error["message"]
    async with stack.gateway.session.post(url, data=b"{", headers={**auth, "Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and "sent as" not in (await resp.json())["error"]["message"]
    assert len(stack.tap.exchanges) == 1  # only the small body went upstream


async def test_a_proxy_deployment_s_key_authenticates_otlp_export(stack: Stack) -> None:
    # An application behind the proxy exports its own spans with the same key .
    for key, status in ((stack.keys["proxy"], 200), ("not-a-key", 401)):
        async with stack.gateway.session.post(f"{stack.gateway.url}/v1/traces", data=b'{"resourceSpans": []}',
                                              headers={"Authorization": f"Bearer {key}",
                                                       "Content-Type": "application/json"}) as resp:
            assert resp.status == status, await resp.text()


async def test_openapi_lists_every_proxy_route_the_gateway_serves(stack: Stack) -> None:
    async with stack.gateway.session.get(f"{stack.gateway.url}/openapi.json") as resp:
        document = await resp.json()
    proxied = {path: spec["post"] for path, spec in document["paths"].items() if spec.get("post", {}).get(
        "operationId", "").startswith("proxy_")}
    assert {"/v1/responses", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/openai/v1/responses",
            "/openai/deployments/{model_deployment}/chat/completions", "/openai/responses"} <= set(proxied)
    assert len({op["operationId"] for op in proxied.values()}) == len(proxied) == 13
    for path in proxied:  # each one is a real route: without a key, 401 (not 404)
        async with stack.gateway.session.post(stack.gateway.url + path.replace("{model_deployment}", "m"),
                                              json={"model": "m"}) as resp:
            assert resp.status == 401, path
    assert "/v1/deployments/proxy/score" not in document["paths"]


async def test_the_demo_traffic_generator_asks_part_of_its_questions_through_the_proxy(stack: Stack) -> None:
    from services.demo.settings import KeySource, TrafficSection
    from services.demo.traffic import TrafficGenerator

    lines: list[str] = []
    traffic = TrafficGenerator(
        TrafficSection(deployment="demo", rate=10, stream_share=0.5, feedback_share=0.5, proxy_share=0.5,
                       proxy_deployment="proxy", seed=3, duration_seconds=2.5, status_every_seconds=60),
        stack.gateway.url, KeySource(fixed=stack.keys["demo"]), out=lines.append,
        proxy_keys=KeySource(fixed=stack.keys["proxy"]),
    )
    total = await traffic.run()
    assert 0 < total.proxied < total.sent - total.proxied and total.ok == total.sent, lines
    assert total.feedback > 0 and not total.failed, lines
    # The proxy's calls carry its variants (the flow's LLM calls carry variant_0/variant_1).
    proxied = [e for e in stack.tap.exchanges if e.headers.get("x-promptpulse-variant") in ("base", "large")]
    assert len(proxied) == total.proxied
    assert {e.body["model"] for e in proxied} == {"llmsim-chat"} and any(e.streamed for e in proxied)


async def test_redaction_and_a_large_image_body(stack: Stack) -> None:
    image = "data:image/png;base64," + "A" * 3_000_000  # past the score routes' 512 KiB, within 20 MiB
    messages = [{"role": "system", "content": CONTEXT},
                {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                             {"type": "image_url", "image_url": {"url": image}}]}]
    async with stack.client("proxy") as client:
        whole = await client.chat.completions.with_raw_response.create(model="llmsim-chat", messages=messages)
    assert stack.tap.exchanges[0].body["messages"] == messages  # passed through whole
    request, _ = await stack.events(request_id_of(whole))
    recorded = struct_to_dict(request.inputs)["request"]["messages"][1]["content"][1]["image_url"]["url"]
    assert len(recorded) < 20_000 and recorded.endswith("more characters not recorded]")

    async with stack.client("proxy-redacted") as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat", messages=messages[:1] + [{"role": "user", "content": QUESTION}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text  # the client gets its answer; only what is recorded is redacted
    request, reply = await stack.events(request_id_of(raw), 4)
    inputs, outputs = struct_to_dict(request.inputs), struct_to_dict(reply.outputs)
    assert QUESTION not in json.dumps(inputs) and inputs["context"] == CONTEXT  # request redacted with it
    assert text not in json.dumps(outputs)
    chunks = await stack.tokens(request_id_of(raw))
    assert chunks and all(c.text == "" for c in chunks)


@pytest.mark.parametrize("llmsim_options", [{"faults": FaultRates(hang_cap_seconds=3)}])
@pytest.mark.parametrize("gateway_options", [{"llm_timeout_seconds": 1.0}])
async def test_an_upstream_that_stalls_mid_stream_ends_the_stream_with_an_error(stack: Stack) -> None:
    async with stack.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llmsim-chat fault=hang", messages=[{"role": "user", "content": QUESTION}], stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for _ in raw.parse():
                pass
    assert "llm_timeout" in str(caught.value.body) or "broke off" in caught.value.message
    _, reply = await stack.events(request_id_of(raw))
    assert reply.status == InferenceStatus.INFERENCE_STATUS_ERROR and reply.error_type == "llm_timeout"
