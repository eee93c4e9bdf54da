"""Building one :class:`Registry` from the deployments folder: each deployment's flow, executor
or proxy upstream and the LLM clients they share, every deployment on its own (registry.py holds
the registry, swaps in the next one on reload and closes retired clients).

On a reload, a deployment that served and no longer loads keeps its last good runtime ("stale"),
with the keys its ``api_keys_file`` holds now; clients whose connection is unchanged are reused.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from opentelemetry.trace import TracerProvider

from services.gateway.runtime import (
    DeploymentRuntime,
    LoadFailure,
    ProxyRuntime,
    Registry,
    Runtime,
    key_file_state,
)
from services.gateway.settings import GatewaySettings
from shared.deployments import (
    Deployment,
    DeploymentConfigError,
    load_api_keys_file,
    load_deployment_folder,
)
from shared.flow import Flow, FlowError, FlowExecutor, build_clients, flow_connections
from shared.flow.clients import close_clients
from shared.flow.deployed import load_deployment_flow
from shared.flow.flex import FlexFlow
from shared.flow.flex_executor import FlexExecutor
from shared.flow.prompty import provide_connections
from shared.upstream import build_upstream

log = logging.getLogger(__name__)


def _runtime(deployment: Deployment, flow: Flow, clients: Mapping[str, Any], connections: Mapping[str, Any],
             tracer_provider: TracerProvider | None, generation: int) -> DeploymentRuntime:
    used = {n: clients[n] for n in flow_connections(flow)}
    # A deployment that redacts fields gets no captured prints in its spans: they may quote those fields.
    redacts = bool(deployment.redaction.inputs or deployment.redaction.outputs)
    executor: FlowExecutor | FlexExecutor
    if isinstance(flow, FlexFlow):  # its entry class is built per variant, with that variant's init
        executor = FlexExecutor(flow, {v.id: deployment.init_values(v) for v in deployment.variants},
                                tracer_provider=tracer_provider, connections=connections, capture_output=not redacts)
    else:
        executor = FlowExecutor(flow, used, tracer_provider=tracer_provider, connections=connections,
                                capture_output=not redacts)
    for variant in deployment.variants:
        executor.plan(variant.id, variant.nodes)  # an impossible selection fails the load, not a request
    return DeploymentRuntime(
        deployment=deployment,
        flow=flow,
        executor=executor,
        variants={v.id: v for v in deployment.variants},
        redacted_inputs=frozenset(deployment.redaction.inputs),
        redacted_outputs=frozenset(deployment.redaction.outputs),
        clients=used,
        generation=generation,
    )


def _proxy_runtime(deployment: Deployment, connections: Mapping[str, Any], generation: int) -> ProxyRuntime:
    assert deployment.proxy is not None  # the schema requires it for type proxy
    upstream = build_upstream(connections[deployment.proxy.connection])  # the loader checked it exists
    # The recorded body quotes the question and context, and the choices quote the answer: redacting
    # one redacts what holds it too (docs/proxy.md).
    inputs = set(deployment.redaction.inputs)
    outputs = set(deployment.redaction.outputs)
    if inputs & {"question", "context"}:
        inputs.add("request")
    if "answer" in outputs:
        outputs.add("choices")
    return ProxyRuntime(
        deployment=deployment,
        upstream=upstream,
        variants={v.id: v for v in deployment.variants},
        redacted_inputs=frozenset(inputs),
        redacted_outputs=frozenset(outputs),
        generation=generation,
    )


def _reason(exc: BaseException) -> list[str]:
    if isinstance(exc, FlowError | DeploymentConfigError):
        return [str(p) for p in exc.problems]
    return [f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)]


async def load_registry(
    settings: GatewaySettings,
    *,
    previous: Registry | None = None,
    tracer_provider: TracerProvider | None = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[Registry, list[Any]]:
    """A new registry, and the previous one's clients no runtime uses any more (close them later).

    Each deployment loads on its own: one that does not is recorded in ``failures`` (and, if it
    served before, keeps serving its previous runtime). Raises DeploymentConfigError only when
    the deployments folder does not exist. ``session``: the pool the flows' LLM endpoints share.
    """
    # Packages installed since the last load (`promptpulse flows install`) must be found: the
    # import system caches directory listings.
    importlib.invalidate_caches()
    folder = load_deployment_folder(settings.deployments_dir)
    generation = previous.generation + 1 if previous is not None else 1
    connections = folder.connections
    provide_connections(connections)  # what flow code's Prompty.load finds a connection name in
    problems: dict[str, list[str]] = {b.name: [str(p) for p in b.problems] for b in folder.broken
                                      if b.name not in folder.deployments}
    files: dict[str, Path | None] = {b.name: b.file for b in folder.broken}
    folder_problems = [str(p) for p in folder.folder_problems]
    folder_problems += [str(p) for b in folder.broken if b.name in folder.deployments for p in b.problems]
    flows: dict[str, Flow] = {}
    proxies: dict[str, ProxyRuntime] = {}
    for name, deployment in folder.deployments.items():
        files[name] = deployment.source
        try:
            if deployment.flow is None:  # type: proxy (the schema requires a flow otherwise)
                proxies[name] = _proxy_runtime(deployment, connections, generation)
            else:
                flows[name] = load_deployment_flow(deployment, connections)
        except Exception as exc:  # any failure stays this deployment's
            problems[name] = _reason(exc)
    # Only connections some flow uses get a client: a judge-only connection is the processor's.
    wanted = set().union(*(flow_connections(f) for f in flows.values())) if flows else set()
    old_clients = dict(previous.clients) if previous is not None else {}
    old_connections = previous.connections if previous is not None else {}
    section = settings.gateway
    clients: dict[str, Any] = {}
    fresh: dict[str, Any] = {}
    broken_connections: dict[str, str] = {}
    runtimes: dict[str, DeploymentRuntime] = {}
    try:
        for name in sorted(wanted):
            if name in old_clients and old_connections.get(name) == connections[name]:
                clients[name] = old_clients[name]
                continue
            try:
                built = build_clients(connections, [name], session=session, timeout=section.llm_timeout_seconds,
                                      max_retries=section.llm_max_retries)
            except Exception as exc:  # a connection key variable unset: costs the flows that use it
                broken_connections[name] = f"connection {name!r}: {_reason(exc)[0]}"
                continue
            fresh.update(built)
            clients.update(built)
        for name, flow in flows.items():
            unusable = sorted(flow_connections(flow) & broken_connections.keys())
            if unusable:
                problems[name] = [broken_connections[c] for c in unusable]
                continue
            try:
                runtimes[name] = _runtime(folder.deployments[name], flow, clients, connections, tracer_provider,
                                          generation)
            except Exception as exc:
                problems[name] = _reason(exc)
    except BaseException:
        await close_clients(fresh)
        raise
    failures = _failures(problems, files, previous)
    key_files = {d.api_keys_file: key_file_state(d.api_keys_file) for d in folder.deployments.values()
                 if d.api_keys_file}
    if previous is not None:
        for name, failure in list(failures.items()):
            stale = _last_good(previous, failure)
            if isinstance(stale, ProxyRuntime):
                if stale.name not in proxies and stale.name not in runtimes:
                    proxies[stale.name] = _with_current_keys(stale)
                    if stale.deployment.api_keys_file is not None:
                        key_files[stale.deployment.api_keys_file] = key_file_state(stale.deployment.api_keys_file)
                continue
            if stale is not None and stale.name not in runtimes and stale.name not in proxies:
                runtimes[stale.name] = _with_current_keys(stale)
                if stale.deployment.api_keys_file is not None:
                    key_files[stale.deployment.api_keys_file] = key_file_state(stale.deployment.api_keys_file)
                if stale.name != name:  # known by its file stem now: report it under the name it serves
                    del failures[name]
                    failures[stale.name] = replace(failure, name=stale.name)
    registry = Registry(runtimes, connections, clients, key_files, generation, failures=failures,
                        folder_problems=tuple(folder_problems), proxies=proxies)
    in_use = {id(c) for c in registry.clients_in_use()}
    retired = [c for c in previous.clients_in_use() if id(c) not in in_use] if previous is not None else []
    return registry, retired


def _failures(problems: Mapping[str, list[str]], files: Mapping[str, Path | None],
              previous: Registry | None) -> dict[str, LoadFailure]:
    failures: dict[str, LoadFailure] = {}
    for name, found in sorted(problems.items()):
        before = previous.failures.get(name) if previous is not None else None
        since = before.since if before is not None and before.problems == tuple(found) else datetime.now(UTC)
        failures[name] = LoadFailure(name, files.get(name), tuple(found), since)
    return failures


def _last_good(previous: Registry, failure: LoadFailure) -> Runtime | None:
    # By name, or by file when the broken file's name field could not be read.
    runtime = previous.runtime(failure.name)
    if runtime is None and failure.file is not None:
        every: list[Runtime] = [*previous.deployments.values(), *previous.proxies.values()]
        runtime = next((r for r in every if r.deployment.source == failure.file), None)
    return runtime


AnyRuntime = TypeVar("AnyRuntime", DeploymentRuntime, ProxyRuntime)


def _with_current_keys(runtime: AnyRuntime) -> AnyRuntime:
    # A stale deployment still honours `promptpulse keys revoke`: its keys file is read again.
    deployment: Deployment = runtime.deployment
    path = deployment.api_keys_file
    if path is None:
        return runtime
    try:
        from_file: list[Any] = load_api_keys_file(path)
    except DeploymentConfigError as exc:
        log.error("api_keys_file of stale deployment %r does not load; its keys stay as they were: %s",
                  runtime.name, exc)
        return runtime
    keys = [*deployment.inline_api_keys, *from_file]
    updated: AnyRuntime = replace(runtime, deployment=deployment.model_copy(update={"api_keys": keys}))
    return updated

__all__ = ["load_registry"]
