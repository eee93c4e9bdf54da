"""Which attributes of a span say what about an LLM call, in every naming still in use.

Read in this order, the first one present winning (docs/otlp.md lists them):

- operation: ``gen_ai.operation.name``; OpenInference's ``openinference.span.kind`` (LLM ->
  chat, AGENT -> invoke_agent, EMBEDDING -> embeddings); a span with only the older
  ``gen_ai.system`` is a chat (or a text completion when ``llm.request.type`` says so);
- model: ``gen_ai.response.model``, ``gen_ai.request.model``, ``llm.model_name``;
- usage: ``gen_ai.usage.input_tokens`` / ``output_tokens``, the older ``prompt_tokens`` /
  ``completion_tokens``, OpenInference's ``llm.token_count.prompt`` / ``completion``;
- messages in: ``gen_ai.system_instructions`` + ``gen_ai.input.messages`` (JSON, the current
  convention); the per-message span events ``gen_ai.{system,user,assistant,tool}.message``;
  the ``gen_ai.content.prompt`` event's ``gen_ai.prompt``; flattened ``gen_ai.prompt.N.role`` /
  ``.content``; OpenInference's ``llm.input_messages.N.message.role`` / ``.content``, then
  ``input.value``;
- messages out: ``gen_ai.output.messages``; the ``gen_ai.choice`` event; the
  ``gen_ai.content.completion`` event's ``gen_ai.completion``; flattened
  ``gen_ai.completion.N.*``; ``llm.output_messages.N.message.*``, then ``output.value``.

A message is reduced to its role, its text and its tool calls: what judging and the request
view need. Anything else the span holds stays in the stored span.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.otlp_ingest.decode import IngestedSpan

AGENT_OPERATIONS = frozenset({"invoke_agent", "invoke_workflow"})
CALL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
REQUEST_OPERATIONS = AGENT_OPERATIONS | CALL_OPERATIONS

_OPENINFERENCE_KINDS = {"LLM": "chat", "AGENT": "invoke_agent", "EMBEDDING": "embeddings"}
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


@dataclass(frozen=True)
class Message:
    role: str
    text: str
    tool_calls: tuple[dict[str, Any], ...] = field(default=())


def operation(span: IngestedSpan) -> str | None:
    """The GenAI operation a span records, or None for a span that is not an LLM operation."""
    attrs = span.attributes
    name = attrs.get("gen_ai.operation.name")
    if isinstance(name, str) and name:
        return name
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.upper() in _OPENINFERENCE_KINDS:
        return _OPENINFERENCE_KINDS[kind.upper()]
    if "gen_ai.system" in attrs:
        return "text_completion" if attrs.get("llm.request.type") == "completion" else "chat"
    return None


def model(span: IngestedSpan) -> str:
    for key in ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name"):
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _count(attrs: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and 0 <= value:
            return value
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def usage(span: IngestedSpan) -> tuple[int, int] | None:
    """(input tokens, output tokens) the span reports, or None when it reports none."""
    attrs = span.attributes
    prompt = _count(
        attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    completion = _count(
        attrs,
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    )
    if prompt is None and completion is None:
        return None
    return prompt or 0, completion or 0


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _text_of_parts(parts: Any) -> tuple[str, tuple[dict[str, Any], ...]]:
    """Text and tool calls of a current-convention message's ``parts`` (or a plain content)."""
    if isinstance(parts, str):
        return parts, ()
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" or (kind is None and isinstance(part.get("content"), str)):
            content = part.get("content", part.get("text"))
            if isinstance(content, str):
                texts.append(content)
        elif kind == "tool_call":
            calls.append(
                {"id": part.get("id"), "name": part.get("name"), "arguments": part.get("arguments")}
            )
    return "".join(texts), tuple(calls)


def _from_current(items: Any, default_role: str) -> list[Message]:
    messages: list[Message] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        role = str(item.get("role") or default_role)
        if "parts" in item:
            text, calls = _text_of_parts(item["parts"])
        else:
            text, calls = _text_of_parts(item.get("content", ""))
            calls = calls or _tool_calls(item.get("tool_calls"))
        messages.append(Message(role, text, calls))
    return messages


