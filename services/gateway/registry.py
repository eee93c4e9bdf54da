"""The deployments the gateway serves: each with its loaded flow, executor and LLM clients.

Loaded at start-up and again on SIGHUP (or when an ``api_keys_file`` changes). A reload builds
a complete new :class:`Registry` beside the old one and swaps it in one assignment, so a request
sees either the old configuration or the new one, never a mix.

One broken deployment never takes the others down: each deployment's file, flow, plan and LLM
clients are loaded on their own. One that does not load is a :class:`LoadFailure` with every
problem found; its callers get 503 ``deployment_unavailable`` while the others serve. On a reload,
a deployment that served and no longer loads keeps serving its last good version ("stale") until
its files load again; the log, ``/metrics`` and ``GET /admin/deployments`` say so. Its API keys
still follow its ``api_keys_file``, so a key revoked meanwhile stops working.

LLM clients are reused across reloads while their connection is unchanged (they hold connection
pools). A client no runtime uses any more is closed only after ``request_timeout_seconds``, since
requests that started before the reload may still use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.trace import TracerProvider

from services.gateway.registry_load import load_registry
from services.gateway.runtime import (
    SERVING,
    STALE,
    UNAVAILABLE,
    DeploymentRuntime,
    KeyFileState,
    LoadFailure,
    ProxyRuntime,
    Registry,
    key_file_state,
)
from services.gateway.settings import GatewaySettings
from shared.flow.clients import close_clients

log = logging.getLogger(__name__)

__all__ = ["SERVING", "STALE", "UNAVAILABLE", "DeploymentRuntime", "Deployments", "KeyFileState", "LoadFailure",
           "ProxyRuntime", "Registry", "key_file_state", "load_registry"]


class Deployments:
    """Holds the current :class:`Registry` and replaces it on reload; one per app."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        tracer_provider: TracerProvider | None = None,
        on_reload: Callable[[Registry], None] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._tracer_provider = tracer_provider
        self._on_reload = on_reload
        self._current: Registry | None = None
        self._lock = asyncio.Lock()
        self._retiring: dict[asyncio.Task[None], list[Any]] = {}
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
        """A flow deployment (``type: flow``); proxies are :meth:`get_proxy`."""
        return self._current.deployments.get(name) if self._current is not None else None

    def get_proxy(self, name: str) -> ProxyRuntime | None:
        return self._current.proxies.get(name) if self._current is not None else None

    def unavailable(self, name: str) -> LoadFailure | None:
        """Why a deployment that does not serve at all fails to load (None if it serves or is unknown)."""
        return self._current.unavailable(name) if self._current is not None else None

    async def load(self) -> Registry:
        """The first load: serves every deployment that loads, logs every one that does not.

        Raises DeploymentConfigError only when the deployments folder does not exist.
        """
        registry, _ = await load_registry(self._settings, tracer_provider=self._tracer_provider,
                                          session=self._session)
        self._install(registry)
        self._report(registry, "start-up")
        return registry

    async def reload(self, reason: str) -> bool:
        """Load again and swap. True when every deployment loaded; a deployment that does not
        keeps serving its last good version if it had one, and the reload counts as failed."""
        async with self._lock:
            try:
                registry, retired = await load_registry(
                    self._settings, previous=self._current, tracer_provider=self._tracer_provider, session=self._session
                )
            except Exception as exc:  # the folder is gone: keep what works, tell the operator
                self.reloads_failed += 1
                self.last_error = str(exc)
                log.error("deployments reload failed; still serving the previous configuration",
                          extra={"reason": reason, "error": str(exc)})
                return False
            self._install(registry)
            self._retire(retired)
            complete = self._report(registry, reason)
            log.info("deployments reloaded", extra={
                "reason": reason, "deployments": sorted(registry.deployments), "generation": registry.generation,
                "failed": sorted(registry.failures),
            })
            return complete

    def _report(self, registry: Registry, reason: str) -> bool:
        """Log each deployment that does not load with all its problems; count the reload."""
        for name, failure in sorted(registry.failures.items()):
            runtime = registry.deployments.get(name)
            if runtime is not None:
                what = f"still serving its last good version (generation {runtime.generation})"
            else:
                what = "its callers get 503 deployment_unavailable"
            log.error("deployment %r does not load; %s; the other deployments are unaffected:\n%s",
                      name, what, "\n".join(failure.problems),
                      extra={"reason": reason, "deployment": name, "file": str(failure.file or "")})
        if registry.folder_problems:
            log.error("deployments folder problems:\n%s", "\n".join(registry.folder_problems),
                      extra={"reason": reason})
        problems = registry.problems
        if reason != "start-up":
            if problems:
                self.reloads_failed += 1
            else:
                self.reloads_ok += 1
        self.last_error = "\n".join(problems) or None
        return not problems

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

    def _retire(self, clients: list[Any]) -> None:
        if not clients:
            return
        delay = self._settings.gateway.request_timeout_seconds
        task = asyncio.get_running_loop().create_task(self._close_later(clients, delay))
        self._retiring[task] = clients
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    @staticmethod
    async def _close_later(clients: list[Any], delay: float) -> None:
        await asyncio.sleep(delay)  # requests started before the reload finish within the timeout
        await _close(clients)

    async def close(self) -> None:
        """Close every client, retiring ones included (at shutdown, after requests drained)."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
        for task, clients in retiring:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _close(clients)  # closing a closed client is harmless
        if self._current is not None:
            await _close(self._current.clients_in_use())


async def _close(clients: list[Any]) -> None:
    await close_clients({str(index): client for index, client in enumerate(clients)})
