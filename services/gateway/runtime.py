"""What the gateway serves, as one load of the deployments folder built it (registry_load.py loads it).

A :class:`Registry` holds every :class:`DeploymentRuntime` that serves, stale ones included (a
deployment whose files no longer load, serving its last good version), and a
:class:`LoadFailure` for each deployment whose current files do not load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.deployments import Connection, Deployment, Variant
from shared.flow import Flow, FlowExecutor
from shared.flow.flex_executor import FlexExecutor
from shared.upstream import Upstream

KeyFileState = tuple[int, int] | None  # (mtime_ns, size), None when the file does not exist


@dataclass(frozen=True)
class DeploymentRuntime:
    """One deployment, ready to serve: its flow's executor and its variants by id."""

    deployment: Deployment
    flow: Flow
    executor: FlowExecutor | FlexExecutor  # FlexExecutor for a flex flow (a FlexFlow)
    variants: Mapping[str, Variant]
    redacted_inputs: frozenset[str]
    redacted_outputs: frozenset[str]
    clients: Mapping[str, Any] = field(default_factory=dict)  # connection -> client its executor calls
    generation: int = 0  # the load it comes from: older than the registry's when serving stale
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        return self.deployment.name

    def pick_variant(self, draw: float) -> Variant:
        return self.deployment.pick_variant(draw)


@dataclass(frozen=True)
class ProxyRuntime:
    """One ``type: proxy`` deployment, ready to pass calls to its upstream (docs/proxy.md)."""

    deployment: Deployment
    upstream: Upstream
    variants: Mapping[str, Variant]
    redacted_inputs: frozenset[str]
    redacted_outputs: frozenset[str]
    generation: int = 0
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def name(self) -> str:
        return self.deployment.name

    def pick_variant(self, draw: float) -> Variant:
        return self.deployment.pick_variant(draw)


Runtime = DeploymentRuntime | ProxyRuntime


@dataclass(frozen=True)
class LoadFailure:
    """A deployment whose current files do not load, with every problem found (for operators only)."""

    name: str
    file: Path | None
    problems: tuple[str, ...]
    since: datetime = field(default_factory=lambda: datetime.now(UTC))


SERVING, STALE, UNAVAILABLE = "serving", "stale", "unavailable"


@dataclass(frozen=True)
class Registry:
    """Every deployment of one load, and the clients their flows call."""

    deployments: Mapping[str, DeploymentRuntime]  # every deployment that serves, stale ones included
    connections: Mapping[str, Connection]
    clients: Mapping[str, Any]  # the clients this load built or kept for current files
    key_files: Mapping[Path, KeyFileState]
    generation: int
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    failures: Mapping[str, LoadFailure] = field(default_factory=dict)  # by deployment name
    folder_problems: tuple[str, ...] = ()  # problems of no single deployment (connections.yaml)
    proxies: Mapping[str, ProxyRuntime] = field(default_factory=dict)  # type: proxy, stale ones included

    @property
    def serving(self) -> list[str]:
        """Names of every deployment that serves, flows and proxies, sorted."""
        return sorted({*self.deployments, *self.proxies})

    def runtime(self, name: str) -> Runtime | None:
        return self.deployments.get(name) or self.proxies.get(name)

    def status(self, name: str) -> str | None:
        """SERVING, STALE (serving its last good version), UNAVAILABLE, or None if unknown."""
        if name in self.deployments or name in self.proxies:
            return STALE if name in self.failures else SERVING
        return UNAVAILABLE if name in self.failures else None

    def unavailable(self, name: str) -> LoadFailure | None:
        """The failure of a deployment that does not serve at all."""
        return self.failures.get(name) if self.runtime(name) is None else None

    def clients_in_use(self) -> list[Any]:
        """Every distinct client a serving runtime may call, stale runtimes' included."""
        found: dict[int, Any] = {id(c): c for c in self.clients.values()}
        for runtime in self.deployments.values():
            found.update((id(c), c) for c in runtime.clients.values())
        return list(found.values())

    @property
    def problems(self) -> list[str]:
        return [*self.folder_problems, *(p for f in self.failures.values() for p in f.problems)]


def key_file_state(path: Path) -> KeyFileState:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
