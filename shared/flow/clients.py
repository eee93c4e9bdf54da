"""``openai`` clients for the connections a flow uses, built from the shared connections file.

The aiohttp transport is the default: against llmsim it gave more requests per second and
lower latency than httpx at every concurrency we measured (see docs/flows.md). Keys stay
inside the clients: nothing here logs or returns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from shared.deployments import Connection, create_openai_client

Transport = Literal["aiohttp", "httpx"]


def build_clients(
    connections: Mapping[str, Connection],
    names: Iterable[str],
    *,
    transport: Transport = "aiohttp",
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One async client per connection name; raises ValueError for a name not in ``connections``.

    ``overrides`` go to the client (``timeout``, ``max_retries``...). Close the clients with
    :func:`close_clients` at shutdown.
    """
    clients: dict[str, Any] = {}
    for name in sorted(set(names)):
        connection = connections.get(name)
        if connection is None:
            known = ", ".join(sorted(connections)) or "none"
            raise ValueError(f"connection {name!r} is not in the connections file (known: {known})")
        extra = dict(overrides)
        if transport == "aiohttp" and "http_client" not in extra:
            import openai

            extra["http_client"] = openai.DefaultAioHttpClient()
        clients[name] = create_openai_client(connection, environ, **extra)
    return clients


async def close_clients(clients: Mapping[str, Any]) -> None:
    for client in clients.values():
        await client.close()
