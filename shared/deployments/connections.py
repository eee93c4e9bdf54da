"""LLM connections: ``connections.yaml`` beside the deployment files.

A connection names an endpoint that speaks the OpenAI API: OpenAI itself, Azure OpenAI, or any
OpenAI-compatible server (vLLM, Ollama, LiteLLM, llmsim). Flows' LLM nodes and judges refer to
connections by name, so the same flow runs against any of them unchanged. The file holds the
*name* of the environment variable with the key, never the key; a resolved key is a SecretStr
and only leaves it as the ``api_key`` argument of the openai client.

A ``custom`` connection is prompt flow's ``CustomConnection`` for Python nodes: ``configs``
(plain settings) and ``secrets_env`` (secret name -> environment variable holding it). It is
not an LLM endpoint: llm nodes and judges cannot use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator

from shared.deployments.base import (
    CONNECTION_NAME_PATTERN,
    DEFER_CHECKS,
    ENV_NAME_PATTERN,
    FIELD_NAME_PATTERN,
    ConfigModel,
)
from shared.deployments.errors import (
    ConnectionKeyMissingError,
    DeploymentConfigError,
    Loc,
    Problem,
    display_path,
    problems_at,
    problems_from_validation,
    read_yaml_mapping,
)

CONNECTIONS_FILE = "connections.yaml"
# Sent as the bearer token to endpoints that ignore keys. Passing *something* matters: given
# no key, the openai client would fall back to OPENAI_API_KEY from the environment and hand a
# real OpenAI key to whatever local endpoint the connection names.
NO_KEY_PLACEHOLDER = "no-key"
# Config names that hold secrets in prompt flow's examples (api_key, token, ...): refused in configs.
_SECRET_LIKE = re.compile(r"(^|_)(key|secret|password|token)$", re.IGNORECASE)


class Connection(ConfigModel):
    """One named LLM endpoint."""

    name: str = Field(pattern=CONNECTION_NAME_PATTERN)
    type: Literal["openai", "azure_openai", "openai_compatible", "custom"]
    base_url: str | None = None
    azure_endpoint: str | None = None
    api_version: str | None = Field(None, min_length=1, max_length=64)
    api_key_env: str | None = Field(None, pattern=ENV_NAME_PATTERN)
    api_key: Literal["none"] | None = Field(
        None, description="'none' for local endpoints that ignore keys (llmsim, Ollama, vLLM)."
    )
    configs: dict[Annotated[str, Field(pattern=FIELD_NAME_PATTERN)], str | int | float | bool] | None = None
    secrets_env: dict[
        Annotated[str, Field(pattern=FIELD_NAME_PATTERN)], Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
    ] | None = None

    @field_validator("base_url", "azure_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(f"{value!r} must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    def problems(self) -> list[tuple[Loc, str]]:
        found: list[tuple[Loc, str]] = []
        kind = self.type

        def only_for(field: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, field) is not None and kind not in allowed:
                found.append(((field,), f"does not apply to type {kind}"))

        def required(field: str) -> None:
            if getattr(self, field) is None:
                found.append(((field,), f"required for type {kind}"))

        only_for("base_url", ("openai", "openai_compatible"))
        only_for("azure_endpoint", ("azure_openai",))
        only_for("api_version", ("azure_openai",))
        only_for("api_key", ("openai_compatible",))
        only_for("configs", ("custom",))
        only_for("secrets_env", ("custom",))
        if kind == "custom":
            only_for("api_key_env", ())
            for key in (self.configs or {}):
                if key in (self.secrets_env or {}):
                    found.append((("configs", key), "is also in secrets_env; name it once"))
                elif _SECRET_LIKE.search(key):
                    found.append((("configs", key), "looks like a secret: name its environment variable in "
                                  "secrets_env instead (the file never holds secret values)"))
            return found
        if kind == "azure_openai":
            required("azure_endpoint")
            required("api_version")
        if kind == "openai_compatible":
            required("base_url")
        if self.api_key is not None and self.api_key_env is not None:
            found.append((("api_key",), "set api_key_env or api_key: none, not both"))
        elif self.api_key is None and self.api_key_env is None:
            hint = " (or api_key: none for an endpoint that ignores keys)" if kind == "openai_compatible" else ""
            found.append((("api_key_env",), f"required for type {kind}{hint}"))
        return found

    def resolve_secrets(self, environ: Mapping[str, str] | None = None) -> dict[str, SecretStr]:
        """A custom connection's secrets from their environment variables; raises when one is unset."""
        env = os.environ if environ is None else environ
        secrets: dict[str, SecretStr] = {}
        for key, variable in (self.secrets_env or {}).items():
            value = env.get(variable, "")
            if not value.strip():
                raise ConnectionKeyMissingError(
                    f"connection {self.name!r}: environment variable {variable} (secrets_env.{key}) is not set or empty"
                )
            secrets[key] = SecretStr(value.strip())
        return secrets

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> SecretStr | None:
        """The key from the named environment variable; None for ``api_key: none``."""
        if self.api_key == "none":
            return None
        env = os.environ if environ is None else environ
        assert self.api_key_env is not None  # guaranteed by problems()
        value = env.get(self.api_key_env, "")
        if not value.strip():
            raise ConnectionKeyMissingError(
                f"connection {self.name!r}: environment variable {self.api_key_env} "
                "(its api_key_env) is not set or empty"
            )
        return SecretStr(value.strip())


