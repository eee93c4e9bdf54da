"""Flex flows: a ``flow.flex.yaml`` naming a Python function or class as ``entry``, loaded.

``entry: module:function`` or ``entry: module:Class`` (the module is a file of the flow folder,
imported into the load's own namespace under the same rules as DAG flows' Python nodes:
modules.py, requirements.py). A class is instantiated once per deployment variant with that
variant's ``init`` values (flex_init.py) and its instance is called per request.

The call's inputs come from the entry's signature (of ``__call__`` for a class), as prompt flow
derives them: the annotation (``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` or a
``TypedDict``, ``Optional[...]``), else the default's type, else any JSON value; a parameter
without a default is required. ``inputs:`` in flow.flex.yaml may give a parameter a type,
default or description. Values are checked as DAG inputs are (inputs.py), with one difference
Python makes natural: ``null`` is accepted where the parameter is ``Optional`` or defaults to None.
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.flow.errors import FlowError, FlowInputError
from shared.flow.inputs import _JSON_NAMES, check_type, convert_default
from shared.flow.model import MISSING, VALUE_TYPES, Flow, FlowInput
from shared.flow.modules import FlowModules

FLEX_FLOW_FILE = "flow.flex.yaml"
ANY = "any"  # an input without a type: any JSON value
OUTPUT = "output"  # prompt flow's name for an entry's output that is not a mapping
_KINDS: dict[Any, str] = {str: "string", int: "int", float: "double", bool: "bool", list: "list", tuple: "list",
                          dict: "object"}


@dataclass(frozen=True)
class FlexInput(FlowInput):
    """An entry parameter as a flow input. ``nullable``: ``Optional`` or defaulting to None."""

    nullable: bool = False


@dataclass(frozen=True)
class FlexFlow(Flow):
    """A loaded flex flow: a :class:`Flow` without nodes, whose entry is called per request.

    ``entry`` is the function, or the class (instantiated per variant by the executor); ``call``
    is the function a request calls (``Class.__call__`` unbound, for a class).
    """

    entry: Any = None
    entry_text: str = ""
    is_class: bool = False
    init_parameters: typing.Mapping[str, inspect.Parameter] = field(default_factory=dict)
    init_annotations: typing.Mapping[str, Any] = field(default_factory=dict)
    sample_init: typing.Mapping[str, Any] | None = None
    has_aggregate: bool = False
    modules: FlowModules | None = field(default=None, compare=False, repr=False)

    @property
    def streamed_output(self) -> str:
        """What streams: an entry that returns (or yields) one value has it as ``output``."""
        return OUTPUT


def _kind(annotation: Any) -> tuple[str | None, bool]:
    """(flow value type, nullable) of an annotation; type None: not a type a request can carry."""
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            return ANY, nullable
        annotation = members[0]
    if annotation is Any or annotation is inspect.Parameter.empty:
        return ANY, nullable
    origin = typing.get_origin(annotation) or annotation
    if origin in _KINDS:
        return _KINDS[origin], nullable
    if isinstance(origin, type) and issubclass(origin, dict):  # a TypedDict
        return "object", nullable
    if getattr(origin, "__name__", "") == "Image":
        return "image", nullable
    return None, nullable


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation naming something not importable: the raw ones
        return dict(getattr(function, "__annotations__", {}))


def entry_inputs(call: Any, declared: dict[str, Any], problem: Any) -> dict[str, FlexInput]:
    """The flow inputs of the entry's call signature; ``problem(field, reason)`` gets what is wrong."""
    signature = inspect.signature(call)
    hints = _hints(call)
    inputs: dict[str, FlexInput] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            problem(f"inputs.{name}", "a positional-only parameter cannot take a named input")
            continue
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        annotation = hints.get(name, parameter.annotation)
        if annotation is inspect.Parameter.empty and default not in (MISSING, None):
            annotation = type(default)
        kind, nullable = _kind(annotation)
        spec = declared.pop(name, None)
        description = None
        if isinstance(spec, dict):
            description = spec.get("description")
            if spec.get("type") is not None:
                kind = spec["type"] if spec["type"] in VALUE_TYPES else None
                if kind is None:
                    problem(f"inputs.{name}.type", f"{spec['type']!r} is not one of {', '.join(VALUE_TYPES)}")
                    continue
            if spec.get("default") is not None:
                try:
                    default = spec["default"] if kind == ANY else convert_default(str(kind), spec["default"])
                except ValueError as exc:
                    problem(f"inputs.{name}.default", str(exc))
                    continue
        if kind is None:
            shown = getattr(annotation, "__name__", str(annotation))
            problem(f"inputs.{name}", f"is of a complex Python type ({shown}) a request cannot carry; use a dict")
            continue
        inputs[name] = FlexInput(name=name, type=kind, default=default, description=description,  # type: ignore[arg-type]
                                 nullable=nullable or default is None)
    for name in declared:
        problem(f"inputs.{name}", "the entry has no parameter of this name")
    return inputs


def bind_flex_inputs(flow: FlexFlow, given: Any) -> dict[str, Any]:
    """The call's arguments, checked and completed with defaults; raises FlowInputError.

    Inputs the entry does not take are ignored, as prompt flow ignores them.
    """
    if not isinstance(given, dict):
        raise FlowInputError("", f"the inputs must be a JSON object, not {type(given).__name__}")
    bound: dict[str, Any] = {}
    for spec in flow.inputs.values():
        if spec.name not in given:
            if spec.required:
                what = "" if spec.type == ANY else f" ({spec.type})"
                raise FlowInputError(spec.name, f"is required{what}: the entry's parameter has no default")
            bound[spec.name] = copy.deepcopy(spec.default)  # a default list must not carry one call's changes
            continue
        value = given[spec.name]
        if value is None:
            if isinstance(spec, FlexInput) and (spec.nullable or spec.type == ANY):
                bound[spec.name] = None
                continue
            raise FlowInputError(spec.name, f"must be {_JSON_NAMES[spec.type]}, not null")
        bound[spec.name] = value if spec.type == ANY else check_type(spec, value)
    return bound


def read_entry(text: Any, flow_name: str) -> tuple[str, str]:
    if not isinstance(text, str) or text.count(":") != 1 or not all(text.split(":")):
        raise FlowError.single(flow_name, None, "entry", f"{text!r} is not <module>:<function or class> "
                               "(e.g. flow:ChatFlow)")
    module, name = (part.strip() for part in text.split(":"))
    return module, name


def module_path(root: Path, module: str) -> Path | None:
    """The file of a dotted module name inside the flow folder (``pkg.flow`` -> pkg/flow.py)."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None
