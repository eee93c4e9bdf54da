"""A gateway under test, with everything real around it: llmsim, Kafka, the deployments folder.

- :func:`llmsim_server`: llmsim in-process on 127.0.0.1 (its own aiohttp runner).
- :class:`LlmTap`: a pass-through proxy between the gateway and llmsim that keeps a copy of
  every request (body, headers) and of every answer as it streams by, and notes whether a
  stream ended normally or was abandoned by the gateway. Tests read usage, headers and stream
  progress from it: what llmsim really sent, not what the gateway says it got.
- :func:`write_deployments`: a deployments folder (connections.yaml + one file per deployment)
  pointing the demo flow and the fixture flows at the tap, with fresh keys.
- :func:`write_proxy_deployment`: one more, a ``type: proxy`` deployment on llmsim.
- :func:`running_gateway`: topics with a prefix of their own, the app on a free port, an
  in-memory span exporter (or the gateway's own telemetry set-up, spans to the real spans topic);
  deleted and stopped afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiokafka.errors import KafkaConnectionError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.gateway.app import create_app, start_gateway
from services.gateway.appkeys import DEPLOYMENTS, PUBLISHER
from services.gateway.events import EventPublisher, PublisherSection
from services.gateway.registry import Deployments
from services.gateway.settings import GatewaySection, GatewaySettings
from services.llmsim.app import create_app as create_llmsim
from services.llmsim.keys import STATE
from services.llmsim.settings import LatencyModel, LlmsimSection
from shared.apikeys import new_api_key_record
from shared.events.codec import decode
from shared.kafka import make_consumer
from shared.settings import KafkaSettings, TelemetrySettings
from shared.telemetry import Telemetry, setup_telemetry, shutdown_telemetry
from shared.topics import Topics, delete_topics, ensure_topics

REPO = Path(__file__).resolve().parents[2]
DEMO_FLOW = REPO / "deploy" / "local" / "flows" / "demo"
STANDARD_FLOW = REPO / "tests" / "fixtures" / "flows" / "standard"
CHAT_FLOW = REPO / "tests" / "fixtures" / "flows" / "chat"
INSTANT = LatencyModel(ttft_ms=0, tokens_per_second=1_000_000, jitter=0)
STACK_HINT = "start the local stack first: `make stack-up` (or run the whole suite with `make test`)"


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass
class Llmsim:
    url: str
    app: web.Application

    async def control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.post(f"{self.url}/control/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.app[STATE].counters)


@asynccontextmanager
async def llmsim_server(**overrides: Any) -> AsyncIterator[Llmsim]:
    overrides.setdefault("latency", INSTANT)
    app = create_llmsim(LlmsimSection(port=0, seed=7, **overrides))
    runner, url = await _serve(app)
    try:
        yield Llmsim(url, app)
    finally:
        await runner.cleanup()


@dataclass
class LlmExchange:
    """One call the gateway made to the LLM, as it went over the wire."""

    body: dict[str, Any]
    headers: dict[str, str]
    path: str = "/v1/chat/completions"  # with its query string
    status: int = 0
    answer: bytearray = field(default_factory=bytearray)
    finished: bool = False  # llmsim's whole answer was passed on
    abandoned: bool = False  # the gateway closed the connection before the answer ended
    done_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def streamed(self) -> bool:
        return bool(self.body.get("stream"))

    def usage(self) -> dict[str, int]:
        text = bytes(self.answer).decode()
        if not self.streamed:
            return json.loads(text)["usage"]
        found = [json.loads(line[6:])["usage"] for line in text.splitlines()
                 if line.startswith("data: {") and json.loads(line[6:]).get("usage")]
        assert len(found) == 1, text
        return found[0]

    def content_chunks(self) -> int:
        """Chunks with text in them, among those passed on so far."""
        count = 0
        for line in bytes(self.answer).decode(errors="replace").splitlines():
            if line.startswith("data: {"):
                try:
                    chunk = json.loads(line[6:])
                except ValueError:
                    continue  # the last line may still be arriving
                count += any((c.get("delta") or {}).get("content") for c in chunk.get("choices", []))
        return count


class LlmTap:
    """Forwards every POST (path and query kept) to llmsim chunk by chunk, recording everything."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.exchanges: list[LlmExchange] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LlmTap:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)  # as llmsim: image bodies are large
        app.router.add_post("/{path:.*}", self._forward)
        self._runner, self.url = await _serve(app)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        exchange = LlmExchange(json.loads(raw), {k.lower(): v for k, v in request.headers.items()}, request.path_qs)
        self.exchanges.append(exchange)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        try:
            async with self._session.post(f"{self.upstream}{request.path_qs}", data=raw, headers=headers) as up:
                exchange.status = up.status
                response = web.StreamResponse(status=up.status, headers={
                    k: v for k, v in up.headers.items() if k.lower() in ("content-type", "retry-after")})
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    exchange.answer.extend(chunk)
                    await response.write(chunk)
                await response.write_eof()
                exchange.finished = True
                return response
        except (ConnectionResetError, asyncio.CancelledError):
            exchange.abandoned = True
            raise
        finally:
            exchange.done_event.set()


