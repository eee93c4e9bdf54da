"""The whole PromptPulse pipeline as real processes, for tests and benchmarks that need all of it.

:func:`live_stack` starts llmsim, the aggregator, the processor and the gateway as subprocesses
(`python -m services.NAME`, exactly as `promptpulse NAME` runs them), each on a free loopback
port, against the shared Kafka broker and PostgreSQL server but with topics of their own (a
unique prefix) and a database of their own (created here, dropped afterwards). The demo
deployment is written to a temporary deployments folder with fresh keys, pointing at this
stack's llmsim; :class:`StackOptions` changes what a test needs (sampling rate, monitors, drift,
extra environment per service, several processors or aggregators).

Processes (each a :class:`Service`, tests/support/service_process.py) can be killed (any
signal), stopped and started again, which is what the fault tests do. Every process writes its log to the test's temporary folder; a service that dies during
start-up fails the test with the tail of its log.

    async with live_stack(tmp_path, StackOptions(sampling_rate=1.0)) as stack:
        status, body = await stack.score("What is sampled?")
        ...
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
import yaml

from shared.apikeys import new_api_key_record
from shared.settings import KafkaSettings, ServiceSettings, load_settings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.support.service_process import Service

REPO = Path(__file__).resolve().parents[2]
DEMO_FLOW = REPO / "deploy" / "local" / "flows" / "demo"
DEMO_DEPLOYMENT = REPO / "deploy" / "local" / "deployments" / "demo.yaml"
SERVICES = ("llmsim", "aggregator", "processor", "gateway")  # start order; stopped in reverse
STACK_HINT = "start the local stack first: `make stack-up` (or run the whole suite with `make test`)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class StackOptions:
    """What a test changes about the stack; the defaults are the local demo, judged fully."""

    sampling_rate: float = 1.0
    metrics: list[str] = field(default_factory=lambda: ["groundedness", "relevance", "coherence", "fluency"])
    # The demo's own evaluators (rubric, code, evaluation flow) too; off by default, so a test
    # counts the outcomes of `metrics` only and pays for no more judge calls than it needs.
    demo_evaluators: bool = False
    # None keeps the demo deployment's monitors; [] means none.
    monitors: list[dict[str, Any]] | None = None
    # llmsim drift steps, as its settings take them: [{"variant": "variant_1", "level": 0.8, "after_seconds": 5}]
    drift_schedule: list[dict[str, Any]] = field(default_factory=list)
    # llmsim latency model (instant by default, so tests are fast).
    llm_latency: dict[str, Any] = field(
        default_factory=lambda: {"ttft_ms": 5, "tokens_per_second": 2000, "jitter": 0}
    )
    deployment: dict[str, Any] = field(default_factory=dict)  # more fields of the demo deployment
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # extra environment per service
    processors: int = 1
    aggregators: int = 1
    partitions: int = 3
    spans_to_kafka: bool = True
    kafka_bootstrap: str | None = None  # None: the settings' broker (127.0.0.1:9092 locally)
    database_url: str | None = None  # None: a fresh database on the settings' server
    # More files in the deployments folder, written before any service starts: path relative
    # to the folder -> text (other deployments, their flows).
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class LiveStack:
    services: dict[str, Service]
    kafka: KafkaSettings
    topics: Topics
    database_url: str
    deployments_dir: Path
    work_dir: Path
    demo_key: str
    read_key: str
    admin_key: str
    deployment: str = "demo"

    # -- where things are ---------------------------------------------------------------------

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    @property
    def gateway(self) -> Service:
        return self.services["gateway"]

    @property
    def aggregator(self) -> Service:
        return self.services["aggregator"]

    @property
    def processor(self) -> Service:
        return self.services["processor"]

    @property
    def llmsim(self) -> Service:
        return self.services["llmsim"]

    def of_kind(self, kind: str) -> list[Service]:
        return [s for s in self.services.values() if s.kind == kind]

    @property
    def score_url(self) -> str:
        return f"{self.gateway.url}/v1/deployments/{self.deployment}/score"

    def cli_env(self) -> dict[str, str]:
        """The environment a `promptpulse` CLI command needs to talk to this stack."""
        return {
            **_clean_environ(),
            "PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "PROMPTPULSE_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "PROMPTPULSE_DATABASE_URL": self.database_url,
            "PROMPTPULSE_DEPLOYMENTS_DIR": str(self.deployments_dir),
            "PROMPTPULSE_GATEWAY_URL": self.gateway.url,
            "PROMPTPULSE_API_URL": self.aggregator.url,
            "PROMPTPULSE_API_READ_KEY": self.read_key,
            "PROMPTPULSE_API_ADMIN_KEY": self.admin_key,
            "PROMPTPULSE_DEMO_API_KEY": self.demo_key,
        }

    # -- talking to it ------------------------------------------------------------------------

    async def score(
        self, question: str, *, variant: str | None = None, run: str | None = None,
        session: aiohttp.ClientSession | None = None, **inputs: Any,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"api-key": self.demo_key}
        if variant:
            headers["x-promptpulse-variant"] = variant
        if run:
            headers["x-promptpulse-run"] = run
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            async with session.post(self.score_url, json={"question": question, **inputs}, headers=headers) as resp:
                return resp.status, await resp.json(content_type=None)
        finally:
            if own:
                await session.close()

    async def api(self, path: str, *, admin: bool = False, method: str = "GET", body: Any = None) -> Any:
        """A call to the aggregator's query API with the read (or admin) key; asserts a 2xx."""
        key = self.admin_key if admin else self.read_key
        async with aiohttp.ClientSession() as session, session.request(
            method, f"{self.aggregator.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            text = await resp.text()
            assert resp.status < 300, f"{method} {path}: {resp.status} {text}"
            return await resp.json(content_type=None)

    async def llmsim_control(self, path: str, body: Mapping[str, Any]) -> Any:
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.llmsim.url}/control/{path.lstrip('/')}", json=dict(body)
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def wait_for(self, check: Any, within: float, what: str, every: float = 0.25) -> Any:
        """Call ``await check()`` until it returns something truthy; fail naming ``what``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            value = await check()
            if value:
                return value
            for service in self.services.values():
                if service.process is not None and service.process.returncode not in (None, 0, -9, -15):
                    raise AssertionError(f"{service.name} died ({service.process.returncode}):\n{service.log_tail()}")
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
            await asyncio.sleep(every)


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTPULSE_", "OTEL_"))}


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def _demo_deployment(options: StackOptions, keys: list[dict[str, Any]]) -> dict[str, Any]:
    spec = yaml.safe_load(DEMO_DEPLOYMENT.read_text())
    spec.pop("api_keys_file", None)
    spec["flow"] = str(DEMO_FLOW)
    spec["api_keys"] = keys
    spec["evaluation"]["sampling_rate"] = options.sampling_rate
    spec["evaluation"]["metrics"] = list(options.metrics)
    if not options.demo_evaluators:
        spec["evaluation"].pop("evaluators", None)
    if options.monitors is not None:
        spec["monitors"] = options.monitors
    spec.update(options.deployment)
    return spec


@asynccontextmanager
async def live_stack(work_dir: Path, options: StackOptions | None = None) -> AsyncIterator[LiveStack]:
    options = options or StackOptions()
    base = load_settings(ServiceSettings)
    bootstrap = options.kafka_bootstrap or base.kafka.bootstrap_servers
    prefix = f"ls-{uuid.uuid4().hex[:10]}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=options.partitions)
    topics = Topics.from_settings(kafka)
    work_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (a local folder, once)

    try:
        await ensure_topics(kafka, topics.all())
    except Exception as exc:  # noqa: BLE001  (any failure here means no broker)
        pytest.fail(f"Kafka unreachable at {bootstrap} ({exc}); {STACK_HINT}")

    # A database of the stack's own (unless the test brings one).
    admin_url = base.database_url.get_secret_value()
    db_name = None
    if options.database_url:
        database_url = options.database_url
    else:
        db_name = f"ls_{uuid.uuid4().hex[:16]}"
        try:
            admin = await asyncpg.connect(admin_url, timeout=10)
        except OSError as exc:
            pytest.fail(f"PostgreSQL unreachable ({exc}); {STACK_HINT}")
        try:
            await admin.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            await admin.close()
        database_url = _with_database(admin_url, db_name)

    # Deployments folder: connections to this stack's llmsim, the demo deployment with fresh keys.
    deployments_dir = work_dir / "deployments"
    deployments_dir.mkdir(exist_ok=True)
    llmsim_port = free_port()
    (deployments_dir / "connections.yaml").write_text(yaml.safe_dump({"connections": {"llmsim": {
        "type": "openai_compatible", "base_url": f"http://127.0.0.1:{llmsim_port}/v1", "api_key": "none"}}}))
    # What demo.yaml refers to beside it (its evaluators' code, their lock file, ...), as shipped.
    for entry in DEMO_DEPLOYMENT.parent.iterdir():
        if entry.suffix in (".yaml", ".yml"):  # connections and deployments (demo-proxy): not demo's files
            continue
        if entry.is_dir():
            shutil.copytree(entry, deployments_dir / entry.name, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, deployments_dir / entry.name)
    demo_key, record = new_api_key_record("live-stack")
    (deployments_dir / "demo.yaml").write_text(yaml.safe_dump(
        _demo_deployment(options, [record.model_dump(mode="json", exclude_none=True)]), sort_keys=False))
    for relative, text in options.files.items():
        target = deployments_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    read_key = "ppapi_read_" + uuid.uuid4().hex
    admin_key = "ppapi_admin_" + uuid.uuid4().hex

    common = {
        **_clean_environ(),
        "PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "PROMPTPULSE_KAFKA__TOPIC_PREFIX": prefix,
        "PROMPTPULSE_KAFKA__PARTITIONS": str(options.partitions),
        "PROMPTPULSE_DATABASE_URL": database_url,
        "PROMPTPULSE_DATABASE__SSL": "disable",
        "PROMPTPULSE_DEPLOYMENTS_DIR": str(deployments_dir),
        "PROMPTPULSE_TELEMETRY__SPANS_TO_KAFKA": "true" if options.spans_to_kafka else "false",
        "PROMPTPULSE_TELEMETRY__LOG_FORMAT": "text",
        "TMPDIR": str(work_dir),  # faust's data folder; a killed worker cannot remove it
    }
    group = f"{prefix}group"
    per_kind: dict[str, dict[str, str]] = {
        "llmsim": {
            "PROMPTPULSE_LLMSIM__SEED": "7",
            "PROMPTPULSE_LLMSIM__LATENCY": json.dumps(options.llm_latency),
            "PROMPTPULSE_LLMSIM__DRIFT_SCHEDULE": json.dumps(options.drift_schedule),
        },
        "aggregator": {
            "PROMPTPULSE_AGGREGATOR__GROUP_ID": f"{group}.aggregator",
            "PROMPTPULSE_AGGREGATOR__BATCH_MAX_WAIT_MS": "50",
            "PROMPTPULSE_API_READ_KEY": read_key,
            "PROMPTPULSE_API_ADMIN_KEY": admin_key,
        },
        "processor": {
            "PROMPTPULSE_PROCESSOR__GROUP_ID": f"{group}.processor",
            "PROMPTPULSE_PROCESSOR__COMMIT_INTERVAL_SECONDS": "0.2",
            "PROMPTPULSE_PROCESSOR__SESSION_TIMEOUT_SECONDS": "6",
        },
        "gateway": {
            "PROMPTPULSE_GATEWAY__PROVISION_DEMO_KEY": "false",
            "PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR": str(work_dir / "spool"),
        },
    }
    port_var = {"llmsim": "PROMPTPULSE_LLMSIM__PORT", "aggregator": "PROMPTPULSE_AGGREGATOR__PORT",
                "processor": "PROMPTPULSE_PROCESSOR__PORT", "gateway": "PROMPTPULSE_GATEWAY__PORT"}
    counts = {"llmsim": 1, "aggregator": options.aggregators, "processor": options.processors, "gateway": 1}

    services: dict[str, Service] = {}
    for kind in SERVICES:
        for index in range(counts[kind]):
            name = kind if index == 0 else f"{kind}-{index}"
            port = llmsim_port if kind == "llmsim" else free_port()
            env = {**common, **per_kind[kind], port_var[kind]: str(port), **options.env.get(kind, {})}
            services[name] = Service(name, kind, port, env, work_dir / f"{name}.log")

    stack = LiveStack(services, kafka, topics, database_url, deployments_dir, work_dir,
                      demo_key, read_key, admin_key)
    try:
        for service in services.values():
            await service.start()
        yield stack
    finally:
        for service in reversed(list(services.values())):
            await service.stop(within=30)
        try:
            await delete_topics(kafka, topics.all())
        except Exception:  # noqa: BLE001,S110  (a broker a test left down: nothing to clean)
            pass
        if db_name:
            admin = await asyncpg.connect(admin_url, timeout=10)
            try:
                for attempt in range(20):
                    try:
                        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
                        break
                    except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                        await asyncio.sleep(0.25 * (attempt + 1))
            finally:
                await admin.close()
