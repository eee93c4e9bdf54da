"""Jinja2 templates the way prompt flow renders them, and its chat format.

A chat template is plain text with role lines (``system:``, ``user:``, ``assistant:``, also
``# system:`` in Markdown style) that start each message; it becomes the ``messages`` list of a
chat completion. As in prompt flow, lists render one item a line, and role lines that arrive
inside *values* (a user typing "system:" on its own line) are escaped before rendering, so
input can never start a message of its own. We escape strings at any depth (chat history
included), where prompt flow escapes only top-level strings and lists of strings.

Images make a message's content a list of text and ``image_url`` parts, as prompt flow's vision
tools send them: ``![image](url)`` in the rendered text, where an image value renders as its URL
(``![image]({{image}})``) and an image inside a list (prompt flow's chat-with-image question,
``["What is this?", {"data:image/png;url": ...}]``) as the whole markdown.

A prompt node's output is a :class:`PromptResult`: the text, plus the escaped text it was
rendered from, so that an LLM node that embeds it keeps the prompt template's own role lines
and still ignores the ones that came from input.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from shared.flow import images

ROLES = ("system", "user", "assistant", "function")
# In values, a role line at the very end counts too: the template may put the newline after it.
_ROLE_LINE = re.compile(
    r"^(\s*#?\s*)(" + "|".join(ROLES) + r")(\s*:[^\S\n]*(?:\n|$))", re.IGNORECASE | re.MULTILINE
)
# prompt flow's separator: a role line (optionally "# role:") ending in a newline.
_SEPARATOR = re.compile(r"^\s*#?\s*(" + "|".join(ROLES) + r")\s*:\s*\n", re.IGNORECASE | re.MULTILINE)
_NAME_AND_CONTENT = re.compile(r"\n*#{0,2}\s*name:\n+\s*(\S+)\s*\n*#{0,2}\s*content:\n?(.*)", re.DOTALL)

# trim_blocks and keep_trailing_newline as prompt flow sets them; the sandbox because a template
# is data, and data should not reach Python internals.
_ENVIRONMENT = SandboxedEnvironment(trim_blocks=True, keep_trailing_newline=True, autoescape=False)


class ChatTemplateError(ValueError):
    """A rendered chat prompt that is not a list of role-led messages."""


def compile_template(source: str) -> Any:
    """A compiled template; raises jinja2.TemplateSyntaxError."""
    return _ENVIRONMENT.from_string(source)


def template_variables(source: str) -> set[str]:
    """The variables a template reads from its caller; raises jinja2.TemplateSyntaxError."""
    return set(meta.find_undeclared_variables(_ENVIRONMENT.parse(source)))


class ChatInputList(list):
    """A list that renders one item a line, as prompt flow renders lists in templates."""

    def __str__(self) -> str:
        return "\n".join(map(str, self))


class PromptResult(str):
    """A prompt node's rendered text, remembering which role words in it came from input."""

    escaped: str
    placeholders: dict[str, str]

    def __new__(cls, text: str, escaped: str, placeholders: Mapping[str, str]) -> PromptResult:
        result = super().__new__(cls, text)
        result.escaped = escaped
        result.placeholders = dict(placeholders)
        return result


class _Escaper:
    """Replaces role words on role lines inside values with placeholders, and back."""

    def __init__(self) -> None:
        self._token = ""  # random, made when first needed: most renders escape nothing
        self.placeholders: dict[str, str] = {}  # placeholder -> original role word

    def _placeholder(self, role_word: str) -> str:
        for placeholder, original in self.placeholders.items():
            if original == role_word:
                return placeholder
        if not self._token:
            self._token = uuid.uuid4().hex
        placeholder = f"ESCAPED_ROLE_{self._token}_{len(self.placeholders)}"
        self.placeholders[placeholder] = role_word
        return placeholder

    def escape(self, value: Any) -> Any:
        if isinstance(value, str):
            if type(value) is PromptResult:
                # Its own role lines are the prompt author's; only what came from input is escaped.
                self.placeholders.update(value.placeholders)
                return value.escaped
            if ":" not in value:  # no role line without a colon; skips the regex for most values
                return value
            return _ROLE_LINE.sub(lambda m: m.group(1) + self._placeholder(m.group(2)) + m.group(3), value)
        if isinstance(value, list | tuple):
            items = (self.escape(item) for item in value)
            return ChatInputList([i.markdown() if isinstance(i, images.Image) else i for i in items])
        if images.is_image_object(value):  # prompt flow's {"data:image/png;url": ...} is an image
            try:
                return images.from_value(value)
            except ValueError:
                return value
        if isinstance(value, dict | Mapping):
            return {key: self.escape(item) for key, item in value.items()}
        return value

    def unescape(self, text: str) -> str:
        for placeholder, original in self.placeholders.items():
            text = text.replace(placeholder, original)
        return text


def render_prompt(template: Any, variables: Mapping[str, Any]) -> PromptResult:
    """A prompt node: the rendered text (raises jinja2.TemplateError)."""
    escaper = _Escaper()
    escaped = template.render(**{k: escaper.escape(v) for k, v in variables.items()})
    text = escaper.unescape(escaped) if escaper.placeholders else escaped
    return PromptResult(text, escaped, escaper.placeholders)


def render_chat(template: Any, variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An LLM node: the chat messages (raises jinja2.TemplateError or ChatTemplateError)."""
    escaper = _Escaper()
    rendered = template.render(**{k: escaper.escape(v) for k, v in variables.items()})
    messages = parse_chat(rendered)
    if escaper.placeholders:
        for message in messages:
            for key, value in message.items():
                if isinstance(value, str):
                    message[key] = escaper.unescape(value)
                elif isinstance(value, list):
                    for part in value:
                        if part.get("type") == "text":
                            part["text"] = escaper.unescape(part["text"])
    return messages


def parse_chat(text: str) -> list[dict[str, Any]]:
    """Split rendered text at role lines into messages (prompt flow's ``parse_chat``)."""
    chunks = _SEPARATOR.split(text)
    preamble, pairs = chunks[0], chunks[1:]
    if preamble.strip():
        first = preamble.strip().splitlines()[0][:60]
        raise ChatTemplateError(
            f"the chat prompt must start with a role line (system:, user:, assistant: or function:, "
            f"alone on a line), but starts with {first!r}"
        )
    messages: list[dict[str, Any]] = []
    for index in range(0, len(pairs), 2):
        role = pairs[index].lower()
        body = pairs[index + 1]
        message: dict[str, Any] = {"role": role}
        named = _NAME_AND_CONTENT.search(body)
        if named is not None:
            message["name"] = named.group(1)
            body = named.group(2)
        elif role == "function":
            raise ChatTemplateError("a function message needs 'name:' and 'content:' lines")
        # Image markdown (![image](url), as Image values render) becomes image_url parts.
        message["content"] = images.content_parts(body.strip())
        messages.append(message)
    if not messages:
        raise ChatTemplateError("the chat prompt has no role lines (system:, user:, assistant:)")
    return messages


__all__ = [
    "ChatInputList",
    "ChatTemplateError",
    "PromptResult",
    "TemplateError",
    "compile_template",
    "parse_chat",
    "render_chat",
    "render_prompt",
]