def _keyed(records: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", exclude_none=True) for r in records]


@dataclass
class Keys:
    """Plain keys by deployment: ``keys["demo"]`` is a key of the demo deployment."""

    plain: dict[str, str] = field(default_factory=dict)
    limited: dict[str, str] = field(default_factory=dict)  # a key with rate_limit_per_minute

    def __getitem__(self, deployment: str) -> str:
        return self.plain[deployment]


STRICT_FLOW = """\
inputs:
  question:
    type: string
  count:
    type: int
    default: 1
outputs:
  answer:
    type: string
    reference: ${answer.output}
nodes:
- name: answer
  type: llm
  source:
    type: code
    path: answer.jinja2
  inputs:
    model: llmsim-chat
    question: ${inputs.question}
    count: ${inputs.count}
  connection: llmsim
  api: chat
"""


def write_strict_flow(folder: Path) -> Path:
    """A flow with a required input and an int input, as no fixture flow has one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(STRICT_FLOW)
    (folder / "answer.jinja2").write_text("# system:\nAnswer {{count}} times.\n# user:\n{{question}}\n")
    return folder


def write_deployments(folder: Path, llm_url: str, *, rate_limit: int = 3, **extra: dict[str, Any]) -> Keys:
    """connections.yaml and deployments ``demo``, ``standard``, ``chat``, ``locked``, ``redacted``,
    ``strict`` (a flow with a required input).

    ``extra`` overrides fields of a deployment: ``write_deployments(..., demo={"variants": [...]})``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{llm_url}/v1"
    connections = {"connections": {
        "llmsim": {"type": "openai_compatible", "base_url": base, "api_key": "none"},
        "open_ai_connection": {"type": "openai_compatible", "base_url": base, "api_key": "none"},
    }}
    (folder / "connections.yaml").write_text(yaml.safe_dump(connections))
    keys = Keys()
    two_variants = [{"id": "variant_0", "weight": 50}, {"id": "variant_1", "weight": 50}]
    specs: dict[str, dict[str, Any]] = {
        "demo": {"flow": str(DEMO_FLOW), "variants": two_variants, "allow_forced_variant": True},
        "standard": {"flow": str(STANDARD_FLOW), "variants": two_variants, "allow_forced_variant": True},
        "chat": {"flow": str(CHAT_FLOW)},
        "locked": {"flow": str(DEMO_FLOW), "variants": two_variants, "allow_forced_variant": False},
        "redacted": {"flow": str(DEMO_FLOW), "variants": [{"id": "variant_0"}],
                     "redaction": {"inputs": ["context"], "outputs": ["answer"]}},
        "strict": {"flow": str(write_strict_flow(folder.parent / "strict-flow"))},
    }
    for name, spec in specs.items():
        key, record = new_api_key_record(f"{name}-key")
        limited_key, limited = new_api_key_record(f"{name}-limited", rate_limit_per_minute=rate_limit)
        keys.plain[name] = key
        keys.limited[name] = limited_key
        body = {"name": name, **spec, "api_keys": _keyed([record, limited]), **extra.get(name, {})}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return keys


def write_proxy_deployment(folder: Path, name: str, **fields: Any) -> str:
    """A ``type: proxy`` deployment ``name`` on the llmsim connection of :func:`write_deployments`
    (``fields``: more of its fields); returns its key."""
    key, record = new_api_key_record(f"{name}-key")
    body = {"name": name, "type": "proxy", "proxy": {"connection": "llmsim"}, **fields, "api_keys": _keyed([record])}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return key


def kafka_for(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=f"it-{uuid4().hex[:8]}.", partitions=3)


async def create_topics(kafka: KafkaSettings) -> Topics:
    topics = Topics.from_settings(kafka)
    try:
        await ensure_topics(kafka, [topics.inference, topics.tokens, topics.feedback])
    except KafkaConnectionError as exc:
        pytest.fail(f"Kafka unreachable ({exc}); {STACK_HINT}")
    return topics


def gateway_settings(deployments_dir: Path, kafka: KafkaSettings, spool_dir: Path, **section: Any) -> GatewaySettings:
    publisher = {"spool_dir": spool_dir, "send_timeout_seconds": 2.0, "retry_initial_seconds": 0.2,
                 "retry_max_seconds": 1.0, "close_timeout_seconds": 10.0, **section.pop("publisher", {})}
    options = {"port": 0, "provision_demo_key": False, "keys_reload_interval_seconds": 0, **section}
    return GatewaySettings(
        deployments_dir=deployments_dir, kafka=kafka, telemetry=TelemetrySettings(spans_to_kafka=False),
        gateway=GatewaySection(publisher=PublisherSection(**publisher), **options),
    )


@dataclass
class Gateway:
    url: str
    app: web.Application
    settings: GatewaySettings
    topics: Topics
    spans: InMemorySpanExporter
    session: aiohttp.ClientSession
    runner: web.AppRunner  # a test may stop the gateway itself (await gateway.runner.cleanup())
    telemetry: Telemetry | None = None  # with spans_to_kafka

    @property
    def publisher(self) -> EventPublisher:
        return self.app[PUBLISHER]

    @property
    def deployments(self) -> Deployments:
        return self.app[DEPLOYMENTS]

    def score_url(self, deployment: str) -> str:
        return f"{self.url}/v1/deployments/{deployment}/score"


@asynccontextmanager
async def running_gateway(
    deployments_dir: Path, kafka: KafkaSettings, spool_dir: Path, *, create: bool = True,
    handle_sighup: bool = False, spans_to_kafka: bool = False, **section: Any,
) -> AsyncIterator[Gateway]:
    """``spans_to_kafka``: the gateway's own telemetry set-up (shared.telemetry, what honours
    ``OTEL_TRACES_SAMPLER``) exporting to the spans topic too, instead of a bare provider."""
    topics = await create_topics(kafka) if create else Topics.from_settings(kafka)
    names = [topics.inference, topics.tokens, topics.feedback] + ([topics.spans] if spans_to_kafka else [])
    if create and spans_to_kafka:
        await ensure_topics(kafka, [topics.spans])
    settings = gateway_settings(deployments_dir, kafka, spool_dir, **section)
    spans = InMemorySpanExporter()
    telemetry = None
    if spans_to_kafka:
        # On this loop, as the gateway sets it up (its loop exporter, not the thread one).
        telemetry = setup_telemetry("gateway", settings, spans_to_kafka=True, loop=asyncio.get_running_loop(),
                                    span_processors=[SimpleSpanProcessor(spans)], set_global=False)
        provider = telemetry.provider
    else:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(settings, tracer_provider=provider, handle_sighup=handle_sighup)
    runner = await start_gateway(app, "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    session = aiohttp.ClientSession()
    try:
        yield Gateway(f"http://{host}:{port}", app, settings, topics, spans, session, runner, telemetry)
    finally:
        await session.close()
        if runner.server is not None:  # not stopped by the test already
            await runner.cleanup()
        if telemetry is not None:
            await asyncio.to_thread(shutdown_telemetry, telemetry)
        if create:
            await delete_topics(kafka, names)


async def read_topic(kafka: KafkaSettings, topic: str, expected: int, *, within: float = 60.0) -> list[Any]:
    """Every record on ``topic``: at least ``expected``, plus any that follow within a moment."""
    consumer = make_consumer(kafka, topic, group_id=None, client_id="it-reader")
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(within):
            while len(records) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                records += [r for part in batch.values() for r in part]
        batch = await consumer.getmany(timeout_ms=1000)  # duplicates would arrive with the rest
        records += [r for part in batch.values() for r in part]
    finally:
        await consumer.stop()
    return records


def events_by_request(records: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped[record.key.decode()].append(decode(record.value, record.headers))
    return grouped
