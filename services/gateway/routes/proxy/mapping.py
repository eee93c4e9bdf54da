"""What a proxied call records: the judged question, context and answer, every choice, usage.

The mapping (docs/proxy.md lists it with examples):

- inputs: ``api``, ``model`` (the one sent upstream), ``question`` (chat: the last ``user``
  message's text; responses: ``input`` when it is a string, else the last user item's text;
  completions: ``prompt``, the first one of a list), ``context`` (from where the deployment's
  ``proxy.context`` says), and ``request``: the body with every string longer than
  ``recorded_text_max_chars`` cut (image data URLs included).
- outputs: ``answer`` (chat and completions: the first choice's text; responses: its
  ``output_text``), ``tool_calls`` (name and arguments of each call of the first choice), and,
  when there is more than one choice, ``choices`` (each one's text, tool calls and finish
  reason). An answer that is only tool calls has no ``answer``: text metrics are then not
  applicable. Embeddings record ``embeddings`` (how many vectors) and nothing to judge.

Functions here are pure: the relay (relay.py) feeds them bodies and stream events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.deployments.schema import NO_CONTEXT, SYSTEM_MESSAGE, Proxy
from shared.upstream import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (upstream JSON is read defensively)."""
    return value if isinstance(value, dict) else {}


def as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _parts_text(content: Any, kinds: tuple[str, ...]) -> str | None:
    """A message content's text: a string, or the text of its text parts joined by lines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content
                 if isinstance(p, dict) and p.get("type") in kinds and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


_INPUT_KINDS = ("text", "input_text", "output_text")


def _messages(api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    if api == CHAT:
        messages = body.get("messages")
    elif api == RESPONSES:
        messages = body.get("input")
    else:
        return []
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict) and m.get("type", "message") == "message"]


def question_of(api: str, body: dict[str, Any]) -> str | None:
    if api == RESPONSES and isinstance(body.get("input"), str):
        return str(body["input"])
    if api == COMPLETIONS:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            return prompt[0]
        return prompt if isinstance(prompt, str) else None
    for message in reversed(_messages(api, body)):
        if message.get("role") == "user":
            return _parts_text(message.get("content"), _INPUT_KINDS)
    return None


def context_of(api: str, body: dict[str, Any], proxy: Proxy) -> str | None:
    if proxy.context == NO_CONTEXT or api == EMBEDDINGS:
        return None
    path = proxy.context_path()
    if path is not None:
        value: Any = body
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, ensure_ascii=False)
    assert proxy.context == SYSTEM_MESSAGE
    texts = [body["instructions"]] if api == RESPONSES and isinstance(body.get("instructions"), str) else []
    for message in _messages(api, body):
        if message.get("role") in ("system", "developer"):
            text = _parts_text(message.get("content"), _INPUT_KINDS)
            if text:
                texts.append(text)
    return "\n\n".join(texts) if texts else None


def bounded(value: Any, max_chars: int) -> Any:
    """``value`` with every string longer than ``max_chars`` cut, saying how much was left out."""
    if isinstance(value, str):
        if len(value) <= max_chars:
            return value
        return f"{value[:max_chars]}…[{len(value) - max_chars} more characters not recorded]"
    if isinstance(value, dict):
        return {k: bounded(v, max_chars) for k, v in value.items()}
    if isinstance(value, list):
        return [bounded(v, max_chars) for v in value]
    return value


# json.dumps with any non-default option builds an encoder per call; one made once measures every
# request's recorded body (the same text: ensure_ascii off, default separators).
_MEASURE = json.JSONEncoder(ensure_ascii=False)


def recorded_inputs(api: str, model: str, body: dict[str, Any], proxy: Proxy, max_bytes: int) -> dict[str, Any]:
    """The request event's inputs; ``request`` is left out when, cut, it still exceeds ``max_bytes``."""
    limit = proxy.recorded_text_max_chars
    inputs: dict[str, Any] = {"api": api, "model": model}
    for name, text in (("question", question_of(api, body)), ("context", context_of(api, body, proxy))):
        if text is not None:
            inputs[name] = bounded(text, limit)
    request = bounded(body, limit)
    if len(_MEASURE.encode(request)) <= max_bytes:
        inputs["request"] = request
    else:
        inputs["request_not_recorded"] = f"the request body is larger than {max_bytes} bytes even with texts cut"
    return inputs


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def usage_of(api: str, usage: Any) -> Usage | None:
    """The upstream's ``usage`` (Responses: input/output tokens) in one shape; None when absent."""
    if not isinstance(usage, dict):
        return None

    def count(*names: str) -> int:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    prompt = count("input_tokens", "prompt_tokens")
    completion = count("output_tokens", "completion_tokens")
    total = count("total_tokens") or prompt + completion
    return Usage(prompt, completion, total)


