"""Stand-ins for prompt flow's model configurations (``promptflow.core.AzureOpenAIModelConfiguration``,
``OpenAIModelConfiguration``), and their resolution from ``connections.yaml``.

Flex flows take one as an ``init`` parameter (``model_config: AzureOpenAIModelConfiguration``)
and hand it to ``Prompty.load`` or read its fields to build an ``openai`` client. Same fields and
constructor rules as prompt flow's dataclasses (``connection`` and explicit endpoint settings are
exclusive; ``from_connection``). A deployment names a connection (``{connection: name,
azure_deployment: ...}``); :func:`resolve_model_config` fills the endpoint and key from that
connections.yaml entry, as prompt flow's executor does, and keeps the connection's name on the
object (``connection_name``) so code that can use the gateway's client for it may. The key never
shows in a ``repr`` (a log line, an exception, a traced argument).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shared.deployments.connections import NO_KEY_PLACEHOLDER, Connection

_HIDDEN = "******"


class ModelConfiguration:
    """Base of the model configurations (prompt flow's ``promptflow.core._model_configuration``)."""

    connection: str | None
    api_key: str | None
    # The connections.yaml entry the endpoint and key were filled from (None: given explicitly).
    connection_name: str | None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={(_HIDDEN if f.name == 'api_key' and getattr(self, f.name) else getattr(self, f.name))!r}"
            for f in fields(self)  # type: ignore[arg-type]
            if f.repr
        )
        return f"{type(self).__name__}({shown})"

    def _check_exclusive(self, *explicit: Any) -> None:
        if self.connection and any(explicit):
            raise ValueError("Cannot configure model config and connection at the same time.")


@dataclass(repr=False)
class AzureOpenAIModelConfiguration(ModelConfiguration):
    azure_deployment: str
    azure_endpoint: str | None = None
    api_version: str | None = None
    api_key: str | None = None
    connection: str | None = None
    connection_name: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_exclusive(self.azure_endpoint, self.api_key, self.api_version)

    @classmethod
    def from_connection(cls, connection: Any, azure_deployment: str) -> AzureOpenAIModelConfiguration:
        """From an ``AzureOpenAIConnection`` object (its ``api_base``, ``api_version``, ``api_key``)."""
        return cls(azure_deployment=azure_deployment, azure_endpoint=connection.api_base,
                   api_version=connection.api_version, api_key=connection.api_key)


@dataclass(repr=False)
class OpenAIModelConfiguration(ModelConfiguration):
    model: str
    base_url: str | None = None
    api_key: str | None = None
    organization: str | None = None
    connection: str | None = None
    connection_name: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._check_exclusive(self.base_url, self.api_key, self.organization)

    @classmethod
    def from_connection(cls, connection: Any, model: str) -> OpenAIModelConfiguration:
        """From an ``OpenAIConnection`` object (its ``base_url``, ``api_key``, ``organization``)."""
        return cls(model=model, base_url=connection.base_url, api_key=connection.api_key,
                   organization=getattr(connection, "organization", None))


MODEL_CONFIG_CLASSES: dict[str, type[ModelConfiguration]] = {
    cls.__name__: cls for cls in (AzureOpenAIModelConfiguration, OpenAIModelConfiguration)
}
# The connections.yaml types each configuration can be filled from.
_CONNECTION_TYPES = {"AzureOpenAIModelConfiguration": ("azure_openai",),
                     "OpenAIModelConfiguration": ("openai", "openai_compatible")}


class ModelConfigError(ValueError):
    """A model configuration value that cannot be built (the message names what is wrong)."""


def resolve_model_config(
    class_name: str, value: Any, connections: Mapping[str, Connection], environ: Mapping[str, str] | None = None
) -> ModelConfiguration:
    """The configuration object for an ``init`` value: a mapping of the class's fields naming a
    connection (endpoint and key come from it; the key from its environment variable). A key
    written into a deployment file is refused: keys live in the environment, never in git."""
    cls = MODEL_CONFIG_CLASSES[class_name]
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ModelConfigError(f"must be a mapping of {class_name} fields (connection, "
                               f"{'azure_deployment' if cls is AzureOpenAIModelConfiguration else 'model'}), "
                               f"not {type(value).__name__}")
    known = {f.name for f in fields(cls)} - {"connection_name"}  # type: ignore[arg-type]
    unknown = sorted(set(value) - known)
    if unknown:
        raise ModelConfigError(f"{class_name} has no field {unknown[0]!r} (fields: {', '.join(sorted(known))})")
    if value.get("api_key"):
        raise ModelConfigError("api_key must not be written in a deployment file: name a connection of "
                               "connections.yaml (its key comes from the environment)")
    name = value.get("connection")
    if not isinstance(name, str) or not name:
        raise ModelConfigError("needs connection: <a connection name in connections.yaml>")
    connection = connections.get(name)
    if connection is None:
        shown = ", ".join(sorted(connections)) or "none"
        raise ModelConfigError(f"connection {name!r} is not in connections.yaml (known: {shown})")
    if connection.type not in _CONNECTION_TYPES[class_name]:
        raise ModelConfigError(f"connection {name!r} is of type {connection.type}; a {class_name} takes "
                               f"{' or '.join(_CONNECTION_TYPES[class_name])}")
    key = connection.resolve_api_key(environ)  # raises ConnectionKeyMissingError (a ValueError) if unset
    api_key = key.get_secret_value() if key is not None else NO_KEY_PLACEHOLDER
    rest = {k: v for k, v in value.items() if k != "connection"}
    try:
        if cls is AzureOpenAIModelConfiguration:
            deployment = rest.pop("azure_deployment", None)
            if not deployment:
                raise ModelConfigError("needs azure_deployment (the Azure OpenAI deployment to call)")
            return AzureOpenAIModelConfiguration(
                azure_deployment=deployment, azure_endpoint=rest.get("azure_endpoint") or connection.azure_endpoint,
                api_version=rest.get("api_version") or connection.api_version, api_key=api_key,
                connection_name=name,
            )
        model = rest.pop("model", None)
        if not model:
            raise ModelConfigError("needs model (the model to call)")
        return OpenAIModelConfiguration(model=model, base_url=rest.get("base_url") or connection.base_url,
                                        api_key=api_key, organization=rest.get("organization"), connection_name=name)
    except TypeError as exc:
        raise ModelConfigError(str(exc)) from None
