"""A ``.prompty`` file read and validated: its model, inputs, outputs, sample and chat template.

The format is prompt flow's (docs/flows.md, "Prompty"): a YAML front matter between ``---``
lines (``name``, ``description``, ``model: {api, configuration, parameters, response}``,
``inputs``, ``outputs``, ``sample``), then a Jinja2 template with ``system:`` / ``user:`` /
``assistant:`` role lines, compiled in the same sandbox as flow templates (template.py).

Overrides (``Prompty.load(source, model={...})``, a deployment's ``init``) are merged into the
front matter key by key before validation, as prompt flow merges them. String values written
``${env:NAME}`` become that environment variable (left as written when it is unset) and
``${file:path}`` the file's content (JSON and YAML parsed), relative to the prompty's folder.
Every problem found is raised together as one :class:`FlowError` naming the field.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError

from shared.deployments.prompty_files import PromptyFormatError, read_front_matter
from shared.deployments.schema import merge_values
from shared.flow.errors import FlowError, FlowProblem
from shared.flow.inputs import convert_default
from shared.flow.model import MISSING, VALUE_TYPES, FlowInput
from shared.flow.template import compile_template

APIS = ("chat", "completion")
RESPONSES = ("first", "all")
AZURE_TYPES = ("azure_openai", "azure_open_ai", "AzureOpenAI")
OPENAI_TYPES = ("openai", "OpenAI")
# Configuration fields that say where the model is served (the connection replaces them all).
ENDPOINT_FIELDS = ("azure_endpoint", "api_key", "api_version", "base_url", "organization")
_REFERENCE = re.compile(r"^\$\{(\w+):(.*)\}$", re.DOTALL)


@dataclass(frozen=True)
class PromptyModel:
    """``model:`` of the front matter. ``configuration`` is a mapping, or a model configuration
    object given as an override (``AzureOpenAIModelConfiguration(...)``)."""

    api: str = "chat"
    configuration: Any = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    response: str = "first"

    def config_value(self, key: str) -> Any:
        if isinstance(self.configuration, Mapping):
            return self.configuration.get(key)
        return getattr(self.configuration, key, None)

    @property
    def model_name(self) -> str | None:
        """The model to call: the Azure deployment, else the model name (prompt flow's rule)."""
        name = self.config_value("azure_deployment") or self.config_value("model")
        return name if isinstance(name, str) and name else None

    @property
    def is_azure(self) -> bool:
        kind = self.config_value("type")
        if kind is None:
            kind = getattr(self.configuration, "_type", None) or type(self.configuration).__name__
        return str(kind) in AZURE_TYPES or str(kind).startswith("AzureOpenAI")

    @property
    def json_output(self) -> bool:
        """``response_format: {type: json_object}``: the answer is parsed as JSON."""
        found = self.parameters.get("response_format")
        if isinstance(found, str):
            try:
                found = json.loads(found)
            except json.JSONDecodeError:
                return False
        return isinstance(found, Mapping) and found.get("type") == "json_object"

    @property
    def streams(self) -> bool:
        """``stream: true`` in the parameters: a Python call returns a generator of text."""
        return self.parameters.get("stream") is True and not self.json_output and self.response == "first"


@dataclass(frozen=True)
class PromptyFile:
    path: Path
    name: str
    description: str | None
    model: PromptyModel
    inputs: Mapping[str, FlowInput]
    outputs: Mapping[str, Any]  # declared output name -> its spec (only with a JSON answer)
    sample: Mapping[str, Any] | None
    template_source: str
    template: Any

    @property
    def label(self) -> str:
        """How problems and spans name it: the file's name."""
        return self.path.name


def resolve_references(value: Any, folder: Path, environ: Mapping[str, str] | None = None) -> Any:
    """``${env:NAME}`` and ``${file:path}`` strings resolved, at any depth; raises ValueError."""
    if isinstance(value, str):
        found = _REFERENCE.match(value)
        if found is None:
            return value
        kind, target = found.groups()
        if kind == "env":
            return (os.environ if environ is None else environ).get(target, value)
        if kind == "file":
            path = Path(target) if Path(target).is_absolute() else folder / target
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                raise ValueError(f"${{file:{target}}}: cannot read {path}") from None
            try:
                if path.suffix.lower() == ".json":
                    return json.loads(text)
                if path.suffix.lower() in (".yaml", ".yml"):
                    return yaml.safe_load(text)
            except (json.JSONDecodeError, yaml.YAMLError) as exc:
                raise ValueError(f"${{file:{target}}}: {path.name} does not parse: {exc}") from None
            return text
        return value  # an unknown kind stays as written, as in prompt flow
    if isinstance(value, list):
        return [resolve_references(item, folder, environ) for item in value]
    if isinstance(value, Mapping):
        return {key: resolve_references(item, folder, environ) for key, item in value.items()}
    return value


def merge_model(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``model:`` with an override merged in. A configuration override that names a connection
    (or is a model configuration object) replaces where the model is served: the file's endpoint,
    key and version fields are dropped rather than merged next to it."""
    merged = merge_values(base, {k: v for k, v in override.items() if k != "configuration"})
    if "configuration" not in override:
        return merged
    new = override["configuration"]
    old = base.get("configuration")
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        merged["configuration"] = new
        return merged
    if new.get("connection"):
        old = {k: v for k, v in old.items() if k not in ENDPOINT_FIELDS}
    elif any(new.get(k) for k in ENDPOINT_FIELDS):
        old = {k: v for k, v in old.items() if k != "connection"}
    merged["configuration"] = merge_values(old, new)
    return merged


def load_prompty(
    path: Path | str, overrides: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
) -> PromptyFile:
    """The prompty file at ``path`` with ``overrides`` merged into its front matter (``model``
    as :func:`merge_model` does, other keys key by key); raises FlowError."""
    path = Path(path)
    label = path.name
    try:
        data, template_source = read_front_matter(path)
    except FileNotFoundError:
        raise FlowError.single(label, None, "source", f"{path} does not exist") from None
    except (OSError, PromptyFormatError) as exc:
        raise FlowError.single(label, None, "front matter", str(exc)) from None
    problems: list[FlowProblem] = []

    def problem(where: str, reason: str) -> None:
        problems.append(FlowProblem(label, None, where, reason))

    try:
        data = resolve_references(data, path.parent, environ)
        given = resolve_references(dict(overrides or {}), path.parent, environ)
    except ValueError as exc:
        raise FlowError.single(label, None, "front matter", str(exc)) from None
    model_override = given.pop("model", None)
    data = merge_values(data, given)
    raw_model = data.get("model") or {}
    if not isinstance(raw_model, Mapping):
        problem("model", "must be a mapping with api, configuration and parameters")
        raw_model = {}
    if model_override is not None:
        if not isinstance(model_override, Mapping):
            problem("model", "the override must be a mapping ({configuration: ..., parameters: ...})")
        else:
            raw_model = merge_model(raw_model, model_override)
    model = _model(raw_model, problem)
    sample = data.get("sample")
    if sample is not None and not isinstance(sample, Mapping):
        problem("sample", "must be a mapping of input values (or ${file:sample.json})")
        sample = None
    inputs = _inputs(data.get("inputs"), sample, problem)
    outputs = data.get("outputs") or {}
    if not isinstance(outputs, Mapping):
        problem("outputs", "must be a mapping of output names")
        outputs = {}
    elif outputs and not model.json_output:
        problem("outputs", "only a JSON answer has named outputs: set model.parameters.response_format "
                "to {type: json_object}")
    template = None
    template_kind = data.get("template", "jinja2")
    if isinstance(template_kind, Mapping):
        template_kind = template_kind.get("type", "jinja2")
    if template_kind != "jinja2":
        problem("template", f"{template_kind!r} is not supported (jinja2)")
    else:
        try:
            template = compile_template(template_source)
        except TemplateSyntaxError as exc:
            problem("template", f"template error on line {exc.lineno}: {exc.message}")
    name = data.get("name")
    if problems:
        raise FlowError(problems)
    return PromptyFile(
        path=path.resolve(), name=str(name) if name else path.stem, description=data.get("description"),
        model=model, inputs=inputs, outputs=dict(outputs), sample=dict(sample) if sample is not None else None,
        template_source=template_source, template=template,
    )


def _model(raw: Mapping[str, Any], problem: Any) -> PromptyModel:
    api = raw.get("api", "chat")
    if api not in APIS:
        problem("model.api", f"{api!r} is not one of {', '.join(APIS)}")
        api = "chat"
    response = raw.get("response", "first")
    if response not in RESPONSES:
        problem("model.response", f"{response!r} is not one of {', '.join(RESPONSES)}")
        response = "first"
    configuration = raw.get("configuration") or {}
    if isinstance(configuration, Mapping):
        kind = configuration.get("type")
        if kind is not None and kind not in (*AZURE_TYPES, *OPENAI_TYPES):
            problem("model.configuration.type", f"{kind!r} is not azure_openai or openai")
        if configuration.get("connection") and any(configuration.get(k) for k in ENDPOINT_FIELDS):
            shown = ", ".join(k for k in ENDPOINT_FIELDS if configuration.get(k))
            problem("model.configuration.connection", f"a connection and endpoint settings ({shown}) are "
                    "exclusive: name one or the other")
    elif not hasattr(configuration, "connection"):
        problem("model.configuration", "must be a mapping or a model configuration "
                "(AzureOpenAIModelConfiguration, OpenAIModelConfiguration)")
        configuration = {}
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        problem("model.parameters", "must be a mapping of request parameters (max_tokens, temperature...)")
        parameters = {}
    return PromptyModel(api=api, configuration=configuration, parameters=dict(parameters), response=response)


def _inputs(raw: Any, sample: Mapping[str, Any] | None, problem: Any) -> dict[str, FlowInput]:
    if raw is None:
        # No inputs written: the sample's keys are the inputs, typed by their values (prompt flow's rule).
        raw = {key: {"type": _type_of(value)} for key, value in (sample or {}).items()}
    if not isinstance(raw, Mapping):
        problem("inputs", "must be a mapping of input name -> {type, default}")
        return {}
    inputs: dict[str, FlowInput] = {}
    for key, spec in raw.items():
        where = f"inputs.{key}"
        if not isinstance(spec, Mapping):
            problem(where, "must be a mapping with a type (string, int, double, bool, list, object, image)")
            continue
        kind = spec.get("type")
        if kind is None:
            derived = spec.get("default", (sample or {}).get(key))
            kind = _type_of(derived) if derived is not None else None
            if kind is None:
                problem(f"{where}.type", f"is required: one of {', '.join(VALUE_TYPES)}")
                continue
        if kind not in VALUE_TYPES:
            problem(f"{where}.type", f"{kind!r} is not one of {', '.join(VALUE_TYPES)}")
            continue
        default = MISSING
        if spec.get("default") is not None:
            try:
                default = convert_default(kind, spec["default"])
            except ValueError as exc:
                problem(f"{where}.default", str(exc))
                continue
        inputs[str(key)] = FlowInput(name=str(key), type=kind, default=default,  # type: ignore[arg-type]  # checked
                                     description=spec.get("description"))
    return inputs


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return "string"
