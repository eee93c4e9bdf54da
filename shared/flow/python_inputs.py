"""What a Python node's parameter annotations mean for its literal inputs, as in prompt flow.

- ``int``, ``float``, ``bool``, ``str``, ``list``, ``dict`` (also ``List[...]``, ``Dict[...]``,
  ``Optional[...]``): a literal written in flow.dag.yaml is converted to that type at load
  (``max_tokens: "120"`` becomes 120), with the leniency of flow-file defaults (inputs.py).
- A prompt flow connection class (``CustomConnection``, ``OpenAIConnection``,
  ``AzureOpenAIConnection``, or a Union of them): the literal is a connection *name*; the node
  gets the connection object (executor.py).
Other annotations (or none) leave the literal as YAML read it.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Collection
from typing import Any

from shared.flow.inputs import convert_default
from shared.flow.model import PythonTool
from shared.flow.references import Reference

CONNECTION_CLASS_NAMES = ("CustomConnection", "OpenAIConnection", "AzureOpenAIConnection")
# connections.yaml type -> the prompt flow class a Python node gets for it.
CLASS_FOR_TYPE = {
    "custom": "CustomConnection",
    "openai": "OpenAIConnection",
    "openai_compatible": "OpenAIConnection",
    "azure_openai": "AzureOpenAIConnection",
}
_KINDS: dict[Any, str] = {str: "string", int: "int", float: "double", bool: "bool", list: "list", dict: "object"}


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _is_connection_class(candidate: Any) -> bool:
    # The stand-in's classes or prompt flow's own (where it is installed): by name and package.
    return (isinstance(candidate, type) and candidate.__name__ in CONNECTION_CLASS_NAMES
            and (candidate.__module__.startswith("promptflow") or candidate.__module__ == "shared.flow.pf_connections"))


def connection_classes(annotation: Any) -> dict[str, type | None]:
    """Class name -> class of the connection types a parameter takes (empty: not a connection;
    None: named in an annotation that did not resolve, the stand-in class serves)."""
    if isinstance(annotation, str):
        return {n: None for n in CONNECTION_CLASS_NAMES if re.search(rf"\b{n}\b", annotation)}
    members = [m for m in _members(annotation) if m is not type(None)]
    return {m.__name__: m for m in members if _is_connection_class(m)}


def literal_kind(annotation: Any) -> str | None:
    """The flow value type a literal converts to for this annotation, None for no conversion."""
    members = [m for m in _members(annotation) if m is not type(None)]
    if len(members) != 1:
        return None
    member = typing.get_origin(members[0]) or members[0]
    return _KINDS.get(member)


def convert_literal(annotation: Any, value: Any) -> Any:
    """``value`` in the annotated type (None stays None); raises ValueError naming the value."""
    kind = literal_kind(annotation)
    if kind is None or value is None:
        return value
    return convert_default(kind, value)


def annotations_of(function: Any, parameters: typing.Iterable[str]) -> dict[str, Any]:
    """Each parameter's annotation, resolved where ``from __future__ import annotations`` left text."""
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation naming something not importable: keep the raw ones
        hints = dict(getattr(function, "__annotations__", {}))
    return {name: hints[name] for name in parameters if name in hints}


def typed_inputs(
    tool: PythonTool,
    inputs: dict[str, Any],
    connections: Collection[str] | None,
    connection_type: Callable[[str], str | None],
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Converts a node's literal inputs to their parameters' annotated types (in ``inputs``).

    Returns parameter -> connection name for the parameters annotated with a connection class,
    and (input, reason) problems: a literal that does not convert; a connection input that is no
    name, names no connection of ``connections`` (when given) or one of a type (``connection_type``
    tells it, None when unknown) the parameter does not take.
    """
    function = getattr(tool.function, "__name__", "the tool")
    found: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, value in inputs.items():
        if key not in tool.annotations:
            continue
        annotation = tool.annotations[key]
        accepted = connection_classes(annotation)
        if not accepted:
            if not isinstance(value, Reference):
                try:
                    inputs[key] = convert_literal(annotation, value)
                except ValueError as exc:
                    problems.append((key, f"{exc} ({function}() annotates {key!r} as {literal_kind(annotation)})"))
            continue
        wanted = " or ".join(accepted)
        if not isinstance(value, str) or not value.strip():
            shown = value if isinstance(value, Reference) else repr(value)
            problems.append((key, f"{function}() takes a {wanted} here: write a connection name, not {shown}"))
            continue
        found[key] = value
        if connections is None:
            continue  # the executor checks it, given the connections
        if value not in connections:
            known = ", ".join(sorted(connections)) or "none"
            problems.append((key, f"{value!r} is not a known connection (known: {known})"))
            continue
        kind = connection_type(value)
        if kind is not None and CLASS_FOR_TYPE.get(kind) not in accepted:
            problems.append((key, f"connection {value!r} is of type {kind} (a {CLASS_FOR_TYPE.get(kind)}); "
                                  f"the parameter takes a {wanted}"))
    return found, problems
