"""Stand-ins for prompt flow's connection classes (``promptflow.connections``).

A Python node parameter annotated with one of them takes a connection *name* in flow.dag.yaml
and receives the object, filled from connections.yaml with its secrets from the environment
(executor.py builds them). Same constructors and attributes as prompt flow's, so flow code reads
``connection.api_key``, ``connection.api_base`` or ``dict(custom)`` unchanged. Secrets never
appear in a ``repr`` (which is what a log line or an exception message would show).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.deployments.connections import NO_KEY_PLACEHOLDER, Connection
from shared.deployments.errors import ConnectionKeyMissingError
from shared.flow.errors import FlowProblem
from shared.flow.model import Flow

_HIDDEN = "******"


class _Connection:
    """The fields as attributes and as a read-only mapping (``dict(conn)`` gives them all)."""

    _secret_fields: frozenset[str] = frozenset({"api_key"})

    def __init__(self, name: str | None = None, **fields: Any) -> None:
        self.name = name
        self._fields = dict(fields)

    def __getattr__(self, key: str) -> Any:
        fields = self.__dict__.get("_fields", {})
        if key in fields:
            return fields[key]
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in ("name", "_fields"):
            object.__setattr__(self, key, value)
        else:
            self._fields[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def keys(self) -> Any:
        return self._fields.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    def _secret(self, key: str) -> bool:
        return key in self._secret_fields

    def __repr__(self) -> str:
        shown = {k: (_HIDDEN if self._secret(k) and v is not None else v) for k, v in self._fields.items()}
        return f"{type(self).__name__}(name={self.name!r}, {shown})"


class OpenAIConnection(_Connection):
    def __init__(
        self, api_key: str, organization: str | None = None, base_url: str | None = None,
        name: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(name, api_key=api_key, organization=organization, base_url=base_url, api_type="openai",
                         **kwargs)


class AzureOpenAIConnection(_Connection):
    def __init__(
        self, api_base: str, api_key: str | None = None, api_type: str = "azure",
        api_version: str | None = None, name: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(name, api_key=api_key, api_base=api_base, api_type=api_type, api_version=api_version,
                         **kwargs)


class CustomConnection(_Connection):
    """Configs and secrets, read as ``conn.key``, ``conn["key"]`` or ``dict(conn)`` (secrets first)."""

    def __init__(
        self, secrets: Mapping[str, str], configs: Mapping[str, Any] | None = None, name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **{**dict(configs or {}), **kwargs, **dict(secrets)})
        object.__setattr__(self, "secrets", dict(secrets))
        object.__setattr__(self, "configs", {**dict(configs or {}), **kwargs})

    def _secret(self, key: str) -> bool:
        return key in self.secrets

    def is_secret(self, key: str) -> bool:
        return key in self.secrets


CONNECTION_CLASSES: tuple[type[_Connection], ...] = (OpenAIConnection, AzureOpenAIConnection, CustomConnection)
STAND_INS: dict[str, type[_Connection]] = {cls.__name__: cls for cls in CONNECTION_CLASSES}


def connection_arguments(connection: Connection, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The constructor arguments of the prompt flow class for a connections.yaml entry (its
    secrets resolved from the environment: hand them to the class, never log them)."""
    if connection.type == "custom":
        secrets = {k: v.get_secret_value() for k, v in connection.resolve_secrets(environ).items()}
        return {"secrets": secrets, "configs": dict(connection.configs or {}), "name": connection.name}
    key = connection.resolve_api_key(environ)
    api_key = key.get_secret_value() if key is not None else NO_KEY_PLACEHOLDER
    if connection.type == "azure_openai":
        return {"api_key": api_key, "api_base": connection.azure_endpoint, "api_type": "azure",
                "api_version": connection.api_version, "name": connection.name}
    return {"api_key": api_key, "base_url": connection.base_url, "name": connection.name}


ConnectionObjects = dict[tuple[str, str | None, str], tuple[type, dict[str, Any]]]


def node_connections(flow: Flow, connections: Mapping[str, Connection]) -> tuple[ConnectionObjects, list[FlowProblem]]:
    """(node, variant, parameter) -> (class, constructor arguments) for every Python node
    connection parameter, and the problems: a connection not given, of a type the parameter does
    not take, or whose secret variable is unset."""
    from shared.flow.python_inputs import CLASS_FOR_TYPE, connection_classes

    found: ConnectionObjects = {}
    problems: list[FlowProblem] = []
    for name in flow.node_order:
        for node in flow.all_nodes(name):
            for key, connection_name in node.connections.items():
                field = f"inputs.{key}"
                connection = connections.get(connection_name)
                if connection is None:
                    problems.append(FlowProblem(flow.name, name, field, f"no connection {connection_name!r} was given"))
                    continue
                accepted = connection_classes(node.tool.annotations.get(key) if node.tool else None)
                class_name = CLASS_FOR_TYPE[connection.type]
                if class_name not in accepted:
                    problems.append(FlowProblem(flow.name, name, field, f"connection {connection_name!r} is of type "
                                                f"{connection.type} (a {class_name}); the parameter takes a "
                                                f"{' or '.join(accepted)}"))
                    continue
                try:
                    arguments = connection_arguments(connection)
                except ConnectionKeyMissingError as exc:
                    problems.append(FlowProblem(flow.name, name, field, str(exc)))
                    continue
                found[(name, node.variant_id, key)] = (accepted[class_name] or STAND_INS[class_name], arguments)
    return found, problems
