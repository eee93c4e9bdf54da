"""The nodes of a ``flow.dag.yaml``: its ``nodes`` and ``node_variants`` sections read into :class:`Node`
objects (Python, prompt and llm nodes, and the promptflow-tools package tools that become llm nodes).

Apart from loader.py, which reads the file as a whole (inputs, outputs, includes, the checks across
nodes): a node's own checks (its source file, template, tool signature, connection and llm
parameters) are most of the loading, and :class:`NodeLoader` is the part of the flow loader that
does them, mixed into it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError

from shared.flow import llm_params, package_tools
from shared.flow.errors import FlowProblem
from shared.flow.includes import FIELD as INCLUDES_FIELD
from shared.flow.model import NODE_TYPES, Activate, LlmSettings, Node, NodeVariants
from shared.flow.modules import FlowModules
from shared.flow.python_inputs import typed_inputs
from shared.flow.python_node import MissingModuleError, ToolLoadError, load_tool
from shared.flow.references import Reference, ReferenceSyntaxError, parse_value
from shared.flow.requirements import DEFAULT_REQUIREMENTS, INSTALL_COMMAND, requirements_file
from shared.flow.template import compile_template

FLOW_FILE = "flow.dag.yaml"
PACKAGE_TOOL = "\0package_tool"  # set on the llm spec a package tool becomes; no YAML key can be it
# Names end up inside ${node.output} references, which split at dots and brackets.
_NAME = re.compile(r"^[^\s.${}\[\]'\"]+$")


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


class NodeLoader:
    """Reads a flow's nodes, collecting each problem with the node and field it is in."""

    if TYPE_CHECKING:  # given by the flow loader (loader.py) this is part of
        folder: Path
        root: Path
        connections: Collection[str] | None
        problems: list[FlowProblem]

        @property
        def modules(self) -> FlowModules: ...
        def problem(self, node: str | None, field: str, reason: str) -> None: ...
        def _mapping(self, value: Any, node: str | None, field: str) -> dict[str, Any] | None: ...
        def _reference(self, value: Any, node: str | None, field: str) -> Reference | None: ...

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
