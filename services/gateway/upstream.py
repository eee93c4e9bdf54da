"""Where a proxy deployment's calls go: its connection as a base URL, auth headers and api-version.

Built once per load from the connection (``connections.yaml``), so a request only formats a URL.
The key is resolved from the connection's environment variable here and lives only in
``auth_headers`` (never in a repr, a log, a span or an event). Azure OpenAI gets ``api-key`` and
its classic data-plane URLs, which every Azure resource serves:
``{endpoint}/openai/deployments/{model}/{operation}?api-version=...`` (chat/completions,
completions, embeddings) and ``{endpoint}/openai/responses?api-version=...``; the connection's
``api_version`` is sent whatever the client asked for, since the proxy owns the upstream call.
Every other type gets ``Authorization: Bearer`` and ``{base_url}/{operation}`` with the model in
the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from shared.deployments import Connection

OPENAI_BASE_URL = "https://api.openai.com/v1"
RESPONSES = "responses"
CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
OPERATIONS = (RESPONSES, CHAT, COMPLETIONS, EMBEDDINGS)


@dataclass(frozen=True)
class Upstream:
    """One connection, ready to be called by the proxy."""

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

    @property
    def server(self) -> tuple[str, int | None]:
        """(host, port) for the span's server.address and server.port."""
        parts = urlsplit(self.base_url)
        return parts.hostname or "", parts.port


def build_upstream(connection: Connection, environ: Mapping[str, str] | None = None) -> Upstream:
    """Raises ConnectionKeyMissingError when the connection's key variable is unset."""
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
    return Upstream(connection.name, connection.type, base.rstrip("/"), connection.api_version, headers)
