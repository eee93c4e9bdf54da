"""A prompty deployment as a flow: its one LLM call is an llm node, run by the FlowExecutor.

A ``.prompty`` file is one LLM call with typed inputs, so it becomes a flow of one llm node
(named after the file) whose template, model parameters and connection are the prompty's: the
executor, streaming, spans, usage, /score and the event pipeline are the DAG flows' own. A
JSON answer (``response_format: {type: json_object}``) adds a Python node that parses it and
picks the declared ``outputs`` (prompt flow's rule); a text answer is the one output ``output``.

Deployment-level variants that name other ``.prompty`` files become the llm node's variants,
keyed by the deployment variant ids, so the deployment's traffic split selects them unchanged.
The flow's inputs are every variant's (a request is checked against all of them; each variant
renders with its own).

Where the model is served: the gateway calls models only through connections.yaml. The
connection is ``model.configuration.connection`` after the deployment's ``init`` is merged over
the file (``init: {model: {configuration: {connection: NAME}}}``): a connection named in the
deployment replaces the file's ``${env:...}`` endpoint and key. The model (``azure_deployment``
or ``model``) and the parameters come from the file unless ``init`` overrides them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.flow import llm_params
from shared.flow.errors import FlowError, FlowProblem
from shared.flow.model import (
    Flow,
    FlowInput,
    FlowOutput,
    LlmSettings,
    Node,
    NodeVariants,
    PythonTool,
)
from shared.flow.prompty.file import PromptyFile, load_prompty
from shared.flow.references import parse_value

SINGLE_OUTPUT = "output"
JSON_NODE = "parse_json_answer"
_NODE_NAME_CHARS = re.compile(r"[\s.${}\[\]'\"]+")


class InvalidOutputKeyError(ValueError):
    """A JSON answer without one of the prompty's declared outputs (prompt flow's error name)."""


def json_answer(text: str, keys: tuple[str, ...]) -> Any:
    """A JSON answer parsed; with declared ``keys``, only those (each must be there)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not JSON though response_format is json_object: {exc}") from None
    if not keys:
        return value
    if not isinstance(value, dict):
        raise InvalidOutputKeyError(f"the answer is a JSON {type(value).__name__}, not an object with {list(keys)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise InvalidOutputKeyError(f"cannot find {missing[0]!r} in the answer's keys {list(value)}")
    return {k: value[k] for k in keys}


def node_name(path: Path) -> str:
    return _NODE_NAME_CHARS.sub("_", path.stem) or "prompty"


def load_prompty_flow(
    variants: Mapping[str, tuple[Path, Mapping[str, Any] | None]],
    *,
    name: str | None = None,
    connections: Mapping[str, Any] | None = None,
) -> Flow:
    """The flow of a prompty deployment; raises FlowError with every problem found.

    ``variants``: deployment variant id -> (its .prompty file, its init values), the first the
    default. ``connections``: connections.yaml (name -> Connection); when given, the named
    connection must be there and be an LLM endpoint.
    """
    if not variants:
        raise ValueError("a prompty deployment has at least one variant")
    first_path = next(iter(variants.values()))[0]
    flow_name = name or Path(first_path).stem
    node = node_name(Path(first_path))
    problems: list[FlowProblem] = []
    files: dict[str, PromptyFile] = {}
    for variant_id, (path, init) in variants.items():
        try:
            files[variant_id] = load_prompty(path, init)
        except FlowError as exc:
            problems += exc.problems
    if problems:
        raise FlowError(problems)
    llm_nodes: dict[str, Node] = {}
    several = len(files) > 1
    for variant_id, prompty in files.items():
        built = _llm_node(prompty, node, variant_id if several else None, connections, problems)
        if built is not None:
            llm_nodes[variant_id] = built
    inputs = _union_inputs(files, problems)
    output_keys = {variant_id: tuple(p.outputs) if p.model.json_output and p.model.response == "first" else None
                   for variant_id, p in files.items()}
    if len(set(output_keys.values())) > 1:
        shown = "; ".join(f"{v}: {list(k) if k is not None else 'text'}" for v, k in output_keys.items())
        problems.append(FlowProblem(flow_name, None, "outputs", f"every variant's prompty must answer the same "
                                    f"outputs (a text answer, or the same JSON outputs): {shown}"))
    if problems:
        raise FlowError(problems)
    keys = next(iter(output_keys.values()))
    order: tuple[str, ...] = (node,)
    nodes: dict[str, Node] = {}
    node_variants: dict[str, NodeVariants] = {}
    if several:
        node_variants[node] = NodeVariants(default_variant_id=next(iter(llm_nodes)), variants=llm_nodes)
    else:
        nodes[node] = next(iter(llm_nodes.values()))
    answer = parse_value(f"${{{node}.output}}")
    if keys is None:  # a text answer: the one output, streamed as the model writes it
        outputs = {SINGLE_OUTPUT: FlowOutput(SINGLE_OUTPUT, "string", answer, is_chat_output=True)}
    else:
        order = (node, JSON_NODE)
        nodes[JSON_NODE] = _json_node(keys, Path(first_path), answer)
        if keys:
            outputs = {k: FlowOutput(k, None, parse_value(f"${{{JSON_NODE}.output.{k}}}")) for k in keys}
        else:
            outputs = {SINGLE_OUTPUT: FlowOutput(SINGLE_OUTPUT, "object", parse_value(f"${{{JSON_NODE}.output}}"))}
    return Flow(flow_name, Path(first_path).resolve().parent, inputs, outputs, order, nodes, node_variants,
                single_output=SINGLE_OUTPUT in outputs)


def _llm_node(
    prompty: PromptyFile, node: str, variant_id: str | None, connections: Mapping[str, Any] | None,
    problems: list[FlowProblem],
) -> Node | None:
    label = prompty.label
    before = len(problems)

    def problem(where: str, reason: str) -> None:
        problems.append(FlowProblem(label, None, where, reason))

    model = prompty.model
    connection = model.config_value("connection")
    if not isinstance(connection, str) or not connection:
        problem("model.configuration.connection", "names no connection: the gateway calls models through "
                "connections.yaml; name one in the deployment file (init: {model: {configuration: "
                "{connection: NAME}}}) or in the prompty")
    elif connections is not None and connection not in connections:
        known = ", ".join(sorted(connections)) or "none"
        problem("model.configuration.connection", f"{connection!r} is not a known connection (known: {known})")
    elif connections is not None and getattr(connections[connection], "type", None) == "custom":
        problem("model.configuration.connection", f"{connection!r} is a custom connection, not an LLM endpoint")
    model_name = model.model_name
    if model_name is None or model_name.startswith("${"):
        field = "azure_deployment" if model.is_azure else "model"
        shown = f" ({model_name} is unset)" if model_name else ""
        problem(f"model.configuration.{field}", f"names no model to call{shown}")
    params, bad = llm_params.convert_literals(model.parameters, model.api)
    for key, reason in bad.items():
        problem(f"model.parameters.{key}", reason)
    if prompty.template is None or len(problems) > before:
        return None
    assert isinstance(connection, str) and model_name is not None
    if model.response == "all":
        return _whole_completion_node(prompty, node, variant_id, connections, connection)
    settings = LlmSettings(model=model_name, deployment_name=model_name, params=params, connection=connection,
                           api=model.api)
    variables = {key: parse_value(f"${{inputs.{key}}}") for key in prompty.inputs}
    return Node(name=node, type="llm", source=prompty.path, inputs=variables, template=prompty.template,
                llm=settings, variant_id=variant_id)


def _whole_completion_node(prompty: PromptyFile, node: str, variant_id: str | None,
                           connections: Mapping[str, Any] | None, connection: str) -> Node:
    """``response: all``: the whole completion object is the answer, so the call is a Python node
    (prompty/core.py) rather than an llm node, which answers with text."""
    from shared.flow.prompty.core import whole_completion

    def whole_completion_of(**values: Any) -> Any:
        if connections is None:
            raise ValueError(f"no connections were given to look {connection!r} up in")
        return whole_completion(prompty, values, connections[connection])

    tool = PythonTool(function=whole_completion_of, is_async=False, parameters={}, accepts_any=True)
    variables = {key: parse_value(f"${{inputs.{key}}}") for key in prompty.inputs}
    return Node(name=node, type="python", source=prompty.path, inputs=variables, tool=tool, variant_id=variant_id)


def _union_inputs(files: Mapping[str, PromptyFile], problems: list[FlowProblem]) -> dict[str, FlowInput]:
    """Every variant's inputs: required where any variant requires it, one type for all."""
    inputs: dict[str, FlowInput] = {}
    for prompty in files.values():
        for key, spec in prompty.inputs.items():
            seen = inputs.get(key)
            if seen is None:
                inputs[key] = spec
            elif seen.type != spec.type:
                problems.append(FlowProblem(prompty.label, None, f"inputs.{key}.type", f"{spec.type!r}, but "
                                            f"another variant's prompty has {seen.type!r}"))
            elif spec.required and not seen.required:
                inputs[key] = spec
    return inputs


def _json_node(keys: tuple[str, ...], source: Path, answer: Any) -> Node:
    def parse_json_answer(text: str) -> Any:
        return json_answer(text, keys)

    tool = PythonTool(function=parse_json_answer, is_async=False, parameters={"text": False}, accepts_any=False)
    return Node(name=JSON_NODE, type="python", source=source, inputs={"text": answer}, tool=tool)
