"""The clients llm nodes call, one per connection a flow uses, built from the shared connections file.

The default is the runtime's own :class:`~shared.flow.llm_http.LlmEndpoint`: plain aiohttp to the
connection's URL with its auth headers (shared/upstream.py), the gateway's one LLM call path
(docs/flows.md, "LLM calls"). ``transport="httpx"`` builds an ``openai`` client on httpx instead,
kept to compare against. Keys stay inside the clients: nothing here logs or returns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import aiohttp

from shared.deployments import Connection, create_openai_client
from shared.flow.llm_http import LlmEndpoint
from shared.upstream import build_upstream

Transport = Literal["aiohttp", "httpx"]


def build_clients(
    connections: Mapping[str, Connection],
    names: Iterable[str],
    *,
    transport: Transport = "aiohttp",
    environ: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """One client per connection name; raises ValueError for a name not in ``connections``.

    ``overrides``: ``timeout`` (seconds to connect and between reads) and ``max_retries``; for
    ``httpx`` whatever the openai client takes. ``session``: the pool the endpoints share (the
    caller closes it); without one each endpoint opens its own. Close the clients with
    :func:`close_clients` at shutdown.
    """
    clients: dict[str, Any] = {}
    for name in sorted(set(names)):
        connection = connections.get(name)
        if connection is None:
            known = ", ".join(sorted(connections)) or "none"
            raise ValueError(f"connection {name!r} is not in the connections file (known: {known})")
        if transport == "httpx":
            clients[name] = create_openai_client(connection, environ, **overrides)
        else:
            # The openai client sent "Bearer no-key" for a connection without a key: so do we.
            upstream = build_upstream(connection, environ, placeholder_key=True)
            clients[name] = LlmEndpoint(upstream, session=session, **overrides)
    return clients


async def close_clients(clients: Mapping[str, Any]) -> None:
    for client in clients.values():
        await client.close()
