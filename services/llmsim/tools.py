"""Tool calls: when a request makes the model call a function, llmsim calls it.

A request with ``tools`` whose ``tool_choice`` is ``required`` or names a function gets a
function call instead of text: the named function (else the first one listed), with
``{"query": <the last user text>}`` as its arguments. ``auto`` (the default) answers with text,
so a client that merely offers tools still gets an answer to judge. Chat completions and the
Responses API name a function differently (``tools[].function.name`` and
``tool_choice.function.name`` vs ``tools[].name`` and ``tool_choice.name``); both are read.
"""

from __future__ import annotations

import json
from typing import Any


def forced_function(tools: list[Any] | None, tool_choice: Any) -> str | None:
    """The function the model must call, or None when it answers with text."""
    if not tools:
        return None
    if isinstance(tool_choice, dict):
        named = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
        if isinstance(named, str) and named:
            return named
        return None
    if tool_choice != "required":
        return None
    for tool in tools:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str) and name:
                return name
    return None


def call_arguments(question: str) -> str:
    """The call's arguments as the API sends them: a JSON text."""
    return json.dumps({"query": question})
