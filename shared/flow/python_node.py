"""Python nodes: find the ``@tool`` function of a module next to the flow, and call it.

Flow code imports prompt flow's decorator (``from promptflow import tool`` or
``from promptflow.core import tool``), ``log_metric`` and the connection classes
(``promptflow.connections``). Where prompt flow is not installed, stand-in modules answer those
imports of flow code only (modules.py: never in ``sys.modules``), so the flow loads unchanged
and the stand-ins never leak into anything else. Their ``tool`` marks the function the same way
prompt flow's does (an attribute named ``__tool``), so a flow loads the same with either.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.flow.images import Image
from shared.flow.model import PythonTool
from shared.flow.modules import PACKAGE_PREFIX, FlowModules
from shared.flow.pf_connections import CONNECTION_CLASSES
from shared.flow.pf_tools import MODULES as PF_TOOL_MODULES
from shared.flow.python_inputs import annotations_of

TOOL_MARKER = "__tool"  # what prompt flow's @tool sets on the function it returns
_import_lock = threading.Lock()


class ToolLoadError(Exception):
    """The module cannot be imported, or does not hold exactly one @tool function."""


class MissingModuleError(ToolLoadError):
    """The node's module imports a module that is not installed (``module`` names it)."""

    def __init__(self, message: str, module: str) -> None:
        super().__init__(message)
        self.module = module


def tool(func: Callable[..., Any] | None = None, **_settings: Any) -> Any:
    """Stand-in for prompt flow's ``@tool`` / ``@tool(name=...)``: marks and returns the function."""

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        setattr(function, TOOL_MARKER, None)
        return function

    return mark(func) if func is not None else mark


def log_metric(key: str, value: Any, variant_id: str | None = None) -> None:
    """Stand-in for prompt flow's ``log_metric``: aggregation nodes call it; they do not run per
    request (issue 13 decides what they do online), so there is nothing to record yet."""


def _add_prompty(core: types.ModuleType, modules: dict[str, types.ModuleType]) -> None:
    """``promptflow.core.Prompty`` and ``AsyncPrompty`` (prompty/core.py), also where some of
    prompt flow's examples import them from (``promptflow.core._flow``)."""
    from shared.flow.prompty.core import AsyncPrompty, Prompty

    core.__path__ = []  # a package too, so its _flow module can be imported
    flow = types.ModuleType("promptflow.core._flow", "PromptPulse's stand-in: Prompty (prompty/core.py)")
    for module in (core, flow):
        module.Prompty = Prompty  # type: ignore[attr-defined]
        module.AsyncPrompty = AsyncPrompty  # type: ignore[attr-defined]
    core._flow = flow  # type: ignore[attr-defined]
    modules[flow.__name__] = flow


def _shim_modules() -> dict[str, types.ModuleType]:
    package = types.ModuleType("promptflow", "PromptPulse's stand-in for prompt flow's tool decorator")
    package.__path__ = []  # a package, so "promptflow.core" can be imported from it
    core = types.ModuleType("promptflow.core", "PromptPulse's stand-in for prompt flow's tool decorator")
    package.tool = core.tool = tool  # type: ignore[attr-defined]
    package.log_metric = core.log_metric = log_metric  # type: ignore[attr-defined]
    package.core = core  # type: ignore[attr-defined]
    connections = types.ModuleType("promptflow.connections", "PromptPulse's stand-in for prompt flow's connections")
    for cls in CONNECTION_CLASSES:
        setattr(connections, cls.__name__, cls)
        setattr(core, cls.__name__, cls)
    package.connections = connections  # type: ignore[attr-defined]
    contracts = types.ModuleType("promptflow.contracts", "PromptPulse's stand-in for prompt flow's contracts")
    contracts.__path__ = []
    multimedia = types.ModuleType("promptflow.contracts.multimedia", "PromptPulse's stand-in: Image (images.py)")
    multimedia.Image = Image  # type: ignore[attr-defined]
    contracts.multimedia = multimedia  # type: ignore[attr-defined]
    package.contracts = contracts  # type: ignore[attr-defined]
    modules = {"promptflow": package, "promptflow.core": core, "promptflow.connections": connections,
               "promptflow.contracts": contracts, "promptflow.contracts.multimedia": multimedia}
    _add_prompty(core, modules)
    _add_flex_stand_ins(package, core, modules)
    tools = types.ModuleType("promptflow.tools", "PromptPulse's stand-in for promptflow-tools (pf_tools.py)")
    tools.__path__ = []
    package.tools = tools  # type: ignore[attr-defined]
    modules["promptflow.tools"] = tools
    for module_name, functions in PF_TOOL_MODULES.items():
        module = types.ModuleType(module_name, "PromptPulse's stand-in for promptflow-tools (pf_tools.py)")
        for function_name, function in functions.items():
            setattr(module, function_name, function)
        setattr(tools, module_name.rsplit(".", 1)[1], module)
        modules[module_name] = module
    return modules


