"""The loaded form of a flow: immutable definitions the executor runs many times concurrently."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jinja2 import Template

from shared.flow.modules import display_module
from shared.flow.references import Reference

ValueType = Literal["string", "int", "double", "bool", "list", "object", "image"]
VALUE_TYPES: tuple[str, ...] = ("string", "int", "double", "bool", "list", "object", "image")
NodeType = Literal["llm", "prompt", "python"]
NODE_TYPES: tuple[str, ...] = ("llm", "prompt", "python")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class FlowInput:
    name: str
    type: ValueType
    default: Any = MISSING
    description: str | None = None
    is_chat_input: bool = False
    is_chat_history: bool = False

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class FlowOutput:
    name: str
    type: str | None
    reference: Reference
    is_chat_output: bool = False


@dataclass(frozen=True)
class Activate:
    """``activate: {when: ${...}, is: value}``: the node runs only when the value matches."""

    when: Reference
    is_value: Any


@dataclass(frozen=True)
class PythonTool:
    """The ``@tool`` function of a Python node's module."""

    function: Callable[..., Any]
    is_async: bool
    parameters: Mapping[str, bool]  # parameter name -> whether it has a default
    accepts_any: bool  # takes **kwargs, so any node input is welcome
    annotations: Mapping[str, Any] = field(default_factory=dict)  # parameter name -> its annotation

    @property
    def qualname(self) -> str:
        # Without the load's package (modules.py): the name the flow's author wrote.
        return f"{display_module(self.function.__module__)}.{self.function.__qualname__}"


@dataclass(frozen=True)
class LlmSettings:
    """An LLM node's model and request parameters, apart from its template variables.

    Values are literals already converted to the API's types, or :class:`Reference` objects
    converted at run time.
    """

    model: Any | None
    deployment_name: Any | None
    params: Mapping[str, Any]
    connection: str
    api: str = "chat"


@dataclass(frozen=True)
class Node:
    """One concrete node (for a node with variants: one variant of it)."""

    name: str
    type: NodeType
    source: Path
    # Input name -> literal value or Reference. For llm nodes, the template variables only.
    inputs: Mapping[str, Any]
    activate: Activate | None = None
    variant_id: str | None = None
    template: Template | None = None
    tool: PythonTool | None = None
    llm: LlmSettings | None = None
    # An evaluation flow's aggregation node: it runs once over a whole batch, never per request
    # (not in any plan). What it does online is issue 13's.
    aggregation: bool = False
    # Python node parameter -> the connection name it takes (python_inputs.py): the node gets the
    # connection object, built by the executor from connections.yaml.
    connections: Mapping[str, str] = field(default_factory=dict)

    def references(self) -> list[tuple[str, Reference]]:
        """(field, reference) of every reference the node reads, activate condition included."""
        found = [(f"inputs.{k}", v) for k, v in self.inputs.items() if isinstance(v, Reference)]
        if self.llm is not None:
            extra = {"model": self.llm.model, "deployment_name": self.llm.deployment_name, **self.llm.params}
            found += [(f"inputs.{k}", v) for k, v in extra.items() if isinstance(v, Reference)]
        if self.activate is not None:
            found.append(("activate.when", self.activate.when))
        return found

    def node_dependencies(self) -> set[str]:
        return {ref.node for _, ref in self.references() if ref.node is not None}


@dataclass(frozen=True)
class NodeVariants:
    default_variant_id: str
    variants: Mapping[str, Node]


@dataclass(frozen=True)
class Flow:
    """A flow folder, validated. ``node_order`` keeps the file's order of nodes."""

    name: str
    path: Path
    inputs: Mapping[str, FlowInput]
    outputs: Mapping[str, FlowOutput]
    node_order: tuple[str, ...]
    nodes: Mapping[str, Node]  # nodes without variants
    variants: Mapping[str, NodeVariants] = field(default_factory=dict)
    # Its one output ``output`` stands for a value, not a mapping (a prompty's answer): prompt
    # flow's /score answers with the value itself.
    single_output: bool = False

    @property
    def is_chat(self) -> bool:
        return any(i.is_chat_input for i in self.inputs.values())

    @property
    def chat_history_input(self) -> FlowInput | None:
        marked = [i for i in self.inputs.values() if i.is_chat_history]
        if marked:
            return marked[0]
        # Prompt flow's convention when nothing is marked: a chat flow's input named chat_history.
        candidate = self.inputs.get("chat_history")
        if candidate is not None and self.is_chat and candidate.type == "list":
            return candidate
        return None

    @property
    def aggregation_nodes(self) -> tuple[str, ...]:
        return tuple(n for n in self.node_order if any(node.aggregation for node in self.all_nodes(n)))

    def variant_ids(self) -> set[str]:
        return {vid for group in self.variants.values() for vid in group.variants}

    def all_nodes(self, name: str) -> list[Node]:
        """Every definition of a node: itself, or each of its variants."""
        if name in self.nodes:
            return [self.nodes[name]]
        return list(self.variants[name].variants.values())
