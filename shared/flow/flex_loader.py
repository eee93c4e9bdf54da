"""Load a flex flow folder (``flow.flex.yaml``): read the file, import the entry, derive its inputs.

Problems are collected and raised together as one :class:`FlowError`, as for DAG flows.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from shared.flow.errors import FlowError, FlowProblem
from shared.flow.flex import FLEX_FLOW_FILE, FlexFlow, _hints, entry_inputs, module_path, read_entry
from shared.flow.includes import FIELD as INCLUDES_FIELD
from shared.flow.includes import build_snapshot, include_sources, keep_while, remove_snapshot
from shared.flow.python_node import (
    MissingModuleError,
    ToolLoadError,
    _import_lock,
    _import_module,
    flow_modules,
)


def load_flex_flow(path: Path, name: str | None = None, connections: Collection[str] | None = None) -> FlexFlow:
    """The flex flow of folder ``path`` (or of the flow.flex.yaml itself); raises FlowError.

    ``connections`` is unused here: init values (which name connections) are the deployment's,
    resolved per variant by the executor (flex_init.py).
    """
    from shared.flow.loader import _Yaml12Loader
    from shared.flow.node_loader import missing_module_reason

    folder = path.parent if path.is_file() else path
    name = name or folder.resolve().name
    flow_file = path if path.is_file() else folder / FLEX_FLOW_FILE
    try:
        data = yaml.load(flow_file.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    except FileNotFoundError:
        raise FlowError.single(name, None, FLEX_FLOW_FILE, f"not found in {folder}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FlowError.single(name, None, flow_file.name, f"is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise FlowError.single(name, None, flow_file.name, "must be a mapping with an entry")
    problems: list[FlowProblem] = []

    def problem(field: str, reason: str) -> None:
        problems.append(FlowProblem(name, None, field, reason))

    if data.get("environment_variables"):
        problem("environment_variables", "not supported: set them in the gateway's environment")
    module_name, attribute = read_entry(data.get("entry"), name)
    sources, include_problems = include_sources(folder, data.get(INCLUDES_FIELD))
    for field, reason in include_problems:
        problem(field, reason)
    if problems:
        raise FlowError(problems)
    root = build_snapshot(folder, sources) if sources else folder
    modules = flow_modules(root)
    try:
        flow = _load(data, name, folder, root, modules, module_name, attribute, problem, missing_module_reason)
        if problems:
            raise FlowError(problems)
    except BaseException:
        if root != folder:
            remove_snapshot(root)
        modules.release()
        raise
    if root != folder:
        keep_while(flow, root)
    weakref.finalize(flow, modules.release)  # a reload's old modules go with the old flow
    return flow


def _load(data: dict[str, Any], name: str, folder: Path, root: Path, modules: Any, module_name: str,
          attribute: str, problem: Any, missing_module_reason: Any) -> FlexFlow:
    file = module_path(root, module_name)
    if file is None:
        raise FlowError.single(name, None, "entry", f"module {module_name!r} is not a file of {folder} "
                               f"({module_name.replace('.', '/')}.py)")
    try:
        with _import_lock:
            module = _import_module(file, modules)
    except MissingModuleError as exc:
        raise FlowError.single(name, None, "entry", missing_module_reason(exc, folder)) from None
    except ToolLoadError as exc:
        raise FlowError.single(name, None, "entry", str(exc)) from None
    entry = getattr(module, attribute, None)
    text = f"{module_name}:{attribute}"
    if entry is None:
        raise FlowError.single(name, None, "entry", f"{file.name} has no function or class {attribute!r}")
    is_class = inspect.isclass(entry)
    if is_class:
        if not any("__call__" in vars(c) for c in entry.__mro__ if c is not object):
            raise FlowError.single(name, None, "entry", f"class {attribute} has no __call__ method to call per request")
        call = entry.__call__
    elif callable(entry):
        call = entry
    else:
        raise FlowError.single(name, None, "entry", f"{text} is neither a function nor a class")
    declared = data.get("inputs")
    inputs = entry_inputs(call, dict(declared) if isinstance(declared, dict) else {}, problem)
    init_parameters: dict[str, inspect.Parameter] = {}
    init_annotations: dict[str, Any] = {}
    if is_class:
        signature = inspect.signature(entry.__init__)
        hints = _hints(entry.__init__)
        for key, parameter in signature.parameters.items():
            if key != "self" and parameter.kind is not parameter.VAR_POSITIONAL:
                init_parameters[key] = parameter
                init_annotations[key] = hints.get(key, parameter.annotation)
    sample = data.get("sample")
    sample_init = sample.get("init") if isinstance(sample, dict) and isinstance(sample.get("init"), dict) else None
    return FlexFlow(
        name=name, path=folder.resolve(), inputs=inputs, outputs={}, node_order=(), nodes={},
        entry=entry, entry_text=text, is_class=is_class, init_parameters=init_parameters,
        init_annotations=init_annotations, sample_init=sample_init,
        has_aggregate=is_class and callable(getattr(entry, "__aggregate__", None)), modules=modules,
    )


def is_flex_folder(path: Path) -> bool:
    """Whether ``path`` is a flow.flex.yaml, or a folder with one and no flow.dag.yaml."""
    if path.is_file():
        return path.name.endswith(".flex.yaml") or path.name.endswith(".flex.yml")
    return (path / FLEX_FLOW_FILE).is_file() and not (path / "flow.dag.yaml").is_file()
