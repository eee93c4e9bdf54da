"""The deployments the gateway serves: each with its loaded flow, executor and LLM clients.

Loaded at start-up and again on SIGHUP (or when an ``api_keys_file`` changes). A reload builds
a complete new :class:`Registry` beside the old one and swaps it in one assignment, so a request
sees either the old configuration or the new one, never a mix; a reload that fails (a bad file,
a flow that no longer loads) changes nothing and is logged with every problem.

LLM clients are reused across reloads while their connection is unchanged (they hold connection
pools). A client whose connection changed or disappeared is closed only after
``request_timeout_seconds``, since requests that started before the reload may still use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.trace import TracerProvider

from services.gateway.settings import GatewaySettings
from shared.deployments import Connection, Deployment, Variant, load_connections, load_deployments
from shared.flow import Flow, FlowExecutor, build_clients, flow_connections, load_flow
from shared.flow.clients import close_clients

log = logging.getLogger(__name__)

KeyFileState = tuple[int, int] | None  # (mtime_ns, size), None when the file does not exist


@dataclass(frozen=True)
class DeploymentRuntime:
    """One deployment, ready to serve: its flow's executor and its variants by id."""

    deployment: Deployment
    flow: Flow
    executor: FlowExecutor
    variants: Mapping[str, Variant]
    redacted_inputs: frozenset[str]
    redacted_outputs: frozenset[str]

    @property
    def name(self) -> str:
        return self.deployment.name

    def pick_variant(self, draw: float) -> Variant:
        return self.deployment.pick_variant(draw)


@dataclass(frozen=True)
class Registry:
    """Every deployment of one load, and the clients their flows call."""

    deployments: Mapping[str, DeploymentRuntime]
    connections: Mapping[str, Connection]
    clients: Mapping[str, Any]
    key_files: Mapping[Path, KeyFileState]
    generation: int
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def key_file_state(path: Path) -> KeyFileState:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _runtime(deployment: Deployment, flow: Flow, clients: Mapping[str, Any],
             tracer_provider: TracerProvider | None) -> DeploymentRuntime:
    executor = FlowExecutor(flow, {n: clients[n] for n in flow_connections(flow)}, tracer_provider=tracer_provider)
    for variant in deployment.variants:
        executor.plan(variant.id, variant.nodes)  # an impossible selection fails the load, not a request
    return DeploymentRuntime(
        deployment=deployment,
        flow=flow,
        executor=executor,
        variants={v.id: v for v in deployment.variants},
        redacted_inputs=frozenset(deployment.redaction.inputs),
        redacted_outputs=frozenset(deployment.redaction.outputs),
    )


async def load_registry(
    settings: GatewaySettings,
    *,
    previous: Registry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> tuple[Registry, dict[str, Any]]:
    """A new registry, and the previous one's clients it no longer uses (close them later).

    Raises DeploymentConfigError, FlowError, ConnectionKeyMissingError or ValueError, after
    closing any client it built.
    """
    folder = settings.deployments_dir
    deployments = load_deployments(folder)
    connections = load_connections(folder)
    flows = {name: load_flow(d.flow, connections=connections.keys()) for name, d in deployments.items()}
    # Only connections some flow uses get a client: a judge-only connection is the processor's.
    wanted = set().union(*(flow_connections(f) for f in flows.values())) if flows else set()
    old_clients = dict(previous.clients) if previous is not None else {}
    old_connections = previous.connections if previous is not None else {}
    section = settings.gateway
    clients: dict[str, Any] = {}
    fresh: dict[str, Any] = {}
    try:
        for name in sorted(wanted):
            if name in old_clients and old_connections.get(name) == connections[name]:
                clients[name] = old_clients.pop(name)
                continue
            built = build_clients(
                connections, [name], timeout=section.llm_timeout_seconds, max_retries=section.llm_max_retries
            )
            fresh.update(built)
            clients.update(built)
        runtimes = {name: _runtime(d, flows[name], clients, tracer_provider) for name, d in deployments.items()}
    except BaseException:
        await close_clients(fresh)
        raise
    key_files = {d.api_keys_file: key_file_state(d.api_keys_file) for d in deployments.values() if d.api_keys_file}
    generation = previous.generation + 1 if previous is not None else 1
    return Registry(runtimes, connections, clients, key_files, generation), old_clients


class Deployments:
    """Holds the current :class:`Registry` and replaces it on reload; one per app."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        tracer_provider: TracerProvider | None = None,
        on_reload: Callable[[Registry], None] | None = None,
    ) -> None:
        self._settings = settings
        self._tracer_provider = tracer_provider
        self._on_reload = on_reload
        self._current: Registry | None = None
        self._lock = asyncio.Lock()
        self._retiring: dict[asyncio.Task[None], Mapping[str, Any]] = {}
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_error: str | None = None

    @property
    def current(self) -> Registry:
        if self._current is None:
            raise RuntimeError("deployments are not loaded yet")
        return self._current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def get(self, name: str) -> DeploymentRuntime | None:
        return self._current.deployments.get(name) if self._current is not None else None

    async def load(self) -> Registry:
        """The first load; raises on any problem (the gateway does not start half-configured)."""
        registry, _ = await load_registry(self._settings, tracer_provider=self._tracer_provider)
        self._install(registry)
        return registry

    async def reload(self, reason: str) -> bool:
        """Load again; on failure keep serving the current configuration. True if swapped."""
        async with self._lock:
            try:
                registry, retired = await load_registry(
                    self._settings, previous=self._current, tracer_provider=self._tracer_provider
                )
            except Exception as exc:  # any failure: keep what works, tell the operator everything
                self.reloads_failed += 1
                self.last_error = str(exc)
                log.error("deployments reload failed; still serving the previous configuration",
                          extra={"reason": reason, "error": str(exc)})
                return False
            self._install(registry)
            self.reloads_ok += 1
            self.last_error = None
            self._retire(retired)
            log.info("deployments reloaded", extra={
                "reason": reason, "deployments": sorted(registry.deployments), "generation": registry.generation,
            })
            return True

    def _install(self, registry: Registry) -> None:
        self._current = registry
        if self._on_reload is not None:
            self._on_reload(registry)

    def _key_file_states(self) -> dict[Path, KeyFileState]:
        registry = self._current
        return {path: key_file_state(path) for path in registry.key_files} if registry is not None else {}

    async def watch_key_files(self, interval: float) -> None:
        """Reload when an api_keys_file changes (``promptpulse keys`` wrote it); runs until cancelled."""
        failed: dict[Path, KeyFileState] | None = None
        while True:
            await asyncio.sleep(interval)
            states = self._key_file_states()
            if self._current is None or states == self._current.key_files or states == failed:
                continue  # unchanged, or the same broken state already reported
            failed = None if await self.reload("api_keys_file changed") else states

    def _retire(self, clients: Mapping[str, Any]) -> None:
        if not clients:
            return
        delay = self._settings.gateway.request_timeout_seconds
        task = asyncio.get_running_loop().create_task(self._close_later(clients, delay))
        self._retiring[task] = clients
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    @staticmethod
    async def _close_later(clients: Mapping[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)  # requests started before the reload finish within the timeout
        await close_clients(clients)

    async def close(self) -> None:
        """Close every client, retiring ones included (at shutdown, after requests drained)."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        for task, clients in retiring:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await close_clients(clients)  # closing a closed client is harmless
        if self._current is not None:
            await close_clients(self._current.clients)
