"""A run's inputs against the flow's typed ``inputs``: required, typed, defaulted.

Checks are strict JSON types (a request body is JSON): ``int`` takes whole numbers (``3.0``
too), never booleans; ``double`` takes any number; ``string``, ``bool``, ``list`` and ``object``
take exactly that (prompt flow would also convert ``"3"`` to 3: a client of an HTTP API is
better told). A JSON ``null`` is refused like any other wrong type: a client that sends
``{"question": null}`` means something, and silently running the default answers another
question. An input left out takes its default. Inputs the flow does not declare are ignored.
Defaults written in the flow file are converted once at load time with prompt flow's leniency
(``"3"`` for an int), since flow files written by its tools contain such strings.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from shared.flow import images
from shared.flow.errors import FlowInputError
from shared.flow.model import Flow, FlowInput

_JSON_NAMES = {"string": "a string", "int": "an integer", "double": "a number", "bool": "true or false",
               "list": "a list", "object": "an object",
               "image": "an image (a URL, a data:image URI or {\"data:image/png;base64\": ...})"}


def bind_inputs(flow: Flow, given: Any) -> dict[str, Any]:
    """The run's inputs, checked and completed with defaults; raises FlowInputError."""
    from shared.flow.flex import FlexFlow, bind_flex_inputs

    if isinstance(flow, FlexFlow):  # its inputs are its entry's parameters (flex.py)
        return bind_flex_inputs(flow, given)
    if not isinstance(given, Mapping):
        raise FlowInputError("", f"the inputs must be a JSON object, not {_json_type(given)}")
    bound: dict[str, Any] = {}
    history = flow.chat_history_input
    for spec in flow.inputs.values():
        if spec.name not in given:
            if spec.required:
                raise FlowInputError(spec.name, f"is required ({_JSON_NAMES[spec.type]})")
            # Copied: a default list or object must not carry one request's changes into the next.
            bound[spec.name] = copy.deepcopy(spec.default)
            if spec.type == "image":
                bound[spec.name] = check_type(spec, bound[spec.name])
            continue
        value = given[spec.name]
        if value is None:
            leave_out = "" if spec.required else "; leave it out for the default"
            raise FlowInputError(spec.name, f"must be {_JSON_NAMES[spec.type]}, not null{leave_out}")
        bound[spec.name] = check_type(spec, value)
        if history is not None and spec.name == history.name:
            check_chat_history(spec.name, bound[spec.name])
    return bound


def check_type(spec: FlowInput, value: Any) -> Any:
    kind = spec.type
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    if kind == "double" and isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    if kind == "list" and isinstance(value, list):
        return value
    if kind == "object" and isinstance(value, dict):
        return value
    if kind == "image":  # an Image, as prompt flow gives its nodes (images.py)
        try:
            return images.from_value(value)
        except ValueError as exc:
            raise FlowInputError(spec.name, str(exc)) from None
    raise FlowInputError(spec.name, f"must be {_JSON_NAMES[kind]}, not {_json_type(value)}")


def check_chat_history(name: str, history: list[Any]) -> None:
    """Prompt flow's chat history: a list of ``{"inputs": {...}, "outputs": {...}}`` turns."""
    for index, turn in enumerate(history):
        where = f"{name}[{index}]"
        if not isinstance(turn, dict):
            raise FlowInputError(where, f"must be an object with inputs and outputs, not {_json_type(turn)}")
        for part in ("inputs", "outputs"):
            if not isinstance(turn.get(part), dict):
                raise FlowInputError(f"{where}.{part}", "must be an object")


def convert_default(kind: str, value: Any) -> Any:
    """A flow file's default in the input's type (prompt flow accepts "3" for an int); raises ValueError."""
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value)
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind == "double":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    elif kind == "image":
        images.from_value(value)  # checked now, converted per run
        return value
    elif kind in ("list", "object"):
        expected = list if kind == "list" else dict
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, expected):
            return value
    raise ValueError(f"{value!r} is not {_JSON_NAMES[kind]}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
