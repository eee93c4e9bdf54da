"""Load and validate a flow folder written in prompt flow's ``flow.dag.yaml`` format.

Every problem found is collected and raised together as one :class:`FlowError`, each naming the
flow, the node and the field, so one start-up shows everything to fix.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError

from shared.flow import llm_params, package_tools
from shared.flow.errors import FlowError, FlowProblem
from shared.flow.graph import find_cycle
from shared.flow.includes import FIELD as INCLUDES_FIELD
from shared.flow.includes import build_snapshot, include_sources, keep_while, remove_snapshot
from shared.flow.inputs import convert_default
from shared.flow.model import (
    MISSING,
    NODE_TYPES,
    VALUE_TYPES,
    Activate,
    Flow,
    FlowInput,
    FlowOutput,
    LlmSettings,
    Node,
    NodeVariants,
)
from shared.flow.modules import FlowModules
from shared.flow.python_inputs import typed_inputs
from shared.flow.python_node import MissingModuleError, ToolLoadError, flow_modules, load_tool
from shared.flow.references import Reference, ReferenceSyntaxError, parse_value
from shared.flow.requirements import DEFAULT_REQUIREMENTS, INSTALL_COMMAND, requirements_file
from shared.flow.template import compile_template

FLOW_FILE = "flow.dag.yaml"
PACKAGE_TOOL = "\0package_tool"  # set on the llm spec a package tool becomes; no YAML key can be it
# Names end up inside ${node.output} references, which split at dots and brackets.
_NAME = re.compile(r"^[^\s.${}\[\]'\"]+$")


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


def missing_module_reason(exc: MissingModuleError, folder: Path) -> str:
    """Why a Python node's module did not import, and how to fix it: the requirements file that
    should list it (requirements.py: the one flow.dag.yaml names, else requirements.txt) and the
    command that installs it."""
    if exc.module.partition(".")[0] == "promptflow":
        # `flows install` never installs prompt flow's packages: installing would not help.
        return (f"module {exc.module!r} is not one PromptPulse's stand-in for prompt flow provides "
                "(docs/flows.md lists what it provides)")
    requirements = requirements_file(folder) or folder / DEFAULT_REQUIREMENTS
    listed = "" if requirements.is_file() else " (that file does not exist yet)"
    return (f"module {exc.module!r} is not installed: list its package in {requirements}{listed} "
            f"and run `{INSTALL_COMMAND}`")


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


class _FlowLoader:
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

    # ---- nodes

    def _nodes(self, raw: Any) -> tuple[tuple[str, ...], dict[str, Node], list[str]]:
        order: list[str] = []
        nodes: dict[str, Node] = {}
        wants_variants: list[str] = []
        if not isinstance(raw, list) or not raw:
            self.problem(None, "nodes", "must be a non-empty list of nodes")
            return (), nodes, wants_variants
        for index, spec in enumerate(raw):
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                self.problem(None, f"nodes[{index}].name", "every node needs a name")
                continue
            name = spec["name"]
            if not _NAME.match(name):
                self.problem(name, "name", "may not contain spaces, dots, brackets, quotes or ${}")
                continue
            if name in order:
                self.problem(name, "name", "another node has the same name")
                continue
            order.append(name)
            if spec.get("use_variants"):
                wants_variants.append(name)
                continue
            node = self._node(spec, name, None, "")
            if node is not None:
                nodes[name] = node
        return tuple(order), nodes, wants_variants

    def _node_variants(self, raw: Any, wants: list[str]) -> dict[str, NodeVariants]:
        groups: dict[str, NodeVariants] = {}
        mapping = self._mapping(raw, None, "node_variants") or {}
        for name in wants:
            if name not in mapping:
                self.problem(name, "use_variants", "the node uses variants but node_variants has no entry for it")
        for name, spec in mapping.items():
            where = f"node_variants.{name}"
            if name not in wants:
                self.problem(name, where, "no node of this name sets use_variants: true")
                continue
            if not isinstance(spec, dict) or not isinstance(spec.get("variants"), dict) or not spec["variants"]:
                self.problem(name, f"{where}.variants", "must map variant ids to {node: ...}")
                continue
            default = spec.get("default_variant_id")
            if default not in spec["variants"]:
                self.problem(name, f"{where}.default_variant_id",
                             f"{default!r} is not one of the variants ({', '.join(map(str, spec['variants']))})")
            variants: dict[str, Node] = {}
            for variant_id, variant in spec["variants"].items():
                vwhere = f"variants.{variant_id}"
                if not isinstance(variant, dict) or not isinstance(variant.get("node"), dict):
                    self.problem(name, f"{vwhere}.node", "must be a mapping with the variant's node definition")
                    continue
                node = self._node(variant["node"], name, str(variant_id), f"{vwhere}.")
                if node is not None:
                    variants[str(variant_id)] = node
            if default in variants:
                groups[name] = NodeVariants(default_variant_id=str(default), variants=variants)
        return groups

    def _node(self, spec: dict[str, Any], name: str, variant_id: str | None, prefix: str) -> Node | None:
        if package_tools.is_package_source(spec):
            return self._package_node(spec, name, variant_id, prefix)
        before = len(self.problems)
        kind = spec.get("type")
        if kind not in NODE_TYPES:
            self.problem(name, f"{prefix}type", f"{kind!r} is not a supported node type ({', '.join(NODE_TYPES)})")
            return None
        if spec.get("skip"):
            self.problem(name, f"{prefix}skip", "the deprecated skip config is not supported; use activate")
        aggregation = spec.get("aggregation", False)
        if not isinstance(aggregation, bool):
            self.problem(name, f"{prefix}aggregation", f"must be true or false, not {aggregation!r}")
        source = self._source(spec.get("source"), name, prefix, ".py" if kind == "python" else None)
        raw_inputs = self._mapping(spec.get("inputs"), name, f"{prefix}inputs")
        inputs: dict[str, Any] = {}
        for key, value in (raw_inputs or {}).items():
            try:
                inputs[str(key)] = parse_value(value)
            except ReferenceSyntaxError as exc:
                self.problem(name, f"{prefix}inputs.{key}", str(exc))
        activate = self._activate(spec.get("activate"), name, prefix)
        if source is None or len(self.problems) > before:
            return None
        common = {"name": name, "type": kind, "source": source, "activate": activate, "variant_id": variant_id,
                  "aggregation": aggregation}
        if kind == "python":
            return self._python_node(common, inputs, prefix)
        embedding = spec.get("api") == "embedding" and PACKAGE_TOOL in spec
        template = None if embedding else self._template(source, name, prefix)
        if template is None and not embedding:
            return None
        if kind == "prompt":
            return Node(inputs=inputs, template=template, **common)
        return self._llm_node(common, spec, inputs, template, prefix)

    def _package_node(self, spec: dict[str, Any], name: str, variant_id: str | None, prefix: str) -> Node | None:
        """A promptflow-tools tool that calls a model (package_tools.py), as an llm node."""
        source = spec["source"]
        api = package_tools.tool_api(source.get("tool"))
        if api is None:
            self.problem(name, f"{prefix}source.tool", package_tools.unsupported_reason(source.get("tool")))
            return None
        raw_inputs = dict(self._mapping(spec.get("inputs"), name, f"{prefix}inputs") or {})
        connection = spec.get("connection") or raw_inputs.pop("connection", None)
        raw_inputs.pop("connection", None)
        as_llm = {**spec, "type": "llm", "api": api, "connection": connection, "inputs": raw_inputs,
                  PACKAGE_TOOL: source.get("tool")}
        if api == "embedding":  # no template (the node's ``input`` is embedded): the flow file stands in
            as_llm["source"] = {"type": "code", "path": FLOW_FILE}
        else:
            as_llm["source"] = {"type": "code", "path": source.get("path")}
        return self._node(as_llm, name, variant_id, prefix)

    def _source(self, raw: Any, name: str, prefix: str, suffix: str | None) -> Path | None:
        if not isinstance(raw, dict) or raw.get("type") != "code" or not isinstance(raw.get("path"), str):
            kind = raw.get("type") if isinstance(raw, dict) else None
            reason = (f"source type {kind!r} (a built-in tool package) is not supported; use type: code"
                      if kind else "must be {type: code, path: <file in the flow folder>}")
            self.problem(name, f"{prefix}source", reason)
            return None
        path = self.root / raw["path"]
        if not path.is_file():
            where = f"{self.folder} nor in its {INCLUDES_FIELD}" if self.root != self.folder else str(self.folder)
            self.problem(name, f"{prefix}source.path", f"{raw['path']!r} does not exist in {where}")
            return None
        if suffix is not None and path.suffix != suffix:
            self.problem(name, f"{prefix}source.path", f"{raw['path']!r} is not a {suffix} file")
            return None
        return path

    def _activate(self, raw: Any, name: str, prefix: str) -> Activate | None:
        if raw is None:
            return None
        where = f"{prefix}activate"
        if not isinstance(raw, dict) or "when" not in raw or "is" not in raw:
            self.problem(name, where, "must be {when: ${...}, is: <value>}")
            return None
        when = self._reference(raw["when"], name, f"{where}.when")
        return Activate(when=when, is_value=raw["is"]) if when is not None else None

    def _template(self, source: Path, name: str, prefix: str) -> Any:
        try:
            return compile_template(source.read_text(encoding="utf-8"))
        except TemplateSyntaxError as exc:
            self.problem(name, f"{prefix}source.path", f"template error on line {exc.lineno}: {exc.message}")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(name, f"{prefix}source.path", f"cannot be read: {exc}")
        return None

    def _python_node(self, common: dict[str, Any], inputs: dict[str, Any], prefix: str) -> Node | None:
        name = common["name"]
        try:
            tool = load_tool(common["source"], self.modules)
        except MissingModuleError as exc:
            self.problem(name, f"{prefix}source.path", missing_module_reason(exc, self.folder))
            return None
        except ToolLoadError as exc:
            self.problem(name, f"{prefix}source.path", str(exc))
            return None
        function = getattr(tool.function, "__name__", "the tool")
        connections, problems = typed_inputs(tool, inputs, self.connections, self._connection_type)
        for key, reason in problems:
            self.problem(name, f"{prefix}inputs.{key}", reason)
        if not tool.accepts_any:
            for key in inputs:
                if key not in tool.parameters:
                    self.problem(name, f"{prefix}inputs.{key}", f"{function}() has no parameter {key!r}")
        missing = [p for p, has_default in tool.parameters.items() if not has_default and p not in inputs]
        if missing:
            self.problem(name, f"{prefix}inputs", f"{function}() needs {', '.join(map(repr, missing))}")
        return Node(inputs=inputs, tool=tool, connections=connections, **common)

    def _connection_type(self, connection: str) -> str | None:
        """The connections.yaml type of a connection, when the loader was given the connections."""
        if isinstance(self.connections, Mapping):
            return getattr(self.connections.get(connection), "type", None)
        return None

    def _llm_node(
        self, common: dict[str, Any], spec: dict[str, Any], inputs: dict[str, Any], template: Any, prefix: str
    ) -> Node | None:
        name = common["name"]
        api = spec.get("api")
        # "embedding" only comes from the embedding package tool (_package_node), never from YAML.
        if api not in ("chat", "completion") and not (api == "embedding" and PACKAGE_TOOL in spec):
            reason = "is required: chat or completion" if api is None else f"{api!r} is not supported (chat, completion)"
            self.problem(name, f"{prefix}api", reason)
        connection = spec.get("connection")
        if not isinstance(connection, str) or not connection.strip():
            self.problem(name, f"{prefix}connection", "an llm node needs a connection name")
        elif self.connections is not None and connection not in self.connections:
            known = ", ".join(sorted(self.connections)) or "none"
            self.problem(name, f"{prefix}connection", f"{connection!r} is not a known connection (known: {known})")
        elif self._connection_type(connection) == "custom":
            self.problem(name, f"{prefix}connection", f"{connection!r} is a custom connection, not an LLM endpoint")
        raw_params, variables = llm_params.split_inputs(inputs)
        params, bad = llm_params.convert_literals(raw_params, api if api == "completion" else "chat")
        for key, reason in bad.items():
            self.problem(name, f"{prefix}inputs.{key}", reason)
        model = params.pop("model", None)
        deployment = params.pop("deployment_name", None)
        if model is None and deployment is None:
            self.problem(name, f"{prefix}inputs", "an llm node needs inputs.model or inputs.deployment_name")
        if bad or api not in ("chat", "completion", "embedding") or not isinstance(connection, str):
            return None
        settings = LlmSettings(model=model, deployment_name=deployment, params=params, connection=connection.strip(),
                               api=api)
        return Node(inputs=variables, template=template, llm=settings, **common)

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

