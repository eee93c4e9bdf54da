"""An llm node's model parameters, converted to the API's types.

An llm node's ``inputs`` mix model parameters (``deployment_name``, ``model``, ``temperature``,
``max_tokens``...) with template variables, as prompt flow's LLM tool does; prompt flow's YAML
often writes numbers as strings (``max_tokens: "256"``) and unset ones as ``''``, so parameters
are converted to the API's types and empty ones dropped (literals at load time, references when
the node runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.flow.references import Reference

MODEL_KEYS = ("model", "deployment_name")
FLOAT_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
INT_PARAMS = ("max_tokens", "max_completion_tokens", "n", "seed")
OTHER_PARAMS = ("stop", "logit_bias", "user", "response_format")
# The runtime decides streaming; prompt flow's completion-API parameters mean nothing for chat
# and are sent only by ``api: completion`` nodes.
COMPLETION_ONLY_PARAMS = ("suffix", "echo", "logprobs", "best_of")
IGNORED_PARAMS = ("stream", *COMPLETION_ONLY_PARAMS)
UNSUPPORTED_PARAMS = ("tools", "tool_choice", "functions", "function_call")
PARAM_KEYS = frozenset((*MODEL_KEYS, *FLOAT_PARAMS, *INT_PARAMS, *OTHER_PARAMS, *IGNORED_PARAMS, *UNSUPPORTED_PARAMS))

OMIT: Any = object()


class ParamError(ValueError):
    """A model parameter with a value the API cannot take."""


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ({}, [])


def convert_param(name: str, value: Any, api: str = "chat") -> Any:
    """``value`` in the API's type, or OMIT for an unset one; raises ParamError."""
    if api == "completion" and name in COMPLETION_ONLY_PARAMS and not _is_empty(value):
        return _completion_param(name, value)
    if _is_empty(value) or name in IGNORED_PARAMS:
        return OMIT
    if name in UNSUPPORTED_PARAMS:
        raise ParamError("function and tool calling are not supported by the gateway's LLM nodes")
    if name in MODEL_KEYS or name == "user":
        if not isinstance(value, str):
            raise ParamError(f"must be a string, not {type(value).__name__}")
        return value.strip()
    if name in FLOAT_PARAMS:
        return _number(value, float)
    if name in INT_PARAMS:
        return _number(value, int)
    if name == "stop":
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return value
        raise ParamError("must be a string or a list of strings")
    if name in ("logit_bias", "response_format"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ParamError("must be an object (or its JSON text)") from None
        if not isinstance(value, dict):
            raise ParamError("must be an object")
        if name == "response_format" and value == {"type": "text"}:
            return OMIT  # the default; some OpenAI-compatible servers reject it spelled out
        return value
    raise ParamError("is not a model parameter")  # pragma: no cover - callers pass PARAM_KEYS only


def _completion_param(name: str, value: Any) -> Any:
    if name == "suffix":
        if not isinstance(value, str):
            raise ParamError(f"must be a string, not {type(value).__name__}")
        return value
    if name == "echo":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"  # prompt flow's YAML writes echo: "False"
        if not isinstance(value, bool):
            raise ParamError(f"must be true or false, not {value!r}")
        return value
    return _number(value, int)


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise ParamError(f"must be a number, not {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ParamError(f"{value!r} is not a number") from None
    if not isinstance(value, int | float):
        raise ParamError(f"must be a number, not {type(value).__name__}")
    if kind is int:
        if float(value) != int(value):
            raise ParamError(f"{value!r} is not a whole number")
        return int(value)
    return float(value)


def split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model parameters, template variables) of an llm node's inputs."""
    params = {k: v for k, v in inputs.items() if k in PARAM_KEYS}
    variables = {k: v for k, v in inputs.items() if k not in PARAM_KEYS}
    return params, variables


def convert_literals(params: Mapping[str, Any], api: str = "chat") -> tuple[dict[str, Any], dict[str, str]]:
    """Convert literal parameters at load time: (converted, problems by name). References stay."""
    converted: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, Reference):
            converted[name] = value
            continue
        try:
            result = convert_param(name, value, api)
        except ParamError as exc:
            problems[name] = str(exc)
            continue
        if result is not OMIT:
            converted[name] = result
    return converted, problems
