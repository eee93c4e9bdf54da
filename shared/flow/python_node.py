"""Python nodes: find the ``@tool`` function of a module next to the flow, and call it.

Flow code imports prompt flow's decorator (``from promptflow import tool`` or
``from promptflow.core import tool``). Where prompt flow is not installed, a two-module stand-in
is placed in ``sys.modules`` only while flow code is being imported, so the flow loads unchanged
and the stand-in never leaks into anything else. Its ``tool`` marks the function the same way
prompt flow's does (an attribute named ``__tool``), so a flow loads the same with either.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.flow.model import PythonTool

TOOL_MARKER = "__tool"  # what prompt flow's @tool sets on the function it returns
_SHIM_NAMES = ("promptflow", "promptflow.core")
_import_lock = threading.Lock()
_loaded: dict[Path, types.ModuleType] = {}


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


def _shim_modules() -> dict[str, types.ModuleType]:
    package = types.ModuleType("promptflow", "PromptPulse's stand-in for prompt flow's tool decorator")
    package.__path__ = []  # a package, so "promptflow.core" can be imported from it
    core = types.ModuleType("promptflow.core", "PromptPulse's stand-in for prompt flow's tool decorator")
    package.tool = core.tool = tool  # type: ignore[attr-defined]
    package.core = core  # type: ignore[attr-defined]
    return {"promptflow": package, "promptflow.core": core}


def _promptflow_installed() -> bool:
    if "promptflow" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("promptflow") is not None
    except (ImportError, ValueError):
        return False


def _import_module(path: Path) -> types.ModuleType:
    digest = hashlib.sha1(str(path.parent).encode()).hexdigest()[:12]
    # A per-folder name: two flows may both have a convert_to_dict.py.
    name = f"_promptpulse_flow_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ToolLoadError(f"{path.name} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    shims = {} if _promptflow_installed() else _shim_modules()
    folder = str(path.parent)
    sys.modules.update(shims)
    sys.modules[name] = module
    # Flow code imports its sibling modules by plain name, as it does under prompt flow.
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            # The flow's loader turns this into "install it": flow, node, requirements file, command.
            raise MissingModuleError(f"importing {path.name} failed: no module named {exc.name!r}",
                                     exc.name) from exc
        raise ToolLoadError(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
        for shim_name, shim in shims.items():
            if sys.modules.get(shim_name) is shim:
                del sys.modules[shim_name]
    return module


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


def load_tool(path: Path) -> PythonTool:
    """The tool of the module at ``path`` (imported once per process); raises ToolLoadError."""
    path = path.resolve()
    with _import_lock:
        module = _loaded.get(path)
        if module is None:
            module = _import_module(path)
            _loaded[path] = module
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
    return PythonTool(function=function, is_async=is_async, parameters=parameters, accepts_any=accepts_any)


async def call_tool(tool_def: PythonTool, kwargs: dict[str, Any]) -> Any:
    """Call the tool: awaited when async, else in a worker thread so the event loop never blocks."""
    if tool_def.is_async:
        result = await tool_def.function(**kwargs)
    else:
        # to_thread copies the context, so spans the tool opens are children of the node's span.
        result = await asyncio.to_thread(tool_def.function, **kwargs)
        if inspect.isawaitable(result):
            result = await result
    return await _materialize(result)


async def _materialize(result: Any) -> Any:
    # Prompt flow lets a tool return a generator of text for streaming; we collect it whole.
    if isinstance(result, types.GeneratorType):
        return await asyncio.to_thread(lambda: _join(list(result)))
    if isinstance(result, types.AsyncGeneratorType):
        return _join([item async for item in result])
    return result


def _join(items: list[Any]) -> Any:
    return "".join(items) if all(isinstance(i, str) for i in items) else items
