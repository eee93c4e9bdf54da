"""Prompt flow's ``${...}`` references: ``${inputs.x}``, ``${node.output}``, ``${node.output.a[0]['b']}``.

As in prompt flow, a value is a reference only when the whole string is ``${...}``; text with a
reference inside it ("Hello ${inputs.name}") is a literal. ``${flow.x}`` is prompt flow's older
spelling of ``${inputs.x}`` and is accepted too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_WHOLE_REFERENCE = re.compile(r"^\$\{(\S+)\}$")
# Property steps, the way prompt flow reads them: a name, ['quoted key'] or [index].
_PROPERTY_STEP = re.compile(r"(\w+)|\['(.*?)'\]|\[\"(.*?)\"\]|\[(\d+)\]")
_FLOW_INPUT_PREFIXES = ("inputs.", "flow.")
OUTPUT_SECTION = "output"


class ReferenceSyntaxError(ValueError):
    """A ``${...}`` value that cannot be read."""


class PropertyError(LookupError):
    """A reference's property path does not exist in the value it was applied to."""


@dataclass(frozen=True)
class Reference:
    """A parsed reference: to a flow input (``node is None``) or to a node's output."""

    text: str
    node: str | None
    name: str  # the flow input name, or the node name
    path: tuple[str | int, ...] = ()

    @property
    def is_input(self) -> bool:
        return self.node is None

    def __str__(self) -> str:
        return self.text


def parse_value(value: Any) -> Any:
    """A :class:`Reference` when ``value`` is a whole ``${...}`` string, else ``value`` unchanged."""
    if not isinstance(value, str):
        return value
    match = _WHOLE_REFERENCE.match(value.strip())
    if match is None:
        return value
    return parse_reference(match.group(1), value.strip())


def parse_reference(body: str, text: str) -> Reference:
    for prefix in _FLOW_INPUT_PREFIXES:
        if body.startswith(prefix):
            name = body[len(prefix):]
            if not name:
                raise ReferenceSyntaxError(f"{text} names no input")
            return Reference(text=text, node=None, name=name)
    node, dot, rest = body.partition(".")
    if not node or not dot:
        raise ReferenceSyntaxError(
            f"{text} is neither ${{inputs.<name>}} nor ${{<node>.output[.<property>]}}"
        )
    section, _, prop = rest.partition(".")
    bracket = section.find("[")
    if bracket != -1:  # ${node.output[0]}: the property starts right after the section
        section, prop = section[:bracket], section[bracket:] + ("." + prop if prop else "")
    if section != OUTPUT_SECTION:
        raise ReferenceSyntaxError(f"{text}: only the 'output' of a node can be referenced, not {section!r}")
    return Reference(text=text, node=node, name=node, path=parse_property_path(prop, text))


def parse_property_path(prop: str, text: str) -> tuple[str | int, ...]:
    steps: list[str | int] = []
    position = 0
    for match in _PROPERTY_STEP.finditer(prop):
        gap = prop[position:match.start()]
        if gap.strip(".") or gap.count(".") > 1:
            raise ReferenceSyntaxError(f"{text}: cannot read the property path {prop!r}")
        name, single, double, index = match.groups()
        if index is not None:
            steps.append(int(index))
        else:
            steps.append(name if name is not None else single if single is not None else double)
        position = match.end()
    if prop[position:].strip("."):
        raise ReferenceSyntaxError(f"{text}: cannot read the property path {prop!r}")
    return tuple(steps)


def follow_path(value: Any, path: tuple[str | int, ...], text: str) -> Any:
    """Apply a property path: mapping keys and sequence indexes, attributes for other objects."""
    for step in path:
        try:
            if isinstance(value, Mapping):
                value = value[step] if step in value else value[str(step)]
            elif isinstance(step, int) and isinstance(value, list | tuple | str):
                value = value[step]
            elif isinstance(step, str):
                value = getattr(value, step)
            else:
                raise TypeError(type(value).__name__)
        except (KeyError, IndexError, AttributeError, TypeError):
            shown = type(value).__name__
            raise PropertyError(f"{text}: {step!r} is not in the referenced value (a {shown})") from None
    return value
