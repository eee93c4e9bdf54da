"""Where an LLM call goes: a connection as a base URL, auth headers and api-version.

One builder for both of the gateway's LLM call paths, a proxy deployment's upstream and a flow's
llm nodes (shared/flow/llm_http.py), so both send the same bytes
(tests/integration/test_proxy_wire_golden.py). Built once per load from the connection
(``connections.yaml``), so a request only formats a URL.
The key is resolved from the connection's environment variable here and lives only in
``auth_headers`` (never in a repr, a log, a span or an event). Azure OpenAI gets ``api-key`` and
its classic data-plane URLs, which every Azure resource serves:
``{endpoint}/openai/deployments/{model}/{operation}?api-version=...`` (chat/completions,
completions, embeddings) and ``{endpoint}/openai/responses?api-version=...``; the connection's
``api_version`` is sent whatever the client asked for, since the proxy owns the upstream call.
Every other type gets ``Authorization: Bearer`` and ``{base_url}/{operation}`` with the model in
the body. An ``api_key: none`` connection sends no key from the proxy; flows send the
``no-key`` placeholder as the ``openai`` client they replaced did (``placeholder_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import quote, urlsplit

import aiohttp

from shared.deployments import Connection
from shared.deployments.connections import NO_KEY_PLACEHOLDER

OPENAI_BASE_URL = "https://api.openai.com/v1"
RESPONSES = "responses"
CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
OPERATIONS = (RESPONSES, CHAT, COMPLETIONS, EMBEDDINGS)


@dataclass(frozen=True)
class Upstream:
    """One connection, ready to be called."""

    connection: str
    kind: str  # openai, azure_openai, openai_compatible
    base_url: str  # openai types: up to and including /v1; azure: the resource endpoint
    api_version: str | None
    auth_headers: Mapping[str, str] = field(repr=False, compare=False)

    @property
    def is_azure(self) -> bool:
        return self.kind == "azure_openai"

    def url(self, operation: str, model: str) -> str:
        """The URL of ``operation`` for ``model`` (Azure: the model deployment's)."""
        if not self.is_azure:
            return f"{self.base_url}/{operation}"
        version = quote(self.api_version or "", safe="")
        if operation == RESPONSES:
            return f"{self.base_url}/openai/responses?api-version={version}"
        return f"{self.base_url}/openai/deployments/{quote(model, safe='')}/{operation}?api-version={version}"

    @cached_property
    def server(self) -> tuple[str, int | None]:
        """(host, port) for the span's server.address and server.port: a URL parse, made once
        (every recorded call span reads it, the proxy's and the flows')."""
        parts = urlsplit(self.base_url)
        return parts.hostname or "", parts.port


def build_upstream(
    connection: Connection, environ: Mapping[str, str] | None = None, *, placeholder_key: bool = False
) -> Upstream:
    """Raises ConnectionKeyMissingError when the connection's key variable is unset.
    ``placeholder_key``: a connection without a key still sends ``Bearer no-key``."""
    if connection.type == "custom":
        raise ValueError(f"connection {connection.name!r} is a custom connection, not an LLM endpoint")
    key = connection.resolve_api_key(environ)
    headers: dict[str, str] = {}
    if connection.type == "azure_openai":
        assert connection.azure_endpoint is not None  # the connection's own checks require it
        base = connection.azure_endpoint
        if key is not None:
            headers["api-key"] = key.get_secret_value()
    else:
        base = connection.base_url or OPENAI_BASE_URL
        if key is not None:
            headers["Authorization"] = f"Bearer {key.get_secret_value()}"
        elif placeholder_key:
            headers["Authorization"] = f"Bearer {NO_KEY_PLACEHOLDER}"
    return Upstream(connection.name, connection.type, base.rstrip("/"), connection.api_version, headers)


def upstream_session() -> aiohttp.ClientSession:
    """The pool LLM calls go through, one per process or runtime (the gateway's proxy and flows,
    the processor's evaluation flows). Timeouts are set per call; no cookies are kept between
    callers; no cap on connections, since what calls through it bounds them (requests in flight,
    the judge cap); DNS answers kept 5 minutes. A compressed answer is decoded (callers read it)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                 connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
