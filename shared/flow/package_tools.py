"""prompt flow's built-in ``promptflow-tools`` that call a model through a connection, mapped onto
the runtime's own LLM and embedding calls (llm.py), so they need no ``promptflow-tools`` install.

A flow names them with ``source: {type: package, tool: ...}`` (the embedding tool, on a
``type: python`` node) or ``source: {type: package_with_prompt, tool: ..., path: x.jinja2}`` (the
LLM and vision tools, on ``type: custom_llm`` or ``llm`` nodes), and gives the connection as the
node's ``connection`` or as ``inputs.connection``. Each becomes an llm node with the matching API.
"""

from __future__ import annotations

from typing import Any

PACKAGE_SOURCES = ("package", "package_with_prompt")

# The names prompt flow has written for these tools across its releases (older
# ``promptflow.tools.openai.chat`` style, class-qualified ``...AzureOpenAI.chat``, the unified
# ``promptflow.tools.llm.llm`` and the vision tools).
_APIS: dict[str, str] = {
    "promptflow.tools.embedding.embedding": "embedding",
    "promptflow.tools.openai.chat": "chat",
    "promptflow.tools.aoai.chat": "chat",
    "promptflow.tools.openai.OpenAI.chat": "chat",
    "promptflow.tools.aoai.AzureOpenAI.chat": "chat",
    "promptflow.tools.llm.llm": "chat",
    "promptflow.tools.openai.completion": "completion",
    "promptflow.tools.aoai.completion": "completion",
    "promptflow.tools.openai.OpenAI.completion": "completion",
    "promptflow.tools.aoai.AzureOpenAI.completion": "completion",
    "promptflow.tools.aoai_gpt4v.AzureOpenAI.chat": "chat",
    "promptflow.tools.openai_gpt4v.OpenAI.chat": "chat",
    "promptflow.tools.llm_vision.llm_vision": "chat",
}
TOOL_NAMES = tuple(_APIS)


def is_package_source(spec: dict[str, Any]) -> bool:
    source = spec.get("source")
    return isinstance(source, dict) and source.get("type") in PACKAGE_SOURCES


def tool_api(tool: Any) -> str | None:
    """The API a package tool calls (chat, completion, embedding), or None for any other tool."""
    return _APIS.get(tool) if isinstance(tool, str) else None


def unsupported_reason(tool: Any) -> str:
    return (f"package tool {tool!r} is not supported; the model-calling promptflow-tools are "
            "(the embedding tool, the LLM tools, the vision tools: docs/flows.md)")