def _add_flex_stand_ins(package: types.ModuleType, core: types.ModuleType, modules: dict[str, types.ModuleType]) -> None:
    """What flex flows import: ``promptflow.tracing`` (pf_tracing.py) and the model configurations
    in ``promptflow.core`` (pf_model_config.py)."""
    from shared.flow import pf_model_config, pf_tracing

    tracing = types.ModuleType("promptflow.tracing", "PromptPulse's stand-in for promptflow-tracing (pf_tracing.py)")
    tracing.trace = pf_tracing.trace  # type: ignore[attr-defined]
    tracing.start_trace = pf_tracing.start_trace  # type: ignore[attr-defined]
    package.tracing = tracing  # type: ignore[attr-defined]
    modules["promptflow.tracing"] = tracing
    for cls in (*pf_model_config.MODEL_CONFIG_CLASSES.values(), pf_model_config.ModelConfiguration):
        setattr(core, cls.__name__, cls)


def _promptflow_installed() -> bool:
    if "promptflow" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("promptflow") is not None
    except (ImportError, ValueError):
        return False


def flow_modules(root: Path) -> FlowModules:
    """A fresh import namespace for one load of the flow at ``root`` (modules.py)."""
    return FlowModules(root, {} if _promptflow_installed() else _shim_modules())


def _import_module(path: Path, namespace: FlowModules) -> types.ModuleType:
    try:
        return namespace.import_file(path)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith(PACKAGE_PREFIX):
            # The flow's loader turns this into "install it": flow, node, requirements file, command.
            raise MissingModuleError(f"importing {path.name} failed: no module named {exc.name!r}",
                                     exc.name) from exc
        message = str(exc).replace(f"{namespace.package}.", "")
        raise ToolLoadError(f"importing {path.name} failed: {type(exc).__name__}: {message}") from exc


def _find_tool(module: types.ModuleType, filename: str) -> Callable[..., Any]:
    marked = [
        value
        for value in vars(module).values()
        if callable(value) and hasattr(value, TOOL_MARKER) and not isinstance(value, type)
    ]
    # A tool imported from a sibling module is not this module's tool, unless it is the only one.
    own = [f for f in marked if getattr(f, "__module__", None) == module.__name__]
    found = own or marked
    if not found:
        raise ToolLoadError(f"{filename} has no function decorated with @tool")
    if len(found) > 1:
        names = ", ".join(sorted(getattr(f, "__name__", "?") for f in found))
        raise ToolLoadError(f"{filename} has {len(found)} functions decorated with @tool ({names}); a node needs one")
    return found[0]


def load_tool(path: Path, namespace: FlowModules | None = None) -> PythonTool:
    """The tool of the module at ``path``, imported into ``namespace`` (the flow's load; a new
    one for the file's folder when not given); raises ToolLoadError."""
    path = path.resolve()
    namespace = namespace or flow_modules(path.parent)
    with _import_lock:
        module = _import_module(path, namespace)
    function = _find_tool(module, path.name)
    signature = inspect.signature(function)
    parameters: dict[str, bool] = {}
    accepts_any = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolLoadError(f"{function.__name__}: positional-only parameter {parameter.name!r} cannot take a node input")
        else:
            parameters[parameter.name] = parameter.default is not inspect.Parameter.empty
    original = inspect.unwrap(function)
    is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(original)
    return PythonTool(function=function, is_async=is_async, parameters=parameters, accepts_any=accepts_any,
                      annotations=annotations_of(function, parameters))


async def call_tool(
    tool_def: PythonTool, kwargs: dict[str, Any], on_item: Callable[[Any], None] | None = None
) -> Any:
    """Call the tool: awaited when async, else in a worker thread so the event loop never blocks.

    A tool may return a generator (sync or async), as prompt flow lets a tool stream: each item
    goes to ``on_item`` as the generator produces it, and the node's output is the items joined.
    """
    if tool_def.is_async:
        result = await tool_def.function(**kwargs)
    else:
        # to_thread copies the context, so spans the tool opens are children of the node's span.
        result = await asyncio.to_thread(tool_def.function, **kwargs)
        if inspect.isawaitable(result):
            result = await result
    return await _materialize(result, on_item)


_DONE = object()


async def _materialize(result: Any, on_item: Callable[[Any], None] | None = None) -> Any:
    if isinstance(result, types.GeneratorType):
        items = []
        # One step per worker-thread call (a generator may block between items); each call copies
        # this context, so what the node observes (its LLM calls, its prints) stays the node's.
        while (item := await asyncio.to_thread(next, result, _DONE)) is not _DONE:
            items.append(item)
            if on_item is not None:
                on_item(item)
        return _join(items)
    if isinstance(result, types.AsyncGeneratorType):
        items = []
        async for item in result:
            items.append(item)
            if on_item is not None:
                on_item(item)
        return _join(items)
    return result


def _join(items: list[Any]) -> Any:
    return "".join(items) if all(isinstance(i, str) for i in items) else items
