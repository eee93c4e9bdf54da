"""Load and validate a flow folder written in prompt flow's ``flow.dag.yaml`` format.

Every problem found is collected and raised together as one :class:`FlowError`, each naming the
flow, the node and the field, so one start-up shows everything to fix. The nodes themselves
(each node's source, template, tool, connection) are read by node_loader.py.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from shared.flow.errors import FlowError, FlowProblem
from shared.flow.graph import find_cycle
from shared.flow.includes import FIELD as INCLUDES_FIELD
from shared.flow.includes import build_snapshot, include_sources, keep_while, remove_snapshot
from shared.flow.inputs import convert_default
from shared.flow.model import MISSING, VALUE_TYPES, Flow, FlowInput, FlowOutput
from shared.flow.modules import FlowModules
from shared.flow.node_loader import FLOW_FILE, NodeLoader
from shared.flow.python_node import flow_modules
from shared.flow.references import Reference, ReferenceSyntaxError, parse_value


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (only true/false), as prompt flow reads flows.

    Under YAML 1.1 an input named ``on`` or a value ``no`` would silently become a boolean.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_flow(path: Path | str, *, name: str | None = None, connections: Collection[str] | None = None) -> Flow:
    """The flow in folder ``path`` (or the ``flow.dag.yaml`` itself); raises FlowError. A folder
    with a ``flow.flex.yaml`` (or that file) is a flex flow (flex_loader.py).

    ``connections``: when given, every llm node's connection (and every Python node's connection
    input) must be one of these names; given as the mapping name -> Connection (connections.yaml),
    their types are checked too: an llm node needs an LLM endpoint, a Python node parameter the
    class it is annotated with.
    """
    path = Path(path)
    from shared.flow.flex_loader import is_flex_folder, load_flex_flow

    if is_flex_folder(path):  # a flex flow (flow.flex.yaml): a FlexFlow, run by FlexExecutor
        return load_flex_flow(path, name, connections)
    folder = path.parent if path.is_file() else path
    return _FlowLoader(folder, name or folder.resolve().name, connections).load()


class _FlowLoader(NodeLoader):
    """One load of a flow folder: the file as a whole here, its nodes in NodeLoader (node_loader.py)."""

    def __init__(self, folder: Path, name: str, connections: Collection[str] | None) -> None:
        self.folder = folder
        self.root = folder  # where node files are read: the folder, or its snapshot with the includes
        self.name = name
        self.connections = connections
        self.problems: list[FlowProblem] = []
        self._modules: FlowModules | None = None

    @property
    def modules(self) -> FlowModules:
        """This load's own import namespace (modules.py): a reload imports changed code afresh."""
        if self._modules is None:
            self._modules = flow_modules(self.root)
        return self._modules

    def problem(self, node: str | None, field: str, reason: str) -> None:
        self.problems.append(FlowProblem(self.name, node, field, reason))

    def fail_if_problems(self) -> None:
        if self.problems:
            raise FlowError(self.problems)

    def load(self) -> Flow:
        data = self._read()
        sources, include_problems = include_sources(self.folder, data.get(INCLUDES_FIELD))
        for field, reason in include_problems:
            self.problem(None, field, reason)
        if sources and not include_problems:
            # Nodes read their files from the flow folder merged with its includes, as prompt flow runs it.
            self.root = build_snapshot(self.folder, sources)
        try:
            flow = self._load(data)
        except BaseException:
            if self.root != self.folder:
                remove_snapshot(self.root)
            if self._modules is not None:
                self._modules.release()
            raise
        if self.root != self.folder:
            keep_while(flow, self.root)
        if self._modules is not None:
            weakref.finalize(flow, self._modules.release)  # a reload's old modules go with the old flow
        return flow

    def _load(self, data: dict[str, Any]) -> Flow:
        if data.get("environment_variables"):
            self.problem(None, "environment_variables", "not supported: set them in the gateway's environment")
        inputs = self._inputs(data.get("inputs"))
        outputs = self._outputs(data.get("outputs"))
        node_order, nodes, wants_variants = self._nodes(data.get("nodes"))
        variants = self._node_variants(data.get("node_variants"), wants_variants)
        self.fail_if_problems()  # references are only worth checking between well-formed parts
        flow = Flow(self.name, self.folder.resolve(), inputs, outputs, node_order, nodes, variants)
        self._check_references(flow)
        self.fail_if_problems()
        self._check_cycles(flow)
        self.fail_if_problems()
        return flow

    def _read(self) -> dict[str, Any]:
        flow_file = self.folder / FLOW_FILE
        if not flow_file.is_file():
            raise FlowError.single(self.name, None, FLOW_FILE, f"not found in {self.folder}")
        try:
            data = yaml.load(flow_file.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise FlowError.single(self.name, None, FLOW_FILE, f"is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise FlowError.single(self.name, None, FLOW_FILE, "must be a mapping with inputs, outputs and nodes")
        return data

    def _mapping(self, value: Any, node: str | None, field: str) -> dict[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(node, field, "must be a mapping")
            return None
        return value

    # ---- inputs and outputs

    def _inputs(self, raw: Any) -> dict[str, FlowInput]:
        inputs: dict[str, FlowInput] = {}
        for key, spec in (self._mapping(raw, None, "inputs") or {}).items():
            where = f"inputs.{key}"
            if not isinstance(spec, dict):
                self.problem(None, where, "must be a mapping with a type")
                continue
            kind = spec.get("type")
            if kind not in VALUE_TYPES:
                self.problem(None, f"{where}.type", f"{kind!r} is not one of {', '.join(VALUE_TYPES)}")
                continue
            default = MISSING
            if "default" in spec and spec["default"] is not None:
                try:
                    default = convert_default(kind, spec["default"])
                except ValueError as exc:
                    self.problem(None, f"{where}.default", str(exc))
                    continue
            history = bool(spec.get("is_chat_history", False))
            if history and kind != "list":
                self.problem(None, f"{where}.is_chat_history", "a chat history input must have type list")
            inputs[str(key)] = FlowInput(
                name=str(key), type=kind, default=default, description=spec.get("description"),
                is_chat_input=bool(spec.get("is_chat_input", False)), is_chat_history=history,
            )
        for flag in ("is_chat_input", "is_chat_history"):
            marked = [i.name for i in inputs.values() if getattr(i, flag)]
            if len(marked) > 1:
                self.problem(None, f"inputs.{marked[1]}.{flag}", f"only one input may set {flag} (also {marked[0]!r})")
        return inputs

    def _outputs(self, raw: Any) -> dict[str, FlowOutput]:
        outputs: dict[str, FlowOutput] = {}
        mapping = self._mapping(raw, None, "outputs")
        if mapping is not None and not mapping:
            self.problem(None, "outputs", "the flow has no outputs")
        for key, spec in (mapping or {}).items():
            where = f"outputs.{key}"
            if not isinstance(spec, dict):
                self.problem(None, where, "must be a mapping with a reference")
                continue
            reference = self._reference(spec.get("reference"), None, f"{where}.reference")
            if reference is None:
                continue
            outputs[str(key)] = FlowOutput(
                name=str(key), type=spec.get("type"), reference=reference,
                is_chat_output=bool(spec.get("is_chat_output", False)),
            )
        marked = [o.name for o in outputs.values() if o.is_chat_output]
        if len(marked) > 1:
            self.problem(None, f"outputs.{marked[1]}.is_chat_output", f"only one output may be the chat output (also {marked[0]!r})")
        return outputs

    def _reference(self, value: Any, node: str | None, field: str) -> Reference | None:
        try:
            parsed = parse_value(value)
        except ReferenceSyntaxError as exc:
            self.problem(node, field, str(exc))
            return None
        if not isinstance(parsed, Reference):
            self.problem(node, field, f"must be a reference like ${{inputs.x}} or ${{node.output}}, not {value!r}")
            return None
        return parsed

    # ---- whole-flow checks

    def _check_references(self, flow: Flow) -> None:
        names = set(flow.node_order)
        aggregation = set(flow.aggregation_nodes)
        for node_name in flow.node_order:
            for node in flow.all_nodes(node_name):
                prefix = f"variants.{node.variant_id}." if node.variant_id else ""
                for field, ref in node.references():
                    self._check_reference(flow, names, ref, node_name, prefix + field)
                    if ref.node in aggregation and node_name not in aggregation:
                        # As prompt flow: only another aggregation node may read one's output.
                        self.problem(node_name, prefix + field, f"{ref} is an aggregation node's output, which "
                                     "only another aggregation node may read (it runs once per batch)")
        for output in flow.outputs.values():
            self._check_reference(flow, names, output.reference, None, f"outputs.{output.name}.reference")
            if output.reference.node in aggregation:
                self.problem(None, f"outputs.{output.name}.reference", f"{output.reference} is an aggregation "
                             "node's output; a flow output cannot reference one (it runs once per batch)")

    def _check_reference(self, flow: Flow, names: set[str], ref: Reference, node: str | None, field: str) -> None:
        if ref.is_input:
            if ref.name not in flow.inputs:
                known = ", ".join(flow.inputs) or "none"
                self.problem(node, field, f"{ref} names no flow input (inputs: {known})")
        elif ref.node not in names:
            self.problem(node, field, f"{ref} names no node of the flow")
        elif ref.node == node:
            self.problem(node, field, f"{ref}: a node cannot read its own output")

    def _check_cycles(self, flow: Flow) -> None:
        # Edges of every variant together: a cycle through any variant combination is reported.
        edges: dict[str, list[tuple[str, str]]] = {}
        for node_name in flow.node_order:
            edges[node_name] = []
            for node in flow.all_nodes(node_name):
                prefix = f"variants.{node.variant_id}." if node.variant_id else ""
                edges[node_name] += [(ref.node, prefix + field) for field, ref in node.references() if ref.node]
        cycle = find_cycle(flow.node_order, edges)
        if cycle is not None:
            path, field = cycle
            self.problem(path[-2], field, f"the nodes read each other in a cycle: {' -> '.join(path)}")


def flow_connections(flow: Flow) -> set[str]:
    """The connection names the flow's llm nodes use, in any variant."""
    return {
        node.llm.connection
        for name in flow.node_order
        for node in flow.all_nodes(name)
        if node.llm is not None
    }