def openai_client_kwargs(
    connection: Connection, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``openai.AsyncOpenAI`` (or ``AsyncAzureOpenAI`` for azure_openai).

    The result holds the plain key, as the client needs it: pass it on, never log it.
    """
    if connection.type == "custom":
        raise ValueError(f"connection {connection.name!r} is a custom connection, not an LLM endpoint")
    key = connection.resolve_api_key(environ)
    kwargs: dict[str, Any] = {
        "api_key": key.get_secret_value() if key is not None else NO_KEY_PLACEHOLDER
    }
    if connection.type == "azure_openai":
        kwargs["azure_endpoint"] = connection.azure_endpoint
        kwargs["api_version"] = connection.api_version
    elif connection.base_url is not None:
        kwargs["base_url"] = connection.base_url
    return kwargs


def create_openai_client(
    connection: Connection, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Any:
    """An ``openai.AsyncOpenAI`` or ``openai.AsyncAzureOpenAI`` for the connection.

    ``overrides`` go to the client unchanged (``timeout``, ``max_retries``, ``http_client``...).
    """
    import openai  # deferred: only services that call LLMs pay for importing it

    kwargs = {**openai_client_kwargs(connection, environ), **overrides}
    if connection.type == "azure_openai":
        return openai.AsyncAzureOpenAI(**kwargs)
    return openai.AsyncOpenAI(**kwargs)


def load_connections_file(path: Path) -> dict[str, Connection]:
    """Connections from one file; a missing file means no connections. Raises on any problem."""
    connections, problems = read_connections_file(path)
    if problems:
        raise DeploymentConfigError(problems)
    return connections


def read_connections_file(path: Path) -> tuple[dict[str, Connection], list[Problem]]:
    """The connections of one file that are valid, and the problems of the others.

    A bad entry costs only that connection: deployments that use another one keep working.
    """
    if not path.exists():
        return {}, []
    shown = display_path(path)
    try:
        data = read_yaml_mapping(path, "connections file")
    except DeploymentConfigError as exc:
        return {}, list(exc.problems)
    unknown = [key for key in data if key != "connections"]
    problems = [Problem(shown, str(key), "unknown field (expected only 'connections')") for key in unknown]
    entries = data.get("connections") or {}
    if not isinstance(entries, dict):
        problems.append(Problem(shown, "connections", "must be a mapping of name -> connection"))
        return {}, problems
    connections: dict[str, Connection] = {}
    for name, spec in entries.items():
        where: Loc = ("connections", str(name))
        if not isinstance(spec, dict):
            problems += problems_at(shown, [((), "must be a mapping of connection fields")], where)
            continue
        if "name" in spec:
            problems += problems_at(shown, [(("name",), "unknown field (the key above names it)")], where)
            continue
        try:
            connection = Connection.model_validate(
                {"name": str(name), **spec}, context={DEFER_CHECKS: True}
            )
        except ValidationError as exc:
            problems += problems_from_validation(shown, exc, where)
            continue
        found = connection.all_problems()
        if found:
            problems += problems_at(shown, found, where)
            continue
        connections[connection.name] = connection
    return connections, problems


def load_connections(deployments_dir: Path) -> dict[str, Connection]:
    """The connections in ``<deployments_dir>/connections.yaml`` (none if the file is absent)."""
    return load_connections_file(Path(deployments_dir) / CONNECTIONS_FILE)
