"""A class entry's ``init`` values, resolved as prompt flow's executor resolves them.

The values come from the deployment file (``init``, and a variant's ``init`` over it), else from
flow.flex.yaml's ``sample.init`` (what ``pf flow serve`` uses when given none). By the parameter's
annotation in ``__init__``:

- ``AzureOpenAIModelConfiguration`` / ``OpenAIModelConfiguration``: a mapping naming a
  connection of connections.yaml (pf_model_config.py fills endpoint and key);
- ``CustomConnection``, ``OpenAIConnection``, ``AzureOpenAIConnection``: a connection *name*; the
  parameter gets the connection object (pf_connections.py), secrets from the environment;
- ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``: the value converted with the leniency
  of flow-file defaults (inputs.py), since it is written in a YAML file.
Every problem names ``init.<parameter>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from shared.deployments.connections import Connection
from shared.deployments.errors import ConnectionKeyMissingError
from shared.flow.flex import FlexFlow
from shared.flow.pf_connections import STAND_INS, connection_arguments
from shared.flow.pf_model_config import MODEL_CONFIG_CLASSES, ModelConfigError, resolve_model_config
from shared.flow.python_inputs import CLASS_FOR_TYPE, connection_classes, convert_literal


def _model_config_class(annotation: Any) -> str | None:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    return name if name in MODEL_CONFIG_CLASSES else None


def resolve_init(
    flow: FlexFlow, values: Mapping[str, Any] | None, connections: Mapping[str, Connection],
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(keyword arguments for the entry class, problems as (field, reason))."""
    chosen = dict(values) if values else dict(flow.sample_init or {})
    problems: list[tuple[str, str]] = []
    if not flow.is_class:
        if values:
            problems.append(("init", f"{flow.entry_text} is a function: init values are for a class entry's __init__"))
        return {}, problems
    parameters = flow.init_parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    resolved: dict[str, Any] = {}
    for key, value in chosen.items():
        parameter = parameters.get(key)
        if parameter is None or parameter.kind is parameter.VAR_KEYWORD:
            if takes_any:
                resolved[key] = value
            else:
                problems.append((f"init.{key}", f"{flow.entry.__name__}.__init__() has no parameter {key!r}"))
            continue
        try:
            resolved[key] = _resolve(flow.init_annotations.get(key, inspect.Parameter.empty), value, connections,
                                     environ)
        except (ModelConfigError, ConnectionKeyMissingError, ValueError) as exc:
            problems.append((f"init.{key}", str(exc)))
    for key, parameter in parameters.items():
        if (parameter.default is inspect.Parameter.empty and parameter.kind is not parameter.VAR_KEYWORD
                and key not in chosen):
            problems.append((f"init.{key}", f"{flow.entry.__name__}.__init__() needs it: give it in the "
                             "deployment's init (or the flow's sample.init)"))
    return resolved, problems


def _resolve(annotation: Any, value: Any, connections: Mapping[str, Connection],
             environ: Mapping[str, str] | None) -> Any:
    model_config = _model_config_class(annotation)
    if model_config is not None:
        return resolve_model_config(model_config, value, connections, environ)
    accepted = connection_classes(annotation)
    if accepted:
        if not isinstance(value, str) or value not in connections:
            known = ", ".join(sorted(connections)) or "none"
            raise ValueError(f"takes a connection name of connections.yaml, not {value!r} (known: {known})")
        connection = connections[value]
        class_name = CLASS_FOR_TYPE[connection.type]
        if class_name not in accepted:
            raise ValueError(f"connection {value!r} is of type {connection.type} (a {class_name}); the parameter "
                             f"takes a {' or '.join(accepted)}")
        cls = accepted[class_name] or STAND_INS[class_name]
        return cls(**connection_arguments(connection, environ))
    if annotation is inspect.Parameter.empty:
        return value
    return convert_literal(annotation, value)