def _tool_calls(value: Any) -> tuple[dict[str, Any], ...]:
    value = _json(value)
    calls: list[dict[str, Any]] = []
    for call in value if isinstance(value, list) else []:
        if not isinstance(call, dict):
            continue
        nested = call.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else call
        calls.append(
            {
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return tuple(calls)


_FLAT = re.compile(r"^(?P<prefix>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _flattened(
    attrs: Mapping[str, Any], prefix: str, role_key: str, content_key: str
) -> list[Message]:
    """Messages spread over ``prefix.N.role`` / ``prefix.N.content`` attributes, by N."""
    rows: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix + "."):
            continue
        match = _FLAT.match(key)
        if match is None or match["prefix"] != prefix:
            continue
        rows.setdefault(int(match["index"]), {})[match["rest"]] = value
    messages = []
    for index in sorted(rows):
        row = rows[index]
        content = row.get(content_key, "")
        calls = tuple(
            {"name": row[key], "arguments": row.get(key.replace(".name", ".arguments"))}
            for key in sorted(row)
            if key.startswith("tool_calls.") and key.endswith(".name")
        )
        messages.append(
            Message(
                str(row.get(role_key) or ""), content if isinstance(content, str) else "", calls
            )
        )
    return messages


def _older_messages(
    span: IngestedSpan, event_name: str, key: str, role: str, openinference: str
) -> list[Message]:
    """One side of a conversation in the older namings: the ``event_name`` span event's ``key``
    (a JSON list of messages, or one text), else flattened ``key.N.*``, else OpenInference's
    flattened ``openinference.N.message.*``."""
    for event in span.events:
        if event.name == event_name and key in event.attributes:
            value = _json(event.attributes[key])
            return _from_current(value, role) if isinstance(value, list) else [Message(role, str(value))]
    return _flattened(span.attributes, key, "role", "content") or _flattened(
        span.attributes, openinference, "message.role", "message.content"
    )


def input_messages(span: IngestedSpan) -> list[Message]:
    attrs = span.attributes
    if "gen_ai.input.messages" in attrs:
        system = _from_current(_json(attrs.get("gen_ai.system_instructions")) or [], "system")
        if not system and attrs.get("gen_ai.system_instructions") is not None:
            text, _ = _text_of_parts(_json(attrs["gen_ai.system_instructions"]))
            system = [Message("system", text)] if text else []
        return [Message("system", m.text) for m in system] + _from_current(
            _json(attrs["gen_ai.input.messages"]), "user"
        )
    per_message = [
        Message(
            _MESSAGE_EVENTS[event.name],
            str(_json(event.attributes.get("content")) or ""),
            _tool_calls(event.attributes.get("tool_calls")),
        )
        for event in span.events
        if event.name in _MESSAGE_EVENTS
    ]
    if per_message:
        return per_message
    older = _older_messages(span, "gen_ai.content.prompt", "gen_ai.prompt", "user", "llm.input_messages")
    if older:
        return older
    value = attrs.get("input.value")
    if isinstance(value, str) and value:
        parsed = _json(value)
        if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
            return _from_current(parsed["messages"], "user")
        return [Message("user", value)]
    return []


def output_messages(span: IngestedSpan) -> list[Message]:
    attrs = span.attributes
    if "gen_ai.output.messages" in attrs:
        return _from_current(_json(attrs["gen_ai.output.messages"]), "assistant")
    choices = []
    for event in span.events:
        if event.name == "gen_ai.choice":
            message = _json(event.attributes.get("message"))
            if isinstance(message, dict):
                text, _ = _text_of_parts(message.get("content") or "")
                choices.append(Message("assistant", text, _tool_calls(message.get("tool_calls"))))
            else:
                content = event.attributes.get("content")
                choices.append(Message("assistant", content if isinstance(content, str) else ""))
    if choices:
        return choices
    older = _older_messages(
        span, "gen_ai.content.completion", "gen_ai.completion", "assistant", "llm.output_messages"
    )
    if older:
        return older
    value = attrs.get("output.value")
    if isinstance(value, str) and value:
        return [Message("assistant", value)]
    return []


def last_text(messages: Sequence[Message], role: str) -> str:
    for message in reversed(messages):
        if message.role == role and message.text:
            return message.text
    return ""