@dataclass
class Choice:
    """One choice as recorded: its text, its tool calls, why it ended."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None

    def recorded(self, index: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index}
        if self.text is not None:
            entry["text"] = self.text
        if self.tool_calls:
            entry["tool_calls"] = self.tool_calls
        if self.finish_reason is not None:
            entry["finish_reason"] = self.finish_reason
        return entry


def _tool_call(name: Any, arguments: Any) -> dict[str, Any]:
    return {"name": name if isinstance(name, str) else "", "arguments": arguments if isinstance(arguments, str) else ""}


def chat_choices(answer: dict[str, Any], api: str) -> list[Choice]:
    """Chat or completions choices of a whole answer, by index."""
    found: dict[int, Choice] = {}
    for raw in answer.get("choices") or []:
        if not isinstance(raw, dict):
            continue
        index = as_int(raw.get("index"), len(found))
        choice = Choice(finish_reason=raw.get("finish_reason") if isinstance(raw.get("finish_reason"), str) else None)
        if api == COMPLETIONS:
            choice.text = raw.get("text") if isinstance(raw.get("text"), str) else None
        else:
            message = as_dict(raw.get("message"))
            choice.text = _parts_text(message.get("content"), ("text",))
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    choice.tool_calls.append(_tool_call(function.get("name"), function.get("arguments")))
        found[index] = choice
    return [found[i] for i in sorted(found)]


def response_choice(response: dict[str, Any]) -> Choice:
    """A Responses API response as one choice: its output_text and function calls."""
    texts: list[str] = []
    choice = Choice(finish_reason=response.get("status") if isinstance(response.get("status"), str) else None)
    for item in response.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text = _parts_text(item.get("content"), ("output_text",))
            if text is not None:
                texts.append(text)
        elif item.get("type") == "function_call":
            choice.tool_calls.append(_tool_call(item.get("name"), item.get("arguments")))
    choice.text = "".join(texts) if texts else None
    return choice


def recorded_outputs(api: str, choices: list[Choice], max_chars: int, embeddings: int | None = None) -> dict[str, Any]:
    """The response event's outputs (module docstring); the first choice is the judged one."""
    if api == EMBEDDINGS:
        return {"embeddings": embeddings or 0}
    outputs: dict[str, Any] = {}
    if not choices:
        return outputs
    first = choices[0]
    if first.text:  # an empty or absent text (tool calls only) leaves nothing to judge
        outputs["answer"] = bounded(first.text, max_chars)
    if first.tool_calls:
        outputs["tool_calls"] = bounded(first.tool_calls, max_chars)
    if len(choices) > 1:
        outputs["choices"] = [bounded(c.recorded(i), max_chars) for i, c in enumerate(choices)]
    return outputs


@dataclass
class Reading:
    """What one whole (non-streamed) answer says: outputs' sources, usage, model."""

    choices: list[Choice]
    usage: Usage | None
    model: str | None
    embeddings: int | None = None


def read_answer(api: str, answer: Any) -> Reading:
    if not isinstance(answer, dict):
        return Reading([], None, None)
    model = answer.get("model") if isinstance(answer.get("model"), str) else None
    usage = usage_of(api, answer.get("usage"))
    if api == EMBEDDINGS:
        data = answer.get("data")
        return Reading([], usage, model, len(data) if isinstance(data, list) else 0)
    if api == RESPONSES:
        return Reading([response_choice(answer)], usage, model)
    return Reading(chat_choices(answer, api), usage, model)
